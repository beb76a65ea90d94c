"""``snapcat predict``: batch prediction over a folder and a manifest, resumable, equal to the
online endpoint's answers for the same photos (the real local stack: predictor + transformer)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from _batch_fixtures import export_tiny_model, photo_folder

from snapcat.batch.results import read_lines, resume
from snapcat.cli import main
from snapcat.contract.model_info import load_model_info

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    # the fixture photos' top-3 masses lie between 0.89 and 0.99: 0.97 leaves some on each side
    root = tmp_path_factory.mktemp("model") / "listing-category"
    return export_tiny_model(root, confidence_threshold=0.97)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    photo_folder(root)
    return root


def predict(model_dir, input_uri, output, *extra) -> int:
    return main(
        [
            "predict",
            "--model",
            str(model_dir),
            "--input",
            str(input_uri),
            "--output",
            str(output),
            "--no-progress",
            "--batch-size",
            "4",
            *extra,
        ]
    )


def test_folder_lines_errors_and_disagreement(model_dir, photos, tmp_path):
    out = tmp_path / "results.jsonl"
    assert predict(model_dir, photos, out) == 0
    lines = {line["id"]: line for line in read_lines(out)}
    version = str(load_model_info(str(model_dir)).version)
    files = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.jpg"))
    assert sorted(lines) == files
    broken = lines.pop("broken.jpg")  # the corrupt photo has a line, the run went on
    assert broken["error"] and broken["detail"] and "categories" not in broken
    for photo_id, line in lines.items():
        top = line["categories"]
        assert len(top) == 3 and [c["score"] for c in top] == sorted(
            (c["score"] for c in top), reverse=True
        )
        assert line["model_version"] == version and isinstance(line["confident"], bool)
        assert line["category"] == photo_id.split("/")[0]  # the folder is the given category
        assert line["disagrees"] == (top[0]["slug"] != line["category"])
        assert abs(sum(line["scores"].values()) - 1) < 1e-3
    # a spread head: the photos do not all get the same answer
    assert len({tuple(c["slug"] for c in line["categories"]) for line in lines.values()}) > 1


def test_rerun_skips_done_ids_and_tolerates_a_partial_last_line(model_dir, photos, tmp_path):
    out = tmp_path / "results.jsonl"
    assert predict(model_dir, photos, out) == 0
    full = out.read_bytes()
    complete = full.splitlines(keepends=True)
    # a run killed mid-write: three complete lines and half of the fourth
    out.write_bytes(b"".join(complete[:3]) + complete[3][: len(complete[3]) // 2])
    assert resume(out) == {json.loads(line)["id"] for line in complete[:3]}
    assert out.read_bytes() == b"".join(complete[:3])  # the partial line is cut off
    assert predict(model_dir, photos, out) == 0
    ids = [line["id"] for line in read_lines(out)]
    assert len(ids) == len(set(ids)) == len(complete)  # each photo once
    assert sorted(out.read_bytes().splitlines()) == sorted(full.splitlines())
    before = out.read_bytes()
    assert predict(model_dir, photos, out) == 0  # nothing left to do
    assert out.read_bytes() == before


def test_manifest_input_with_ids_and_categories(model_dir, photos, tmp_path):
    manifest = tmp_path / "listings.csv"
    paths = sorted(photos.rglob("*.jpg"))[:4]
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "category"])
        for i, path in enumerate(paths):
            writer.writerow([f"listing-{i}", str(path), "living-food" if i % 2 else ""])
    out = tmp_path / "results.jsonl"
    assert predict(model_dir, manifest, out, "--allow-root", str(photos)) == 0
    lines = list(read_lines(out))
    assert [line["id"] for line in lines] == [f"listing-{i}" for i in range(4)]
    assert not any("error" in line for line in lines)
    assert ["category" in line for line in lines] == [False, True, False, True]
    assert all("disagrees" in line for line in lines if "category" in line)


def test_answers_equal_the_online_endpoints(model_dir, photos, tmp_path):
    """The same photos through `snapcat predict` and through the real transformer in front of
    the local predictor (TF Serving's REST API): same categories in the same order, same scores
    (as served: 4 decimals, within a float32 batch-composition wobble), same confident, same
    model version."""
    from snapcat.local.stack import LocalStack
    from snapcat.serve.client import SnapcatClient

    out = tmp_path / "results.jsonl"
    assert predict(model_dir, photos, out) == 0
    batch = {line["id"]: line for line in read_lines(out) if "error" not in line}
    ids = sorted(batch)
    with (
        LocalStack(str(model_dir), log_dir=tmp_path / "logs") as stack,
        SnapcatClient(stack.url, stack.model_name, max_batch=8) as client,
    ):
        answers = list(client.predict_raw_batches([photos / i for i in ids]))
    online = [(p, a["model_version"]) for a in answers for p in a["predictions"]]
    assert len(online) == len(ids)
    for photo_id, (prediction, version) in zip(ids, online, strict=True):
        line = batch[photo_id]
        assert [c["slug"] for c in prediction["categories"]] == [
            c["slug"] for c in line["categories"]
        ], photo_id
        assert [c["label"] for c in prediction["categories"]] == [
            c["label"] for c in line["categories"]
        ]
        for served, batched in zip(prediction["categories"], line["categories"], strict=True):
            assert served["score"] == pytest.approx(batched["score"], abs=2e-4), photo_id
        assert prediction["confident"] == line["confident"], photo_id
        assert version == line["model_version"]
    assert {line["confident"] for line in batch.values()} == {True, False}, (
        "the fixture's threshold should leave some photos confident and some not"
    )


def test_a_manifest_reads_only_inside_its_roots(model_dir, photos, tmp_path):
    """A manifest is data another system wrote: rows outside its folder (``..``, absolute, a
    symlink out), other schemes (``http://`` to a listener here: never contacted, ``file://``,
    ``zip://``), a FIFO and a NUL byte each get an error line with the reason; the good row is
    predicted. Without --allow-root the photos folder itself is outside."""
    import os
    import socket

    listing = tmp_path / "listing"
    listing.mkdir()
    good = sorted(photos.rglob("*.jpg"))[0]
    (listing / "good.jpg").write_bytes(good.read_bytes())
    (listing / "out.jpg").symlink_to(good)
    os.mkfifo(listing / "pipe.jpg")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    rows = {
        "good": "good.jpg",
        "dotdot": f"../{tmp_path.name}/../{good.parent.name}/{good.name}",
        "absolute": str(good),
        "symlink": "out.jpg",
        "http": f"http://127.0.0.1:{listener.getsockname()[1]}/x.jpg",
        "file": f"file://{good}",
        "zip": f"zip://x.jpg::{good}",
        "fifo": "pipe.jpg",
        "nul": "a\x00b.jpg",
    }
    manifest = listing / "listings.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path"])
        writer.writerows(rows.items())
    out = tmp_path / "results.jsonl"
    assert predict(model_dir, manifest, out) == 0
    lines = {line["id"]: line for line in read_lines(out)}
    assert sorted(lines) == sorted(rows)
    assert "error" not in lines.pop("good")
    for photo_id, line in lines.items():
        assert line["error"] in {
            "outside-input",
            "scheme-not-allowed",
            "not-a-regular-file",
            "nul-byte",
        }, (
            photo_id,
            line,
        )
    assert lines["http"]["error"] == "scheme-not-allowed"
    assert lines["fifo"]["error"] == "not-a-regular-file"
    try:
        listener.accept()
        raise AssertionError("predict connected to the manifest's http:// row")
    except BlockingIOError:
        pass
    finally:
        listener.close()
