"""Training-time augmentation: mild, label-preserving changes a seller's photo could have.

Every image gets a random horizontal flip, zoom and translation, and brightness and contrast
jitter; half of each (shuffled) batch also gets a small rotation. Each image is resampled once:
the rotated half through one fused projective transform (flip, rotation, zoom and translation in a
single bilinear pass), the other half through ``crop_and_resize`` (a zoomed, shifted, possibly
mirrored box), which is about 2.5x cheaper. Keras' preprocessing layers resample once per change,
which made augmentation ~96 % of the input pipeline's cost; this way the CPU stays ahead of the
GPU (``benchmarks/input_pipeline_bench.py``). Empty borders are white, the letterbox background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

FILL_VALUE = 255.0


@dataclass(frozen=True)
class AugmentSpec:
    max_rotation_deg: float = 10.0
    zoom: float = 0.10  # scale in [1 - zoom, 1 + zoom]
    translate: float = 0.05  # fraction of the side
    brightness: float = 0.10  # fraction of the 0..255 range
    contrast: float = 0.10  # factor in [1 - contrast, 1 + contrast]
    flip: bool = True


def _transforms(batch: tf.Tensor, source: int, target: int, spec: AugmentSpec) -> tf.Tensor:
    """Per-image projective transforms ``[B, 8]`` mapping output pixels to input pixels."""
    n = tf.shape(batch)[0]
    angle = tf.random.uniform([n], -1.0, 1.0) * (spec.max_rotation_deg * math.pi / 180.0)
    scale = tf.random.uniform([n], 1.0 - spec.zoom, 1.0 + spec.zoom)
    flip = tf.where(tf.random.uniform([n]) < 0.5, -1.0, 1.0) if spec.flip else tf.ones([n])
    shift = tf.random.uniform([n, 2], -spec.translate, spec.translate) * float(source)
    ratio = float(source) / float(target)
    cos, sin = tf.cos(angle) * ratio / scale, tf.sin(angle) * ratio / scale
    # input = centre_in + R(angle) . diag(flip, 1) / scale . ratio . (output - centre_out) + shift
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    c_in, c_out = (source - 1) / 2.0, (target - 1) / 2.0
    a2 = c_in + shift[:, 0] - (a0 + a1) * c_out
    b2 = c_in + shift[:, 1] - (b0 + b1) * c_out
    zeros = tf.zeros([n])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _rotated(images: tf.Tensor, source: int, target: int, spec: AugmentSpec) -> tf.Tensor:
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=_transforms(images, source, target, spec),
        output_shape=tf.constant([target, target], tf.int32),
        fill_value=FILL_VALUE,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _cropped(images: tf.Tensor, target: int, spec: AugmentSpec) -> tf.Tensor:
    """Zoom, shift and flip as a crop box in normalised coordinates (x1 > x2 mirrors)."""
    n = tf.shape(images)[0]
    half = 0.5 / tf.random.uniform([n], 1.0 - spec.zoom, 1.0 + spec.zoom)
    centre = 0.5 + tf.random.uniform([n, 2], -spec.translate, spec.translate)
    y1, y2 = centre[:, 0] - half, centre[:, 0] + half
    x1, x2 = centre[:, 1] - half, centre[:, 1] + half
    if spec.flip:
        mirror = tf.random.uniform([n]) < 0.5
        x1, x2 = tf.where(mirror, x2, x1), tf.where(mirror, x1, x2)
    boxes = tf.stack([y1, x1, y2, x2], axis=1)
    # float input: TF's cost model has no uint8 CropAndResize and logs an error per batch
    return tf.image.crop_and_resize(
        tf.cast(images, tf.float32),
        boxes,
        tf.range(n),
        [target, target],
        extrapolation_value=FILL_VALUE,
    )


def augment_batch(images: tf.Tensor, target: int, spec: AugmentSpec = AugmentSpec()) -> tf.Tensor:
    """uint8 ``[B, S, S, 3]`` -> augmented float32 ``[B, target, target, 3]`` in 0..255."""
    source = images.shape[1]
    half = tf.shape(images)[0] // 2
    pixels = tf.concat(
        [_rotated(images[:half], source, target, spec), _cropped(images[half:], target, spec)],
        axis=0,
    )
    n = tf.shape(pixels)[0]
    contrast = tf.random.uniform([n, 1, 1, 1], 1.0 - spec.contrast, 1.0 + spec.contrast)
    brightness = tf.random.uniform([n, 1, 1, 1], -spec.brightness, spec.brightness) * 255.0
    mean = tf.reduce_mean(pixels, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((pixels - mean) * contrast + mean + brightness, 0.0, 255.0)
