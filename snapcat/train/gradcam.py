"""Grad-CAM (Selvaraju et al., 2017) on the classifier's last convolutional feature map: where in
the photo the evidence for a class lies. The export puts it into the SavedModel's ``explain``
signature (:data:`snapcat.contract.signature.EXPLAIN_SIGNATURE_NAME`), so TF Serving computes it
and the serving transformer stays free of TensorFlow; evaluation calls the same signature.

Why this split of the model, and why it is generic: every classifier snapcat builds
(:func:`snapcat.train.modeling.build_model`) is a chain ``pixels -> preprocessing -> backbone ->
pooling -> dropout -> dense(softmax)``, whatever the backbone (Xception, InceptionV3,
EfficientNet-Lite0). The last layer of the chain with a 4-D output is the backbone sub-model
(``include_top=False``: its output is the last feature map, before pooling), so
:class:`GradCam` cuts the chain there, without naming any backbone's layers. The class score is
the dense layer's logit (pre-softmax, as the paper prescribes: the softmax would mix in every
other class); a head that is not a softmax dense falls back to the log-probability.
"""

from __future__ import annotations

from snapcat.contract.signature import HEAT_MAP_SIZE


class GradCam:
    """``model`` split at its last feature map. Raises ValueError for a model that is not a chain
    of single-input layers or has no 4-D (feature map) output."""

    def __init__(self, model, heat_map_size: int = HEAT_MAP_SIZE):
        import keras

        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        maps = [i for i, layer in enumerate(layers) if len(layer.output.shape) == 4]
        if not maps or maps[-1] == len(layers) - 1:
            raise ValueError(f"{model.name}: no feature map before the classification head")
        cut = maps[-1]
        self.features, self.head = layers[: cut + 1], layers[cut + 1 :]
        self.size = heat_map_size
        last = self.head[-1]
        self._logits_of = (
            last
            if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax
            else None
        )

    def _run(self, layers, x):
        for layer in layers:
            x = layer(x, training=False)
        return x

    def __call__(self, pixels, class_index):
        """``pixels`` (``float32 [N, S, S, 3]``, 0..255 as the model takes them) and one class per
        row (out of range: the top-1) -> (probabilities ``[N, C]``, heat maps
        ``[N, size, size]`` in [0, 1], explained class ``int64 [N]``)."""
        import tensorflow as tf

        features = self._run(self.features, pixels)
        with tf.GradientTape() as tape:
            tape.watch(features)
            if self._logits_of is not None:
                pooled = tf.cast(self._run(self.head[:-1], features), tf.float32)
                dense = self._logits_of
                logits = tf.matmul(pooled, tf.cast(dense.kernel, tf.float32))
                if dense.use_bias:
                    logits = logits + tf.cast(dense.bias, tf.float32)
                probabilities = tf.nn.softmax(logits, axis=-1)
            else:
                probabilities = tf.cast(self._run(self.head, features), tf.float32)
                logits = tf.math.log(tf.maximum(probabilities, 1e-12))
            classes = tf.shape(probabilities)[-1]
            top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            class_index = tf.cast(class_index, tf.int32)
            chosen = tf.where((class_index >= 0) & (class_index < classes), class_index, top)
            # Rows are independent (inference mode), so one sum gives each row its own gradient.
            score = tf.reduce_sum(logits * tf.one_hot(chosen, classes, dtype=logits.dtype))
        gradients = tf.cast(tape.gradient(score, features), tf.float32)
        features = tf.cast(features, tf.float32)
        weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)  # [N, 1, 1, K]
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, [self.size, self.size], method="bilinear", antialias=True)
        cam = tf.squeeze(tf.nn.relu(cam), -1)
        peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        heat = tf.math.divide_no_nan(cam, peak)
        return probabilities, tf.clip_by_value(heat, 0.0, 1.0), tf.cast(chosen, tf.int64)
