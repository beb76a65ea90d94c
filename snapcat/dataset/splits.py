"""Train/validation/test assignment by content hash.

A photo's split depends only on its bytes and the seed: the same input gives byte-identical
assignments, adding new photos never moves an existing one, and identical copies of a photo can
never straddle two splits. Each category is split by the same fractions independently (the hash
is uniform within every category), which is what stratification asks for, without the list-order
dependence of a shuffled split.

Small categories get a minimum: :func:`assign_splits` tops up a category's test and validation
splits to ``min_test``/``min_validation`` photos with its lowest-hash training photos (the same
order the fractions cut), so no category is left without test or validation photos. A category
whose hash draw already meets the minimums is never touched, so adding photos moves nothing
there; in a topped-up category a new photo can only take the place of the last promoted one.
A split fixed by the user (a manifest's ``split`` column) is kept as given and counts towards
the minimums.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

SPLITS = ("train", "validation", "test")


def split_for(
    content_sha256: str, seed: int, test_fraction: float, validation_fraction: float
) -> str:
    """``test_fraction`` of all photos go to test, then ``validation_fraction`` of the rest."""
    if not 0 <= test_fraction < 1 or not 0 <= validation_fraction < 1:
        raise ValueError("split fractions must be within [0, 1)")
    u = _uniform(content_sha256, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + (1 - test_fraction) * validation_fraction:
        return "validation"
    return "train"


def _uniform(content_sha256: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{content_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


#: Manifest ``split`` values (case-insensitive), AutoML ML_USE style; empty/unassigned: the hash.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "validate": "validation",
    "test": "test",
    "testing": "test",
    "": None,
    "unassigned": None,
}


def parse_split(value: object) -> str | None:
    """A manifest's split value as a split name, or None (let the hash decide).

    Raises ``ValueError`` for anything else, so a typo never silently lands a photo in train."""
    key = str(value if value is not None else "").strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(
            f"split {value!r} is not one of train, validation, test or unassigned (empty)"
        )
    return SPLIT_ALIASES[key]


@dataclass(frozen=True)
class SplitPlan:
    """What :func:`assign_splits` decided: each photo's split, and which categories are short."""

    splits: dict[str, str]  # sha256 -> split
    promoted: dict[str, int]  # slug -> photos moved out of train to meet the minimums
    short: dict[str, str]  # slug -> why it still misses a minimum


def assign_splits(
    photos: Iterable[tuple[str, str, str | None]],
    seed: int,
    test_fraction: float,
    validation_fraction: float,
    min_test: int = 0,
    min_validation: int = 0,
) -> SplitPlan:
    """Splits ``(sha256, slug, fixed_split_or_None)`` photos, stratified per category.

    Hash-assigned photos follow :func:`split_for`; then, per category, while test (then
    validation) holds fewer than its minimum, the hash-assigned training photo with the lowest
    hash value is moved there (validation, once train is down to one photo, takes hash-assigned
    test photos beyond test's minimum). At least one training photo is always left; a category too small
    for both minimums is reported in ``short`` (test is served first: it is what the release
    decision reads).
    """
    if min_test < 0 or min_validation < 0:
        raise ValueError("split minimums must be >= 0")
    splits: dict[str, str] = {}
    free_train: dict[str, list[tuple[float, str]]] = defaultdict(list)
    free_test: dict[str, list[tuple[float, str]]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for sha, slug, fixed in photos:
        split = fixed or split_for(sha, seed, test_fraction, validation_fraction)
        splits[sha] = split
        counts[slug][split] += 1
        if fixed is None and split in ("train", "test"):
            (free_train if split == "train" else free_test)[slug].append((_uniform(sha, seed), sha))
    promoted: dict[str, int] = {}
    short: dict[str, str] = {}
    for slug in sorted(counts):
        pool = sorted(free_train[slug])
        # Hash-assigned test photos beyond test's minimum, nearest the validation cut first: in a
        # small category the draw (or user-fixed test photos) can leave test full and train
        # nearly empty, and validation is then served from test's surplus.
        surplus = sorted(free_test[slug], reverse=True)
        want_test = min_test if test_fraction > 0 else 0
        moved = 0
        for split, minimum in (("test", min_test), ("validation", min_validation)):
            want = minimum if (test_fraction if split == "test" else validation_fraction) > 0 else 0
            while counts[slug][split] < want:
                if pool and counts[slug]["train"] > 1:
                    _, sha = pool.pop(0)
                    counts[slug]["train"] -= 1
                elif split == "validation" and surplus and counts[slug]["test"] > want_test:
                    _, sha = surplus.pop(0)
                    counts[slug]["test"] -= 1
                else:
                    break
                splits[sha] = split
                counts[slug][split] += 1
                moved += 1
            if counts[slug][split] < want:
                short[slug] = (
                    f"{counts[slug][split]} {split} photos, below the minimum of {want} "
                    f"({sum(counts[slug].values())} photos in all)"
                )
        if moved:
            promoted[slug] = moved
    return SplitPlan(splits, promoted, short)


def balanced_class_weights(counts: dict[str, int]) -> dict[str, float]:
    """scikit-learn's "balanced" weights: n_samples / (n_classes * n_c), over classes with data."""
    present = {slug: n for slug, n in counts.items() if n > 0}
    total = sum(present.values())
    return {slug: round(total / (len(present) * n), 6) for slug, n in present.items()}
