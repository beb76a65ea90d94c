"""``snapcat prepare`` end to end: a messy input in, consistent training data out.

One module-scoped run over a deliberately messy tree backs most assertions; the expected numbers
come from how that tree is built (see ``MESSY``), never from a previous run's output.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_bytes, make_tree, read_csv, write_image
from PIL import Image, ImageDraw

from snapcat import storage
from snapcat.contract.image_spec import ImageSpec
from snapcat.contract.taxonomy import Taxonomy
from snapcat.dataset import prepare, shards
from snapcat.dataset.prepare import PrepareConfig, PrepareError, run_prepare
from snapcat.dataset.sources import SourceError
from snapcat.dataset.splits import SPLITS, split_for
from snapcat.imaging import normalize as imaging

SIZE = 80


def config(input_dir, output, **overrides) -> PrepareConfig:
    options = (
        dict(image_size=SIZE, workers=1, min_images_per_class=5, progress=False, seed=0) | overrides
    )
    return PrepareConfig(input=str(input_dir), output=str(output), **options)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(64)))
        + chunk(b"IEND", b"")
    )


def _marker_photo_rotated() -> bytes:
    """Landscape, red marker in the stored top-left, EXIF orientation 6 (rotate 90 CW)."""
    image = Image.new("RGB", (160, 100), (40, 120, 40))
    ImageDraw.Draw(image).rectangle([0, 0, 39, 24], fill=(230, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


# What the messy tree holds and what must become of each file.
DD = "digital-devices"
FURNITURE = "가구/인테리어"  # nested label: two folder levels
BOOKS = "도서%2F티켓%2F음반"  # escaped label
PLANTS = "Plants"  # slug in another case
GOOD = {DD: 8, FURNITURE: 8, BOOKS: 8, PLANTS: 8}
EXPECTED_ACCEPTED = 8 + 1 + 8 + 8 + 8  # + the rotated photo in digital-devices
EXPECTED_REJECTED = {
    "conflicting-labels": 2,  # shared.jpg in books and plants
    "corrupt": 1,
    "decompression-bomb": 1,
    "empty": 1,
    "no-category-folder": 1,
    "non-trainable-category": 3,
    "too-small": 1,
    "unsupported-format": 2,
}
EXPECTED_DUPLICATES = {
    # exact copy (same bytes)
    f"{DD}/img_000_copy.jpg": f"{DD}/img_000.jpg",
    # same pixels in another format: same canonical image
    f"{FURNITURE}/same_pixels.bmp": f"{FURNITURE}/img_000.png",
}
CLASSES = ["digital-devices", "furniture-interior", "books-tickets-records", "plants"]


def build_messy_tree(root: Path) -> None:
    make_tree(root, {DD: GOOD[DD]}, "JPEG")
    make_tree(root, {FURNITURE: GOOD[FURNITURE]}, "PNG")
    for i, fmt in enumerate(["WEBP", "GIF", "TIFF", "HEIF"] * 2):
        suffix = {"TIFF": "tif", "HEIF": "heic"}.get(fmt, fmt.lower())
        write_image(root / BOOKS / f"img_{i:03d}.{suffix}", fmt)
    make_tree(root, {PLANTS: GOOD[PLANTS]}, "JPEG")
    dd, furniture = root / DD, root.joinpath(*FURNITURE.split("/"))
    (dd / "rotated.jpg").write_bytes(_marker_photo_rotated())
    shutil.copyfile(dd / "img_000.jpg", dd / "img_000_copy.jpg")
    truncated = make_image_bytes("JPEG", size=(200, 150), seed=99)
    (dd / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (dd / "empty.jpg").write_bytes(b"")
    (dd / "notes.txt").write_text("asking 30,000 won, pick-up only\n", "utf-8")
    write_image(dd / "tiny.png", "PNG", size=(10, 10))
    (dd / "huge.png").write_bytes(_bomb_png())
    with Image.open(furniture / "img_000.png") as image:
        image.save(furniture / "same_pixels.bmp", "BMP")
    shared = make_image_bytes("JPEG", seed=12345)
    (root / BOOKS / "shared.jpg").write_bytes(shared)
    (root / PLANTS / "shared.jpg").write_bytes(shared)
    (root / PLANTS / "drawing.eps").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n" + b"0 0 moveto\n" * 20
    )
    make_tree(root, {"삽니다": 2, "other": 1}, "JPEG")
    (root / "README.txt").write_text("photos for the spring catalogue\n", "utf-8")


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    base = tmp_path_factory.mktemp("messy")
    build_messy_tree(base / "input")
    output = base / "prepared"
    stats = run_prepare(config(base / "input", output))
    return {"input": base / "input", "output": output, "stats": stats, "base": base}


# ------------------------------------------------------------------------- accounting
def test_every_input_file_is_accounted_for(messy):
    stats = messy["stats"]
    n_files = len(files_under(messy["input"]))
    assert stats["input_files"] == n_files
    assert stats["accepted"] + stats["rejected"] + stats["duplicates"] == n_files
    assert stats["accepted"] == EXPECTED_ACCEPTED
    assert stats["rejected_by_reason"] == EXPECTED_REJECTED
    assert stats["duplicates"] == len(EXPECTED_DUPLICATES)
    # Each file appears in exactly one of the three reports.
    out = messy["output"]
    listed = (
        [r["path"] for r in read_csv(out / "index.csv")]
        + [r["path"] for r in read_csv(out / "rejected.csv")]
        + [r["path"] for r in read_csv(out / "duplicates.csv")]
    )
    on_disk = [p.relative_to(messy["input"]).as_posix() for p in files_under(messy["input"])]
    assert sorted(listed) == sorted(on_disk)


def test_rejections_name_the_file_and_reason(messy):
    rows = {r["path"]: r for r in read_csv(messy["output"] / "rejected.csv")}
    expected = {
        f"{DD}/truncated.jpg": "corrupt",
        f"{DD}/empty.jpg": "empty",
        f"{DD}/notes.txt": "unsupported-format",
        f"{DD}/tiny.png": "too-small",
        f"{DD}/huge.png": "decompression-bomb",
        f"{PLANTS}/drawing.eps": "unsupported-format",
        f"{BOOKS}/shared.jpg": "conflicting-labels",
        f"{PLANTS}/shared.jpg": "conflicting-labels",
        "삽니다/img_000.jpg": "non-trainable-category",
        "삽니다/img_001.jpg": "non-trainable-category",
        "other/img_000.jpg": "non-trainable-category",
        "README.txt": "no-category-folder",
    }
    assert {path: row["reason"] for path, row in rows.items()} == expected
    assert "10x10" in rows[f"{DD}/tiny.png"]["detail"]  # image errors keep their message
    assert rows[f"{DD}/huge.png"]["detail"]


def test_duplicates_kept_once(messy):
    out = messy["output"]
    duplicates = {r["path"]: r["kept_path"] for r in read_csv(out / "duplicates.csv")}
    assert duplicates == EXPECTED_DUPLICATES
    index = read_csv(out / "index.csv")
    paths = {r["path"] for r in index}
    for copy, kept in duplicates.items():
        assert kept in paths and copy not in paths
    # One row per distinct photo: no sha256 twice, so no photo can sit in two splits.
    assert len({r["sha256"] for r in index}) == len(index)
    assert not {f"{BOOKS}/shared.jpg", f"{PLANTS}/shared.jpg"} & paths


def test_non_trainable_skipped_and_counted(messy):
    stats = messy["stats"]
    assert stats["skipped_non_trainable"] == {"buying": 2, "other": 1}
    assert "buying" not in stats["classes"] and "other" not in stats["classes"]


# ------------------------------------------------------------------------- index and stats
def test_index_matches_files_categories_and_splits(messy):
    stats, out, root = messy["stats"], messy["output"], messy["input"]
    taxonomy = Taxonomy.load()
    index = read_csv(out / "index.csv")
    assert len(index) == stats["accepted"]
    for row in index:
        data = (root / row["path"]).read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        folder = row["path"].rsplit("/", 1)[0].split("/")
        assert row["category"] == taxonomy.resolve_path(folder)[0]
        if row["category"] not in stats["promoted_to_meet_minimums"]:
            assert row["split"] == split_for(row["sha256"], 0, 0.2, 0.1)
        elif row["split"] != split_for(row["sha256"], 0, 0.2, 0.1):  # topped up (issue 22)
            assert split_for(row["sha256"], 0, 0.2, 0.1) == "train"
    counts = Counter((r["split"], r["category"]) for r in index)
    for split in SPLITS:
        assert stats["splits"][split] == {c: counts[(split, c)] for c in stats["classes"]}


def test_classes_in_taxonomy_order(messy):
    stats = messy["stats"]
    assert stats["classes"] == CLASSES
    taxonomy = Taxonomy.load()
    assert stats["absent_categories"] == [s for s in taxonomy.trainable_slugs if s not in CLASSES]
    assert Taxonomy.load(messy["output"] / "taxonomy.yaml") == taxonomy


def test_class_weights_are_balanced_over_the_train_split(messy):
    stats = messy["stats"]
    train = [r for r in read_csv(messy["output"] / "index.csv") if r["split"] == "train"]
    per_class = Counter(r["category"] for r in train)
    n_classes = len(per_class)
    assert set(stats["class_weights"]) == set(per_class)
    for slug, n in per_class.items():
        assert stats["class_weights"][slug] == pytest.approx(len(train) / (n_classes * n), abs=1e-5)
    # Weighted, every class contributes the same total: n_samples / n_classes.
    for slug, n in per_class.items():
        assert stats["class_weights"][slug] * n == pytest.approx(len(train) / n_classes, rel=1e-5)


def test_stats_json_and_reports_written(messy):
    out = messy["output"]
    assert storage.is_complete(str(out))
    assert json.loads((out / "stats.json").read_text("utf-8")) == messy["stats"]
    saved = json.loads((out / "prepare_config.json").read_text())
    assert saved["image_size"] == SIZE and saved["seed"] == 0 and "progress" not in saved
    summary = (out / "summary.md").read_text("utf-8")
    for slug in CLASSES:
        assert f"`{slug}`" in summary
    total = sum(sum(messy["stats"]["splits"][s].values()) for s in SPLITS)
    assert "| **total** |" in summary and f"| {total} |" in summary
    assert "conflicting-labels" in summary
    assert "가구/인테리어" in summary


# ------------------------------------------------------------------------- shards
def test_shards_read_back_with_matching_labels(messy):
    stats, out, root = messy["stats"], messy["output"], messy["input"]
    spec = ImageSpec(size=SIZE)
    index = {r["sha256"]: r for r in read_csv(out / "index.csv")}
    seen = 0
    for split in SPLITS:
        assert stats["shards"][split] == [shards.shard_name(split, 0, 1)]
        records = shards.read_split(str(out), split)
        assert len(records) == sum(stats["splits"][split].values())
        assert [r["sha256"] for r in records] == sorted(r["sha256"] for r in records)
        for record in records:
            row = index[record["sha256"]]
            assert row["split"] == split and row["path"] == record["source"]
            assert record["slug"] == row["category"]
            assert stats["classes"][record["label"]] == record["slug"]
            # The stored bytes are exactly what the shared normalizer makes of the file.
            assert record["image"] == imaging.normalize_image(
                (root / row["path"]).read_bytes(), spec
            )
            seen += 1
    assert seen == stats["accepted"]


def test_rotated_photo_is_stored_upright(messy):
    row = next(
        r for r in read_csv(messy["output"] / "index.csv") if r["path"].endswith("rotated.jpg")
    )
    record = next(
        r
        for r in shards.read_split(str(messy["output"]), row["split"])
        if r["sha256"] == row["sha256"]
    )
    arr = np.asarray(Image.open(io.BytesIO(record["image"])).convert("RGB")).astype(int)
    red = (arr[..., 0] > 170) & (arr[..., 1] < 90)
    ys, xs = np.nonzero(red)
    assert len(ys) > 20
    assert ys.mean() < SIZE / 2 and xs.mean() > SIZE / 2  # turned 90 CW: marker top-right


def test_shards_split_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "SHARD_SIZE", 4)
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    stats = run_prepare(
        config(tmp_path / "in", tmp_path / "out", test_fraction=0, validation_fraction=0)
    )
    assert stats["shards"]["train"] == [shards.shard_name("train", i, 3) for i in range(3)]
    assert len(shards.read_split(str(tmp_path / "out"), "train")) == 12
    assert stats["warnings"] == []  # no fraction asked for, so no "no test photos" warning


# ------------------------------------------------------------------------- process pool
def test_two_workers_give_the_same_result(messy):
    output = messy["base"] / "prepared-2"
    stats = run_prepare(config(messy["input"], output, workers=2))
    assert stats == messy["stats"] | {"shards": stats["shards"]}
    assert stats["shards"] == messy["stats"]["shards"]
    for name in ("index.csv", "rejected.csv", "duplicates.csv", "stats.json"):
        assert (output / name).read_bytes() == (messy["output"] / name).read_bytes(), name
    for split in SPLITS:
        first = shards.read_split(str(messy["output"]), split)
        assert shards.read_split(str(output), split) == first


# ------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_input_relative_absolute_and_missing(tmp_path, kind):
    photos = make_tree(tmp_path / "photos", {"a": 6, "b": 6})
    elsewhere = write_image(tmp_path / "elsewhere" / "far.jpg", "JPEG")
    rows = [(p.relative_to(tmp_path / "photos").as_posix(), "식물") for p in photos["a"]]
    rows += [(str(p), "Digital devices") for p in photos["b"]]  # absolute paths
    rows += [(str(elsewhere), "plants"), ("a/gone.jpg", "plants"), ("b/typo.jpg", "buying")]
    manifest = tmp_path / "photos" / f"labels.{kind}"
    if kind == "csv":
        manifest.write_text("path,category\n" + "".join(f"{p},{c}\n" for p, c in rows), "utf-8")
    else:
        manifest.write_text(
            "".join(
                json.dumps({"path": p, "category": c}, ensure_ascii=False) + "\n" for p, c in rows
            ),
            "utf-8",
        )
    # Issue 25: a photo outside the manifest's folder is read only when a root allows it.
    refused = run_prepare(config(manifest, tmp_path / "refused"))
    assert refused["accepted"] == 12 and refused["rejected_by_reason"]["outside-input"] == 1
    stats = run_prepare(
        config(manifest, tmp_path / "out", allow_roots=(str(tmp_path / "elsewhere"),))
    )
    assert stats["input_files"] == len(rows)
    assert stats["accepted"] == 13
    assert stats["rejected_by_reason"] == {"missing-file": 1, "non-trainable-category": 1}
    assert stats["accepted"] + stats["rejected"] + stats["duplicates"] == len(rows)
    assert sum(stats["splits"][s]["plants"] for s in SPLITS) == 7
    assert sum(stats["splits"][s]["digital-devices"] for s in SPLITS) == 6
    rejected = {r["path"]: r["reason"] for r in read_csv(tmp_path / "out" / "rejected.csv")}
    assert rejected["a/gone.jpg"] == "missing-file"


def test_manifest_given_separately_from_input(tmp_path):
    make_tree(tmp_path / "photos", {"plants": 6, "beauty": 6})
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,category\n"
        + "".join(f"{c}/img_{i:03d}.jpg,{c}\n" for c in ("plants", "beauty") for i in range(6)),
        "utf-8",
    )
    stats = run_prepare(config(tmp_path / "photos", tmp_path / "out", manifest=str(manifest)))
    assert stats["accepted"] == 12 and stats["rejected"] == 0


def test_decomposed_korean_names_end_to_end(tmp_path):
    """Folders and files named in NFD (as macOS writes them) are read, labelled and reported NFC."""
    nfd = functools.partial(unicodedata.normalize, "NFD")
    make_tree(tmp_path / "in", {nfd("가구/인테리어"): 5, nfd("식물"): 5}, prefix=nfd("사진"))
    assert nfd("식물") in os.listdir(tmp_path / "in")
    stats = run_prepare(config(tmp_path / "in", tmp_path / "out"))
    assert stats["accepted"] == 10 and stats["rejected"] == 0
    paths = {r["path"]: r["category"] for r in read_csv(tmp_path / "out" / "index.csv")}
    assert paths["가구/인테리어/사진_000.jpg"] == "furniture-interior"
    assert paths["식물/사진_004.jpg"] == "plants"
    assert all(p == unicodedata.normalize("NFC", p) for p in paths)


# ------------------------------------------------------------------------- input problems
def test_unknown_category_folder_is_an_error(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "toys": 2, "가전": 1})
    with pytest.raises(SourceError) as info:
        run_prepare(config(tmp_path / "in", tmp_path / "out"))
    assert "'toys' (2 files)" in str(info.value) and "'가전' (1 files)" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_ignore_unknown_rejects_those_files(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6, "toys": 2})
    stats = run_prepare(config(tmp_path / "in", tmp_path / "out", ignore_unknown=True))
    assert stats["rejected_by_reason"] == {"unknown-category": 2}
    assert stats["accepted"] == 12 and stats["input_files"] == 14


def test_category_below_minimum_is_named(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "digital-devices": 3, "삽니다": 1})
    with pytest.raises(PrepareError) as info:
        run_prepare(config(tmp_path / "in", tmp_path / "out"))
    message = str(info.value)
    assert "digital-devices (3)" in message and "--min-images-per-class=5" in message
    assert "plants" not in message and "buying" not in message  # non-trainable: no minimum
    stats = run_prepare(config(tmp_path / "in", tmp_path / "out", min_images_per_class=3))
    assert stats["accepted"] == 9


def test_category_below_minimum_after_rejections(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "digital-devices": 4})
    (tmp_path / "in" / "digital-devices" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    shutil.copyfile(
        tmp_path / "in" / "digital-devices" / "img_000.jpg",
        tmp_path / "in" / "digital-devices" / "img_000 (1).jpg",
    )
    with pytest.raises(PrepareError, match=r"after rejecting.*digital-devices \(4\)"):
        run_prepare(config(tmp_path / "in", tmp_path / "out"))


def test_empty_category_folder_is_an_error(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    (tmp_path / "in" / "가구" / "인테리어").mkdir(parents=True)
    with pytest.raises(PrepareError, match=r"furniture-interior \(0\)"):
        run_prepare(config(tmp_path / "in", tmp_path / "out"))


def test_only_non_trainable_photos_is_an_error(tmp_path):
    make_tree(tmp_path / "in", {"buying": 6})
    with pytest.raises(PrepareError, match="no trainable photos"):
        run_prepare(config(tmp_path / "in", tmp_path / "out"))


def test_byte_cap_applies_to_files(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    big = write_image(tmp_path / "in" / "plants" / "big.png", "PNG", size=(400, 300))
    cap = big.stat().st_size - 1
    assert all(p.stat().st_size <= cap for p in (tmp_path / "in" / "plants").glob("*.jpg"))
    stats = run_prepare(config(tmp_path / "in", tmp_path / "out", max_bytes=cap))
    assert stats["rejected_by_reason"] == {"too-large": 1}


# ------------------------------------------------------------------------- publishing
def test_existing_output_refused_without_overwrite(tmp_path, monkeypatch):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    run_prepare(config(tmp_path / "in", tmp_path / "out"))
    before = {p: p.read_bytes() for p in files_under(tmp_path / "out")}

    def must_not_run(*args, **kwargs):
        raise AssertionError("refusal must come before any decoding")

    monkeypatch.setattr(prepare, "_normalize_all", must_not_run)
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_prepare(config(tmp_path / "in", tmp_path / "out"))
    assert {p: p.read_bytes() for p in files_under(tmp_path / "out")} == before


def test_overwrite_replaces_atomically(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    out = tmp_path / "out"
    run_prepare(config(tmp_path / "in", out))
    (out / "stale-file.txt").write_text("from an older run")
    make_tree(tmp_path / "in", {"plants": 4}, prefix="new")
    stats = run_prepare(config(tmp_path / "in", out, overwrite=True))
    assert stats["accepted"] == 16
    assert json.loads((out / "stats.json").read_text())["accepted"] == 16
    assert not (out / "stale-file.txt").exists()  # replaced as a whole, not merged into
    assert storage.is_complete(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging left


def test_empty_existing_output_folder_is_fine(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    (tmp_path / "out").mkdir()
    assert run_prepare(config(tmp_path / "in", tmp_path / "out"))["accepted"] == 12


@pytest.mark.parametrize("where", ["write_split", "summary_markdown"])
def test_failure_midway_keeps_old_output(tmp_path, monkeypatch, where):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    out = tmp_path / "out"
    run_prepare(config(tmp_path / "in", out))
    before = {p: p.read_bytes() for p in files_under(out)}
    make_tree(tmp_path / "in", {"plants": 4}, prefix="new")

    def write_then_fail(records, folder, split, **progress):
        (Path(folder) / f"{split}-00000-of-00001.tfrecord").write_bytes(b"partial")
        raise OSError("disk full")

    def fail(*args, **kwargs):
        raise RuntimeError("crash while writing the summary")

    if where == "write_split":
        monkeypatch.setattr(shards, "write_split", write_then_fail)
    else:
        monkeypatch.setattr(prepare, "summary_markdown", fail)
    with pytest.raises((OSError, RuntimeError)):
        run_prepare(config(tmp_path / "in", out, overwrite=True))
    assert {p: p.read_bytes() for p in files_under(out)} == before  # old output intact
    # Nothing half-written is left beside it, let alone something marked complete.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    assert [p.parent for p in tmp_path.rglob(storage.SUCCESS_MARKER)] == [out]


def test_failure_on_first_run_leaves_nothing(tmp_path, monkeypatch):
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})

    def fail(*args, **kwargs):
        raise RuntimeError("crash")

    monkeypatch.setattr(prepare, "summary_markdown", fail)
    with pytest.raises(RuntimeError):
        run_prepare(config(tmp_path / "in", tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    assert not storage.is_complete(str(tmp_path / "out"))


# ------------------------------------------------------------------------- bundled sample
@pytest.fixture(scope="module")
def sample_prepared(tmp_path_factory, sample_dir):
    output = tmp_path_factory.mktemp("sample") / "prepared"
    stats = run_prepare(config(sample_dir, output, image_size=96, min_images_per_class=10))
    return output, stats


def test_sample_data_prepares_consistently(sample_prepared, sample_dir):
    output, stats = sample_prepared
    photos = [p for p in files_under(sample_dir) if p.parent != sample_dir]
    folders = sorted(p.name for p in sample_dir.iterdir() if p.is_dir())
    taxonomy = Taxonomy.load()
    assert stats["classes"] == taxonomy.class_order(folders)
    assert stats["input_files"] == len(files_under(sample_dir))
    assert stats["accepted"] + stats["rejected"] + stats["duplicates"] == stats["input_files"]
    assert stats["rejected_by_reason"].get("no-category-folder") == 2  # PROVENANCE.md, manifest.csv
    assert stats["accepted"] + stats["duplicates"] + stats["rejected"] - 2 == len(photos)
    assert stats["accepted"] >= 0.95 * len(photos)
    # Overall split fractions: test 0.2, validation 0.1 of the rest (0.08), train 0.72; each
    # within three binomial standard deviations for this many photos.
    n = stats["accepted"]
    expected = {"train": 0.8 * 0.9, "validation": 0.8 * 0.1, "test": 0.2}
    for split, p in expected.items():
        share = sum(stats["splits"][split].values()) / n
        assert abs(share - p) <= 3 * math.sqrt(p * (1 - p) / n), (split, share)
    # Every class has training photos, and the index agrees with the stats.
    index = read_csv(output / "index.csv")
    assert len(index) == n
    counts = Counter((r["split"], r["category"]) for r in index)
    for split in SPLITS:
        for slug in stats["classes"]:
            assert stats["splits"][split][slug] == counts[(split, slug)]
    for slug in stats["classes"]:
        assert stats["splits"]["train"][slug] > 0
        on_disk = len(list((sample_dir / slug).glob("*.jpg")))
        assert sum(stats["splits"][s][slug] for s in SPLITS) <= on_disk


def test_sample_manifest_gives_the_same_dataset(sample_prepared, sample_dir, tmp_path):
    output, stats = sample_prepared
    again = run_prepare(
        config(
            sample_dir / "manifest.csv", tmp_path / "out", image_size=96, min_images_per_class=10
        )
    )
    assert (tmp_path / "out" / "index.csv").read_bytes() == (output / "index.csv").read_bytes()
    assert again["splits"] == stats["splits"]
    assert again["input_files"] == stats["input_files"] - 2  # no root files to reject


# ------------------------------------------------------------------------- command line
def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "snapcat.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_cli_unknown_category_exits_2_with_one_line(tmp_path):
    make_tree(tmp_path / "in", {"plants": 6, "electronics": 2})
    result = _run_cli(
        "prepare",
        "--input",
        "in",
        "--output",
        "out",
        "--workers",
        "1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("snapcat prepare: error: unknown categories")
    assert "'electronics' (2 files)" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_prepare_in_process(tmp_path, capsys):
    from snapcat.cli import main

    make_tree(tmp_path / "in", {"plants": 6, "가구/인테리어": 6})
    code = main(
        [
            "prepare",
            "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"),
            "--image-size", "75",
            "--workers", "1",
            "--min-images-per-class", "6",
            "--seed", "7",
            "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    assert "prepared 12 photos in 2 classes" in capsys.readouterr().out
    stats = json.loads((tmp_path / "out" / "stats.json").read_text("utf-8"))
    assert stats["image_size"] == 75 and stats["seed"] == 7
    record = shards.read_split(str(tmp_path / "out"), "train")[0]
    assert Image.open(io.BytesIO(record["image"])).size == (75, 75)
    # Asked again without --overwrite: a one-line error and exit code 2.
    assert (
        main(["prepare", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 2
    )
    assert "--overwrite" in capsys.readouterr().err


def test_object_store_input_and_output(tmp_path):
    """Bucket URIs go through fsspec: an in-memory filesystem stands in for gs:// or s3://, so
    listing, reading, uploading and the completion marker all take the remote code path."""
    import fsspec

    fs = fsspec.filesystem("memory")
    if fs.exists("/bucket"):
        fs.rm("/bucket", recursive=True)
    for slug in ("plants", "가구%2F인테리어"):
        for i in range(12):
            fs.pipe_file(
                f"/bucket/photos/{slug}/{i}.jpg",
                make_image_bytes("JPEG", seed=i + (100 if slug == "plants" else 200)),
            )
    fs.pipe_file("/bucket/photos/plants/broken.jpg", b"\xff\xd8 not really")
    config = PrepareConfig(
        input="memory://bucket/photos",
        output="memory://bucket/prepared",
        image_size=71,
        workers=1,
        progress=False,
    )
    stats = run_prepare(config)
    assert stats["classes"] == ["furniture-interior", "plants"]
    assert stats["accepted"] == 24 and stats["rejected"] == 1
    assert storage.is_complete("memory://bucket/prepared")
    names = {p.rsplit("/", 1)[-1] for p in fs.ls("/bucket/prepared", detail=False)}
    assert {"stats.json", "index.csv", "rejected.csv", "_SUCCESS"} <= names
    assert any(n.startswith("train-") and n.endswith(".tfrecord") for n in names)
    rejected = fs.cat_file("/bucket/prepared/rejected.csv").decode()
    assert "plants/broken.jpg,corrupt" in rejected
    # a second run into the same URI refuses, and with overwrite replaces it
    with pytest.raises(FileExistsError):
        run_prepare(config)
    run_prepare(dataclasses.replace(config, overwrite=True))
    assert storage.is_complete("memory://bucket/prepared")
    fs.rm("/bucket", recursive=True)


# ------------------------------------------------------------------------- killed runs (finding 7)
def test_killed_prepare_leaves_no_workers(tmp_path):
    """Issue 10, finding 7: ``kill -9`` of ``snapcat prepare`` mid-run left its worker processes
    alive for good."""
    import signal
    import time

    import psutil

    photo = make_image_bytes("PNG", size=(1200, 900), seed=3)  # decoded at full size: slow
    for i in range(400):
        folder = tmp_path / "in" / ("plants" if i % 2 else "home-appliances")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:04d}.png").write_bytes(photo + i.to_bytes(4, "big"))
    command = [sys.executable, "-m", "snapcat.cli", "prepare", "--input", str(tmp_path / "in")]
    command += ["--output", str(tmp_path / "out"), "--workers", "2", "--image-size", "80"]
    process = subprocess.Popen(
        command + ["--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        parent = psutil.Process(process.pid)
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline and process.poll() is None:
            workers = list(parent.children(recursive=True))
            if len(workers) >= 3:  # the forkserver and two workers, mid-run
                break
            time.sleep(0.1)
        assert process.poll() is None and len(workers) >= 3, (
            f"prepare ended early: {process.poll()} {process.stderr.read() if process.poll() is not None else b''}"
        )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived prepare: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_staging_folders_of_killed_runs_are_swept_by_the_next(tmp_path):
    """Issue 10, finding 7: a prepare killed while writing left ``.out.staging-*`` (and a retired
    ``.out.old-*``) behind for good; the next run into the same parent removes them."""
    (tmp_path / ".out.staging-999999999-x1y2").mkdir()  # a pid no process has
    (tmp_path / ".out.old-999999999").mkdir()
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    run_prepare(config(tmp_path / "in", tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_prepared_dataset_folder_is_not_private(tmp_path):
    """Issue 10, finding 7: the dataset folder came out 0700 (mkdtemp's mode)."""
    make_tree(tmp_path / "in", {"plants": 6, "beauty": 6})
    run_prepare(config(tmp_path / "in", tmp_path / "out"))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_running_writers_staging_folder_is_left_alone(tmp_path):
    live = tmp_path / f".out.staging-{os.getpid()}-abc"
    dead = tmp_path / ".out.staging-999999999-abc"
    live.mkdir()
    dead.mkdir()
    assert storage.sweep_stale_staging(tmp_path, ".out.staging-") == [dead]
    assert live.exists() and not dead.exists()


def test_cli_prepare_shows_every_step_of_a_long_run(tmp_path, capsys):
    """Not only the normalizing bar: what was found, and the shards being written (the part
    after the bar that used to be silent)."""
    from snapcat.cli import main

    make_tree(tmp_path / "in", {"plants": 6, "가구/인테리어": 6})
    argv = ["prepare", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main([*argv, "--image-size", "75", "--workers", "1", "--min-images-per-class", "6"]) == 0
    err = capsys.readouterr().err
    assert "found 12 photos in 2 categories" in err
    assert "normalizing" in err and "writing shards" in err and "12/12" in err
