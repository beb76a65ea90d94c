"""The one TensorFlow decoder of canonical image bytes.

The training input pipeline and the exported serving signature both call :func:`decode_canonical`,
so the pixels the network sees are produced by the same op with the same settings on both sides.
"""

from __future__ import annotations

import tensorflow as tf

#: libjpeg's accurate integer IDCT: the same pixels on every CPU and in every TF build.
DCT_METHOD = "INTEGER_ACCURATE"


def decode_canonical(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Canonical JPEG bytes (scalar string) to a float32 ``[size, size, 3]`` tensor in 0..255.

    The resize is an exact no-op for canonical images (already ``size`` x ``size``); it makes the
    signature total for any JPEG a caller might send and lets a model run at another size than
    its dataset was prepared at.
    """
    image = tf.io.decode_jpeg(image_bytes, channels=3, dct_method=DCT_METHOD)
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear")
    return tf.ensure_shape(image, [size, size, 3])


def decode_canonical_uint8(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """The same decode, kept as uint8 ``[size, size, 3]`` for the fused training augmentation
    (:mod:`snapcat.train.augment`), which resamples it anyway; ``size`` is the prepared size."""
    image = tf.io.decode_jpeg(image_bytes, channels=3, dct_method=DCT_METHOD)
    return tf.ensure_shape(image, [size, size, 3])
