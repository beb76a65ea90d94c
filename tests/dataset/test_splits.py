"""Content-hash splits: deterministic, stable when data is added, proportional; balanced weights."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import zlib
from collections import Counter

import pytest
from conftest import make_tree, read_csv

from snapcat.dataset.prepare import PrepareConfig, run_prepare
from snapcat.dataset.splits import (
    SPLITS,
    assign_splits,
    balanced_class_weights,
    parse_split,
    split_for,
)


def sha(i: int) -> str:
    return hashlib.sha256(f"photo-{i}".encode()).hexdigest()


def test_split_depends_only_on_hash_and_seed():
    hashes = [sha(i) for i in range(500)]
    first = [split_for(h, 0, 0.2, 0.1) for h in hashes]
    assert first == [split_for(h, 0, 0.2, 0.1) for h in hashes]
    assert first == [split_for(h, 0, 0.2, 0.1) for h in reversed(hashes)][::-1]
    assert set(first) == set(SPLITS)
    other_seed = [split_for(h, 1, 0.2, 0.1) for h in hashes]
    assert other_seed != first
    assert sum(a != b for a, b in zip(first, other_seed, strict=True)) > 100


@pytest.mark.parametrize(("test", "validation"), [(0.2, 0.1), (0.1, 0.25), (0.3, 0.0)])
def test_split_fractions(test, validation):
    n = 20_000
    counts = Counter(split_for(sha(i), 3, test, validation) for i in range(n))
    # validation_fraction is a share of the non-test photos.
    expected = {
        "test": test,
        "validation": (1 - test) * validation,
        "train": (1 - test) * (1 - validation),
    }
    for split, p in expected.items():
        tolerance = 4 * math.sqrt(p * (1 - p) / n) + 1e-9
        assert abs(counts[split] / n - p) <= tolerance, (split, counts)


def test_zero_fractions_put_everything_in_train():
    assert {split_for(sha(i), 0, 0.0, 0.0) for i in range(1000)} == {"train"}


def test_growing_the_test_fraction_keeps_test_photos_in_test():
    """A larger test fraction only adds photos to test: none of the old test photos leaks into
    training, so a model evaluated on the old test set never trained on it later."""
    for i in range(2000):
        if split_for(sha(i), 0, 0.1, 0.1) == "test":
            assert split_for(sha(i), 0, 0.2, 0.1) == "test"


@pytest.mark.parametrize(("test", "validation"), [(1.0, 0.1), (-0.1, 0.1), (0.2, 1.0), (0.2, -1)])
def test_invalid_fractions(test, validation):
    with pytest.raises(ValueError):
        split_for(sha(0), 0, test, validation)


def test_balanced_class_weights():
    weights = balanced_class_weights({"a": 10, "b": 30, "c": 60, "empty": 0})
    # n_samples / (n_classes * n_c) over the classes that have data: 100 / (3 * n_c).
    assert weights == pytest.approx({"a": 100 / 30, "b": 100 / 90, "c": 100 / 180}, abs=1e-6)
    assert balanced_class_weights({"a": 5, "b": 5}) == {"a": 1.0, "b": 1.0}
    assert balanced_class_weights({}) == {}


# ------------------------------------------------------------------------- through prepare
def _prepare(input_dir, output, seed=0):
    return run_prepare(
        PrepareConfig(
            input=str(input_dir),
            output=str(output),
            image_size=72,
            workers=1,
            min_images_per_class=5,
            seed=seed,
            progress=False,
        )
    )


def test_same_input_and_seed_give_byte_identical_outputs(tmp_path):
    make_tree(tmp_path / "in", {"plants": 15, "가구/인테리어": 15, "digital-devices": 10}, "PNG")
    _prepare(tmp_path / "in", tmp_path / "a")
    # The same photos listed in another order (a copy of the tree, created in reverse).
    for source in sorted((tmp_path / "in").rglob("*.png"), reverse=True):
        target = tmp_path / "copy" / source.relative_to(tmp_path / "in")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    _prepare(tmp_path / "copy", tmp_path / "b")
    for name in ("index.csv", "stats.json", "duplicates.csv", "rejected.csv", "summary.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for shard in (tmp_path / "a").glob("*.tfrecord"):
        assert shard.read_bytes() == (tmp_path / "b" / shard.name).read_bytes(), shard.name
    # Another seed gives another assignment of the same photos.
    _prepare(tmp_path / "in", tmp_path / "c", seed=1)
    first = {r["path"]: r["split"] for r in read_csv(tmp_path / "a" / "index.csv")}
    other = {r["path"]: r["split"] for r in read_csv(tmp_path / "c" / "index.csv")}
    assert first.keys() == other.keys() and first != other


def test_adding_photos_never_moves_existing_ones(tmp_path):
    make_tree(tmp_path / "in", {"plants": 15, "digital-devices": 15})
    _prepare(tmp_path / "in", tmp_path / "before")
    make_tree(tmp_path / "in", {"plants": 20, "digital-devices": 10, "beauty": 12}, prefix="more")
    _prepare(tmp_path / "in", tmp_path / "after")
    before = {
        r["path"]: (r["sha256"], r["split"]) for r in read_csv(tmp_path / "before" / "index.csv")
    }
    after = {
        r["path"]: (r["sha256"], r["split"]) for r in read_csv(tmp_path / "after" / "index.csv")
    }
    assert len(before) == 30 and len(after) == 72
    promoted = json.loads((tmp_path / "before" / "stats.json").read_text())[
        "promoted_to_meet_minimums"
    ]
    for path, (digest, split) in before.items():
        category = path.split("/")[0]
        if category not in promoted:  # the hash draw met the minimums: nothing moves
            assert after[path] == (digest, split), path
        elif split == "train":  # a trained-on photo never moves into validation or test
            assert after[path] == (digest, "train"), path
    # only photos moved out of train to meet a minimum can go back, never more of them
    moved = [p for p in before if after[p] != before[p]]
    assert len(moved) <= sum(promoted.values())


def _photos(n: int, slug: str, fixed=None):
    offset = zlib.crc32(f"{slug}{fixed}".encode()) % 10_000 * 1000
    return [(sha(i + offset), slug, fixed) for i in range(n)]


def test_every_category_gets_its_minimum_test_and_validation_photos():
    photos = _photos(11, "sports-leisure") + _photos(200, "plants") + _photos(6, "beauty")
    plan = assign_splits(photos, 0, 0.2, 0.1, min_test=2, min_validation=2)
    counts = Counter((slug, plan.splits[h]) for h, slug, _ in photos)
    for slug in ("sports-leisure", "plants", "beauty"):
        assert counts[(slug, "test")] >= 2 and counts[(slug, "validation")] >= 2, slug
        assert counts[(slug, "train")] >= 1
    # a big category meets the minimums by its hash draw: exactly split_for's assignment
    assert "plants" not in plan.promoted
    assert all(plan.splits[h] == split_for(h, 0, 0.2, 0.1) for h, s, _ in photos if s == "plants")
    assert plan.short == {}


def test_a_category_too_small_for_the_minimums_is_named():
    photos = _photos(3, "beauty") + _photos(50, "plants")
    plan = assign_splits(photos, 0, 0.2, 0.1, min_test=2, min_validation=2)
    assert set(plan.short) == {"beauty"}
    assert "below the minimum of 2 (3 photos in all)" in plan.short["beauty"]
    assert Counter(plan.splits[h] for h, s, _ in photos if s == "beauty")["train"] == 1


def test_fixed_splits_are_kept_and_count_towards_minimums():
    fixed = _photos(3, "beauty", "test")
    photos = fixed + _photos(12, "beauty")
    plan = assign_splits(photos, 0, 0.2, 0.1, min_test=2, min_validation=2)
    assert all(plan.splits[h] == "test" for h, _, _ in fixed)
    # no hash-assigned photo had to be promoted into test: the fixed ones meet the minimum
    hashed_test = [h for h, _, f in photos if f is None and plan.splits[h] == "test"]
    assert all(split_for(h, 0, 0.2, 0.1) == "test" for h in hashed_test)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("TRAIN", "train"), ("Validation", "validation"), ("test", "test"), ("", None),
     ("UNASSIGNED", None), (None, None), (" training ", "train")],
)  # fmt: skip
def test_manifest_split_values(value, expected):
    assert parse_split(value) == expected


def test_unknown_manifest_split_value_is_refused():
    with pytest.raises(ValueError, match="valid"):
        parse_split("holdout")


def test_validation_is_served_from_tests_surplus_when_train_runs_dry():
    """Three photos fixed to test and a hash draw that sends three more of five there: test is
    full, train has two, and validation used to stay at one (flaky in CI: it depended on the
    generated photos' bytes). Now test's hash-assigned surplus tops validation up."""
    free = [sha(i) for i in range(10_000) if split_for(sha(i), 0, 0.2, 0.1) == "test"][:3]
    free += [sha(i) for i in range(10_000) if split_for(sha(i), 0, 0.2, 0.1) == "train"][:2]
    photos = _photos(3, "plants", "test") + [(h, "plants", None) for h in free]
    plan = assign_splits(photos, 0, 0.2, 0.1, min_test=2, min_validation=2)
    counts = Counter(plan.splits[h] for h, _, _ in photos)
    assert counts["validation"] >= 2 and counts["test"] >= 2 and counts["train"] >= 1, counts
    assert all(plan.splits[h] == "test" for h, _, f in photos if f == "test")  # fixed: kept
    assert plan.short == {}
