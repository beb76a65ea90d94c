"""Training/serving skew: for real sample photos, the probabilities the model produces on the
training input path and on the serving path agree to float tolerance.

- training side: prepared shard bytes -> ``make_dataset(training=False, augment=False)`` (which
  decodes with :func:`snapcat.train.tf_image.decode_canonical`) -> the Keras model ``train`` built, with
  the weights it exported, and the calibration temperature it exported;
- serving side: the original photo file -> :func:`snapcat.imaging.normalize.normalize_image` with the
  exported model's ``ImageSpec`` -> canonical bytes -> the exported ``serving_default`` signature.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import SAMPLE_DIR

pytest_plugins = ["_training_fixtures"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

#: float32 through two differently built graphs (the Keras model called eagerly vs the SavedModel).
ATOL = 1e-5


@pytest.fixture(scope="module")
def both_sides(trained, prepared):
    from snapcat.dataset.shards import read_split
    from snapcat.imaging.normalize import normalize_image
    from snapcat.stats import scale
    from snapcat.train.export import ServingModel
    from snapcat.train.trainer import make_dataset

    served = ServingModel(str(trained.output))
    records = read_split(str(prepared), "test")
    dataset = make_dataset(
        str(prepared),
        "test",
        served.info.image_size,
        16,
        training=False,
        augment=False,
        seed=0,
    )
    pixels, labels, train_side = [], [], []
    for x, y in dataset:
        pixels.append(x.numpy())
        labels.append(y.numpy())
        train_side.append(np.asarray(trained.spy.model(x, training=False)))
    # The exported signature ends with the temperature fitted on the validation split (issue 14):
    # the training side gets the same scaling, so the comparison stays one of the input paths.
    train_side = [scale(p, served.info.temperature) for p in train_side]
    originals = [(SAMPLE_DIR / r["source"]).read_bytes() for r in records]
    canonical = [normalize_image(data, served.info.spec) for data in originals]
    serve_side = np.concatenate(
        [served.predict(canonical[i : i + 16]) for i in range(0, len(canonical), 16)]
    )
    return {
        "served": served,
        "records": records,
        "labels": np.concatenate(labels),
        "pixels": np.concatenate(pixels),
        "canonical": canonical,
        "train_side": np.concatenate(train_side),
        "serve_side": serve_side,
    }


def test_the_same_photos_in_the_same_order(both_sides):
    records = both_sides["records"]
    assert len(records) >= 20
    assert [r["label"] for r in records] == both_sides["labels"].tolist()
    assert len({r["source"] for r in records}) == len(records)


def test_serving_normalization_reproduces_the_training_bytes(both_sides):
    """prepare and the serving edge normalize with the same module and spec: byte-identical."""
    mismatched = [
        r["source"]
        for r, c in zip(both_sides["records"], both_sides["canonical"], strict=True)
        if r["image"] != c
    ]
    assert not mismatched


def test_training_and_serving_probabilities_agree(both_sides):
    train_side, serve_side = both_sides["train_side"], both_sides["serve_side"]
    assert train_side.shape == serve_side.shape
    np.testing.assert_allclose(serve_side, train_side, rtol=0, atol=ATOL)
    # Meaningful only if the model tells the photos apart far beyond the tolerance.
    spread = train_side.std(axis=0).max()
    assert spread > 100 * ATOL, f"outputs barely depend on the input (std {spread:.2e})"


def test_a_real_skew_would_be_caught(both_sides):
    """Control: serving-side pixels that differ the way skew usually does (the photo re-encoded
    at another JPEG quality, or resized without the letterbox) move the probabilities by far
    more than the tolerance, so the agreement above is not vacuous."""
    from PIL import Image

    served = both_sides["served"]
    size = served.info.image_size
    reencoded, stretched = [], []
    for record in both_sides["records"]:
        image = Image.open(io.BytesIO(record["image"])).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=60)
        reencoded.append(buffer.getvalue())
        original = Image.open(SAMPLE_DIR / record["source"]).convert("RGB")
        buffer = io.BytesIO()
        original.resize((size, size), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=90)
        stretched.append(buffer.getvalue())
    train_side = both_sides["train_side"]
    for skewed in (reencoded, stretched):
        deviation = np.abs(served.predict(skewed) - train_side).max(axis=1)
        assert np.median(deviation) > 10 * ATOL
