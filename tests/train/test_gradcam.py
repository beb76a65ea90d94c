"""Grad-CAM on every backbone snapcat builds: the split at the last feature map reproduces the
classifier's scores, and the heat map has the contract's shape and range (untrained weights:
plumbing only; tests/train/test_gradcam_object.py checks a trained model looks at the object)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backbone", ["efficientnet-lite0", "xception", "inceptionv3"])
def test_grad_cam_splits_every_backbone_at_its_feature_map(backbone):
    import keras
    import tensorflow as tf

    from snapcat.contract.signature import HEAT_MAP_SIZE
    from snapcat.train.gradcam import GradCam
    from snapcat.train.modeling import ModelSpec, build_model

    keras.utils.set_random_seed(0)
    model, net = build_model(ModelSpec(backbone, num_classes=5, image_size=96, weights="none"))
    cam = GradCam(model)
    assert cam.features[-1] is net  # the backbone sub-model's output: the last feature map
    pixels = tf.constant(np.random.RandomState(1).uniform(0, 255, (3, 96, 96, 3)), tf.float32)
    probabilities, heat, explained = cam(pixels, tf.constant([-1, 4, 9]))
    expected = model(pixels, training=False).numpy()
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)
    top1 = expected.argmax(axis=1)
    assert explained.numpy().tolist() == [top1[0], 4, top1[2]]
    assert heat.shape == (3, HEAT_MAP_SIZE, HEAT_MAP_SIZE)
    assert float(tf.reduce_min(heat)) >= 0 and float(tf.reduce_max(heat)) <= 1


def test_a_model_without_a_feature_map_is_refused():
    import keras

    from snapcat.train.gradcam import GradCam

    flat = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="no feature map"):
        GradCam(flat)
