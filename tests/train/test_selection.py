"""Which epoch a run keeps: validation loss, later on ties; the last epoch on a small split.
And the data-level refusals that come before any training: fewer than two categories."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import make_tree

from snapcat.dataset.prepare import PrepareConfig, PrepareError, run_prepare
from snapcat.train.selection import MIN_SELECTION_PHOTOS, select_epoch, selection_rule
from snapcat.train.trainer import TrainConfig, TrainingError, read_stats

# Issue 22's run: top-3 saturated at 1.0 on 17 photos after the first head epoch, top-1 and the
# loss kept improving; the old monitor (val top-3, earliest on ties) kept epoch 1.
HISTORY = [
    {"epoch": 0, "val_top1": 0.53, "val_top3": 1.0, "val_loss": 1.10},
    {"epoch": 1, "val_top1": 0.65, "val_top3": 1.0, "val_loss": 0.80},
    {"epoch": 2, "val_top1": 0.76, "val_top3": 1.0, "val_loss": 0.61},
    {"epoch": 3, "val_top1": 0.82, "val_top3": 1.0, "val_loss": 0.52},
    {"epoch": 4, "val_top1": 0.82, "val_top3": 1.0, "val_loss": 0.52},  # exact tie: later wins
    {"epoch": 5, "val_top1": 0.80, "val_top3": 1.0, "val_loss": 0.58},
]


def test_selection_on_validation_loss_keeps_the_later_epoch_on_ties():
    rule = selection_rule(120)
    assert rule.selecting and rule.monitor == "val_loss"
    assert select_epoch(HISTORY, rule)["epoch"] == 4
    assert "120 validation photos" in rule.why


def test_small_validation_split_keeps_the_last_epoch_and_says_why():
    rule = selection_rule(17)
    assert not rule.selecting and rule.monitor is None
    assert select_epoch(HISTORY, rule)["epoch"] == 5
    assert f"(17 photos < {MIN_SELECTION_PHOTOS})" in rule.why and "last epoch" in rule.why


def test_no_history_selects_nothing():
    assert select_epoch([], selection_rule(100)) is None


def _prepare(tmp_path, counts, manifest_rows=None, **kwargs):
    make_tree(tmp_path / "in", counts)
    source = str(tmp_path / "in")
    if manifest_rows is not None:
        with open(tmp_path / "in" / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "category", "split"])
            writer.writerows(manifest_rows)
        source = str(tmp_path / "in" / "manifest.csv")
    return run_prepare(
        PrepareConfig(
            input=source,
            output=str(tmp_path / "out"),
            image_size=72,
            workers=1,
            min_images_per_class=3,
            progress=False,
            **kwargs,
        )
    )


def test_prepare_refuses_a_single_category(tmp_path):
    with pytest.raises(PrepareError, match="at least two trainable categories.*1 \\(plants\\)"):
        _prepare(tmp_path, {"plants": 6})


def test_train_refuses_data_with_one_trained_category(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "_SUCCESS").write_text("")
    splits = {"train": {"plants": 8, "beauty": 0}, "validation": {"plants": 2, "beauty": 3}}
    (data / "stats.json").write_text(json.dumps({"splits": splits, "image_size": 224}))
    with pytest.raises(TrainingError, match="1 category \\(plants\\).*at least two"):
        read_stats(TrainConfig(data=str(data), output=str(tmp_path / "m")))


def test_manifest_split_column_fixes_splits_and_stats_count_per_category(tmp_path):
    rows = [(f"plants/img_{i:03d}.jpg", "plants", "TEST" if i < 3 else "") for i in range(8)]
    rows += [(f"beauty/img_{i:03d}.jpg", "beauty", "unassigned") for i in range(8)]
    stats = _prepare(tmp_path, {"plants": 8, "beauty": 8}, rows)
    with open(tmp_path / "out" / "index.csv") as handle:
        split = {r["path"]: r["split"] for r in csv.DictReader(handle)}
    assert all(split[f"plants/img_{i:03d}.jpg"] == "test" for i in range(3))
    assert stats["fixed_splits"] == 3
    for slug in ("plants", "beauty"):  # every category has its minimum of test and validation
        assert stats["splits"]["test"][slug] >= 2 and stats["splits"]["validation"][slug] >= 2
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "at least 2 test and 2 validation photos per category" in summary
    assert "3 photos' splits fixed by the manifest" in summary
