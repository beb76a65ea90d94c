"""Training augmentation and the batch-norm policy of fine-tuning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from snapcat.train.augment import AugmentSpec, augment_batch
from snapcat.train.modeling import ModelSpec, build_model, set_backbone_trainable


def _batch(n: int = 6, size: int = 96) -> tf.Tensor:
    rng = np.random.default_rng(0)
    images = np.full((n, size, size, 3), 255, np.uint8)
    images[:, size // 4 : 3 * size // 4, size // 8 : size // 2] = rng.integers(0, 200, 3)
    return tf.constant(images)


def test_shape_dtype_range_and_resize():
    out = augment_batch(_batch(7, 96), 80).numpy()
    assert out.shape == (7, 80, 80, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255


def test_identity_spec_resamples_without_changing_content():
    spec = AugmentSpec(
        max_rotation_deg=0, zoom=0, translate=0, brightness=0, contrast=0, flip=False
    )
    images = _batch(4, 96)
    out = augment_batch(images, 96, spec).numpy()
    np.testing.assert_allclose(out, images.numpy().astype(np.float32), atol=1.0)


def test_changes_images_and_keeps_white_borders():
    images = _batch(8, 96)
    out = augment_batch(images, 96).numpy()
    assert np.abs(out - images.numpy()).mean() > 1.0  # something changed
    # corners stay near white: the letterbox background, not black fill
    assert out[:, 0, 0].mean() > 200


def test_flip_mirrors_content():
    spec = AugmentSpec(max_rotation_deg=0, zoom=0, translate=0, brightness=0, contrast=0)
    images = _batch(32, 96)
    out = augment_batch(images, 96, spec).numpy()
    left = out[:, :, :48].mean(axis=(1, 2, 3))
    right = out[:, :, 48:].mean(axis=(1, 2, 3))
    # the dark patch is on the left in the input; a flipped image has it on the right
    assert (right < left).any() and (left < right).any()


@pytest.mark.parametrize("pretrained", [True, False])
def test_batchnorm_frozen_only_for_pretrained_backbones(pretrained):
    _, backbone = build_model(ModelSpec(num_classes=3, image_size=71, weights="none"))
    set_backbone_trainable(backbone, True, pretrained=pretrained)
    norms = [
        la
        for la in backbone.layers
        if isinstance(la, tf.keras.layers.BatchNormalization)
        or type(la).__name__ == "BatchNormalization"
    ]
    assert norms
    assert all(la.trainable is (not pretrained) for la in norms)
    # from scratch, a short moving-average memory so inference statistics catch up
    assert all(la.momentum == (0.99 if pretrained else 0.9) for la in norms)
    convs = [
        la
        for la in backbone.layers
        if isinstance(la, keras.layers.Conv2D | keras.layers.SeparableConv2D)
    ]
    assert convs
    assert all(la.trainable for la in convs)
