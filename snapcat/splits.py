"""Train/validation/test assignment by content hash.

A photo's split depends only on its bytes and the seed: the same input gives byte-identical
assignments, adding new photos never moves an existing one, and identical copies of a photo can
never straddle two splits. Each category is split by the same fractions independently (the hash
is uniform within every category), which is what stratification asks for, without the list-order
dependence of a shuffled split.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def split_for(
    content_sha256: str, seed: int, test_fraction: float, validation_fraction: float
) -> str:
    """``test_fraction`` of all photos go to test, then ``validation_fraction`` of the rest."""
    if not 0 <= test_fraction < 1 or not 0 <= validation_fraction < 1:
        raise ValueError("split fractions must be within [0, 1)")
    digest = hashlib.sha256(f"{seed}:{content_sha256}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + (1 - test_fraction) * validation_fraction:
        return "validation"
    return "train"


def balanced_class_weights(counts: dict[str, int]) -> dict[str, float]:
    """scikit-learn's "balanced" weights: n_samples / (n_classes * n_c), over classes with data."""
    present = {slug: n for slug, n in counts.items() if n > 0}
    total = sum(present.values())
    return {slug: round(total / (len(present) * n), 6) for slug, n in present.items()}
