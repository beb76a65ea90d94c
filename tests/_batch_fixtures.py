"""Helpers for the batch prediction and audit tests: a small exported model and a photo folder.

The model is an untrained Xception at 71 px whose head is rescaled
(:func:`_training_fixtures.spread_head_scores`) so different photos get clearly different,
non-uniform scores, exported with a calibration so ``confident`` varies: an answer that mixes
photos up, reorders classes or drops the threshold cannot pass a comparison.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _training_fixtures import spread_head_scores
from conftest import SAMPLE_DIR, make_image_bytes

IMAGE_SIZE = 71


def export_tiny_model(
    root: Path, classes: list[str] | None = None, confidence_threshold: float = 0.99
) -> Path:
    """Served scores are temperature-scaled inside the signature (T = 2): agreement checks
    compare the servers' answers with that signature's calibrated output."""
    import keras

    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.train.calibration_fit import Calibration
    from snapcat.train.export import export_model
    from snapcat.train.modeling import ModelSpec, build_model

    classes = classes or list(Taxonomy.load().trainable_slugs[:5])
    # The same backbone weights every run: which photos clear the threshold (the tests need
    # some that do and some that do not) must not depend on the random initialisation.
    keras.utils.set_random_seed(0)
    model, _ = build_model(
        ModelSpec(
            backbone="xception", num_classes=len(classes), image_size=IMAGE_SIZE, weights="none"
        )
    )
    spread_head_scores(
        model, [make_image_bytes("JPEG", (160, 120), seed=s) for s in range(8)], IMAGE_SIZE
    )
    export_model(
        model,
        str(root),
        classes=classes,
        image_size=IMAGE_SIZE,
        jpeg_quality=90,
        backbone="xception",
        calibration=Calibration(
            temperature=2.0, confidence_threshold=confidence_threshold, fitted_on="fixture"
        ),
    )
    return root


def photo_folder(root: Path, per_category: int = 3, corrupt: bool = True) -> list[Path]:
    """A folder per category of sample photos (so each carries its category) and, with
    ``corrupt``, a truncated JPEG at the root. Returns the photo paths written, sorted."""
    written = []
    for category in sorted(p for p in SAMPLE_DIR.iterdir() if p.is_dir())[:4]:
        for photo in sorted(category.glob("*.jpg"))[:per_category]:
            target = root / category.name / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
            written.append(target)
    if corrupt:
        broken = root / "broken.jpg"
        broken.write_bytes(make_image_bytes("JPEG", (200, 150))[:300])
        written.append(broken)
    return sorted(written)
