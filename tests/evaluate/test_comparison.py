"""``snapcat compare`` ranks only runs measured on the same test set (issue 23, finding 4: it
ranked n = 96 against n = 38 without a word). Hand-made evaluation folders; the fingerprint itself
is written by ``snapcat evaluate`` (tests/evaluate/test_evaluation.py::test_metrics_json)."""

from __future__ import annotations

import json

import pytest

from snapcat.cli import main
from snapcat.evaluate.comparison import DifferentTestSets, check_same_test_set
from snapcat.evaluate.evaluation import photo_set_fingerprint


def records(*photos: tuple[str, str]) -> list[dict]:
    return [{"sha256": sha, "slug": slug} for sha, slug in photos]


PHOTOS = [(f"{i:064x}", "books" if i % 2 else "toys") for i in range(96)]


def run(tmp_path, name: str, photos, top1: float, **extra) -> str:
    folder = tmp_path / name
    folder.mkdir()
    metrics = {"n": len(photos), "split": "test", "top1": top1, "top3": 0.9, "macro_f1": 0.5,
               "blessed": True, "model": {"backbone": "xception", "mode": "two-phase"},
               "test_set": photo_set_fingerprint(records(*photos), "test"), **extra}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_the_fingerprint_is_the_photos_and_labels_in_any_order():
    one = photo_set_fingerprint(records(*PHOTOS), "test")
    assert one == photo_set_fingerprint(records(*reversed(PHOTOS)), "test")
    assert one["n"] == 96 and len(one["sha256"]) == 64
    relabelled = [(PHOTOS[0][0], "toys" if PHOTOS[0][1] == "books" else "books"), *PHOTOS[1:]]
    assert photo_set_fingerprint(records(*relabelled), "test")["sha256"] != one["sha256"]


def test_runs_on_different_test_sets_are_refused(tmp_path, capsys):
    big = run(tmp_path, "big", PHOTOS, 0.70)
    small = run(tmp_path, "small", PHOTOS[:38], 0.80)
    assert main(["compare", big, small]) == 2
    err = capsys.readouterr().err
    assert "measured on 2 different test sets" in err
    assert "n=96" in err and "n=38" in err and "--allow-different-test-sets" in err


def test_same_size_but_different_photos_is_refused_too(tmp_path, capsys):
    first = run(tmp_path, "first", PHOTOS[:48], 0.70)
    second = run(tmp_path, "second", PHOTOS[48:], 0.80)
    assert main(["compare", first, second]) == 2
    assert "different test sets" in capsys.readouterr().err


def test_different_sets_can_be_listed_with_a_warning(tmp_path, capsys):
    big = run(tmp_path, "big", PHOTOS, 0.70)
    small = run(tmp_path, "small", PHOTOS[:38], 0.80)
    assert main(["compare", big, small, "--allow-different-test-sets"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("WARNING: these runs were measured on 2 different test sets")
    header = captured.out.splitlines()[0].split()
    assert "test_set" in header


def test_runs_on_the_same_photos_are_ranked(tmp_path, capsys):
    a = run(tmp_path, "a", PHOTOS, 0.70)
    b = run(tmp_path, "b", list(reversed(PHOTOS)), 0.80)
    assert main(["compare", a, b]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines()[2].split()[0] == "b"


def test_old_runs_without_a_fingerprint_are_compared_by_size_and_flagged():
    old = {"n": 96, "split": "test", "top1": 0.7, "top3": 0.9}
    assert check_same_test_set([("x", old), ("y", dict(old))])[0].startswith(
        "no test-set fingerprint in x, y"
    )
    with pytest.raises(DifferentTestSets):
        check_same_test_set([("x", old), ("y", {**old, "n": 38})])
