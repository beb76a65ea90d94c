"""Issue 25, finding 3: ``snapcat feedback collect`` reads a store someone else could write to.
Each case was a finding: a symlink copied a file from elsewhere, a ``sha256`` of ``../..``
reached outside the store, ``/dev/zero`` and a FIFO never finished, a huge file was copied whole,
one bad row or a corrupt database aborted the run, staging was left behind, and a CSV formula
was written as-is."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import make_image_bytes

from snapcat.cli import main
from snapcat.feedback import collect as collect_module
from snapcat.feedback.collect import MAX_PHOTO_BYTES, collect, neutralise
from snapcat.feedback.store import FeedbackStore

pytestmark = pytest.mark.timeout(120)
TOP = ["digital-devices", "home-appliances", "furniture-interior"]


def _store(root: Path, n: int) -> list[Path]:
    """A store with ``n`` labelled photos (prediction ``p<i>``, version ``"7"``); their files."""
    store = FeedbackStore(root)
    try:
        for i in range(n):
            store.add_request(f"e{i}", [make_image_bytes(seed=900 + i)])
            store.add_response(f"e{i}", [(f"p{i}", "7", TOP)])
            store.report(f"p{i}", "digital-devices")
    finally:
        store.close()
    return sorted(p for p in (root / "photos").rglob("*") if p.is_file())


def _rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _staging_left(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(".")]


def test_hostile_files_are_skipped_and_reported(tmp_path):
    photos = _store(tmp_path / "store", 6)
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:$6$secret")
    photos[0].unlink()
    photos[0].symlink_to(secret)  # a symlink out of the store
    photos[1].unlink()
    photos[1].symlink_to("/dev/zero")  # endless
    photos[2].unlink()
    os.mkfifo(photos[2])  # blocks a reader forever
    with open(photos[3], "r+b") as handle:
        handle.truncate(MAX_PHOTO_BYTES + 1)  # sparse: over the cap, no disk used
    photos[4].write_bytes(make_image_bytes(seed=1))  # swapped: bytes no longer match the name
    out = tmp_path / "out"
    summary = collect(str(tmp_path / "store"), str(out))
    rows = _rows(out)
    assert len(rows) == summary.rows == 1  # only the untouched photo
    assert summary.skipped == {"not-a-regular-file": 3, "too-large": 1, "digest-mismatch": 1}
    copied = [p.read_bytes() for p in (out / "photos").iterdir()]
    assert copied == [photos[5].read_bytes()] and b"root:" not in b"".join(copied)
    assert "not-a-regular-file" in summary.text() and not _staging_left(tmp_path)


def test_a_digest_that_is_a_path_does_not_leave_the_store(tmp_path):
    _store(tmp_path / "store", 2)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(make_image_bytes(seed=3))
    db = sqlite3.connect(tmp_path / "store" / "feedback.sqlite3")
    with db:
        db.execute("UPDATE photos SET sha256 = ? WHERE event_id = 'e0'", ("../../outside",))
    db.close()
    summary = collect(str(tmp_path / "store"), str(tmp_path / "out"))
    assert summary.rows == 1 and summary.skipped == {"bad-digest": 1}
    assert outside.read_bytes() not in [p.read_bytes() for p in (tmp_path / "out/photos").iterdir()]


def test_bad_rows_are_skipped_and_formulas_neutralised(tmp_path):
    _store(tmp_path / "store", 3)
    db = sqlite3.connect(tmp_path / "store" / "feedback.sqlite3")
    with db:
        db.execute("UPDATE predictions SET top = '{not json' WHERE prediction_id = 'p0'")
        db.execute("UPDATE predictions SET model_version = '=HYPERLINK(\"http://x\")' "
                   "WHERE prediction_id = 'p1'")  # fmt: skip
        db.execute("UPDATE predictions SET prediction_id = '@SUM(1)' WHERE prediction_id = 'p2'")
        db.execute("UPDATE feedback SET prediction_id = '@SUM(1)' WHERE prediction_id = 'p2'")
    db.close()
    out = tmp_path / "out"
    summary = collect(str(tmp_path / "store"), str(out))
    assert summary.skipped == {"bad-row": 1} and summary.rows == 2
    text = (out / "manifest.csv").read_text()
    assert "'=HYPERLINK" in text and "'@SUM(1)" in text
    assert not any(line.split(",")[-1].startswith(("=", "@")) for line in text.splitlines())
    assert [neutralise(c) for c in ("-1", "+x", "\tx", "ok")] == ["'-1", "'+x", "'\tx", "ok"]
    agreement = json.loads((out / "agreement.json").read_text())
    assert sum(a["answers"] for a in agreement.values()) == 2


def test_a_corrupt_database_is_reported_not_a_traceback(tmp_path, capsys):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "feedback.sqlite3").write_bytes(b"not a database" * 100)
    out = tmp_path / "out"
    assert main(["feedback", "collect", "--store", str(tmp_path / "store"),
                 "--output", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "not a readable feedback database" in err and "Traceback" not in err
    assert not out.exists() and not _staging_left(tmp_path)


def test_staging_is_removed_when_the_run_is_interrupted(tmp_path, monkeypatch):
    _store(tmp_path / "store", 2)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(collect_module, "_copy_photo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect(str(tmp_path / "store"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not _staging_left(tmp_path)
