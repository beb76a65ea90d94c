"""The classifier: an ImageNet backbone without its 1000-way head, plus our softmax head.

Preprocessing (Xception's and InceptionV3's scaling of 0..255 pixels to [-1, 1]) is the model's
first layer, so no caller can forget it or apply another one: the training pipeline and the
serving signature both feed raw decoded pixels.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import keras

#: Keras application constructors and the file names their ImageNet "notop" weights use in the
#: Keras cache (what Dockerfile.train downloads at build time).
BACKBONES = {
    "xception": (
        keras.applications.Xception,
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "inceptionv3": (
        keras.applications.InceptionV3,
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}
MIN_SIZE = {"xception": 71, "inceptionv3": 75}
WEIGHTS_HOST = ("storage.googleapis.com", 443)


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable (e.g. a pod without internet)."""


@dataclass(frozen=True)
class ModelSpec:
    backbone: str = "xception"
    num_classes: int = 19
    image_size: int = 299
    weights: str = "imagenet"  # "imagenet", "none" or a path to a backbone weights file
    dropout: float = 0.2

    @property
    def pretrained(self) -> bool:
        return self.weights.lower() != "none"


def check_input_size(backbone: str, image_size: int) -> None:
    """Raises ValueError for an unknown backbone or an input smaller than it accepts."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    if image_size < MIN_SIZE[backbone]:
        raise ValueError(
            f"{backbone} needs images of at least {MIN_SIZE[backbone]} px, not {image_size}"
        )


def keras_cache_dir() -> Path:
    import os

    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(backbone: str, weights: str, connect_timeout: float = 3.0) -> str | None:
    """Turns the ``--weights`` value into what Keras takes, failing fast instead of hanging.

    ``imagenet`` is used from the Keras cache when present (the training image bakes it in);
    otherwise a short connection test decides between downloading and a clear error.
    """
    if weights.lower() == "none":
        return None
    if weights.lower() != "imagenet":
        if not Path(weights).is_file():
            raise WeightsUnavailableError(f"--weights {weights}: no such weights file")
        return weights
    cached = keras_cache_dir() / BACKBONES[backbone][1]
    if cached.is_file():
        return "imagenet"
    try:
        socket.create_connection(WEIGHTS_HOST, timeout=connect_timeout).close()
    except OSError as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for {backbone} are not in the Keras cache ({cached}) and "
            f"{WEIGHTS_HOST[0]} cannot be reached ({exc}). The training image downloads them at "
            "build time; elsewhere pass --weights none or --weights PATH to a weights file."
        ) from exc
    return "imagenet"


def build_model(spec: ModelSpec) -> tuple[keras.Model, keras.Model]:
    """Returns (classifier, backbone). Unfreeze the backbone with :func:`set_backbone_trainable`,
    never with ``backbone.trainable = True``: that keeps its batch-norm layers in inference mode."""
    check_input_size(spec.backbone, spec.image_size)
    constructor, _ = BACKBONES[spec.backbone]
    backbone = constructor(
        include_top=False,
        weights=resolve_weights(spec.backbone, spec.weights),
        input_shape=(spec.image_size, spec.image_size, 3),
    )
    inputs = keras.Input((spec.image_size, spec.image_size, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit_range")(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(spec.dropout, name="head_dropout")(x)
    # float32 softmax even under mixed precision: float16 probabilities lose the small ones.
    outputs = keras.layers.Dense(
        spec.num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"snapcat_{spec.backbone}"), backbone


def set_backbone_trainable(backbone: keras.Model, trainable: bool, pretrained: bool = True) -> None:
    """Freezes or unfreezes the backbone for a training phase.

    With pretrained weights its batch-norm layers stay frozen, which in Keras 3 also keeps them in
    inference mode (moving statistics used, never updated): fine-tuning on small batches would
    otherwise wreck the statistics the backbone was trained with. Calling the backbone with
    ``training=False`` (the Keras 2 recipe) does not do this in Keras 3: ``fit`` calls the model
    with ``training=True``, which overrides the nested call's argument (keras-team/keras#20285).
    A backbone trained from scratch has no statistics worth keeping, so there they train, with a
    shorter moving-average memory (momentum 0.9, not 0.99): short runs on small data otherwise end
    with inference statistics still close to their initial 0/1, and every photo scores the same.
    """
    backbone.trainable = trainable
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if pretrained:
                layer.trainable = False
            else:
                layer.momentum = 0.9
