"""The classifier: an ImageNet backbone without its 1000-way head, plus our softmax head.

Preprocessing (each backbone's own scaling of 0..255 pixels) is the model's first layer, so no
caller can forget it or apply another one: the training pipeline and the serving signature both
feed raw decoded pixels, whatever the backbone.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from snapcat.errors import SnapcatError
from snapcat.train import efficientnet_lite

WEIGHTS_HOST = ("storage.googleapis.com", 443)


@dataclass(frozen=True)
class Backbone:
    """What the classifier needs to know about a backbone network."""

    name: str
    #: ``(include_top=..., weights=..., input_shape=...)`` -> keras.Model, as keras.applications
    constructor: Callable[..., keras.Model]
    min_size: int
    default_size: int
    #: (scale, offset): the model's first layer computes ``pixel * scale + offset``
    preprocessing: tuple[float, float]
    #: Keras-cache file name of downloadable ImageNet "notop" weights; None when the weights come
    #: with an installed package (nothing to download)
    weights_file: str | None = None


_UNIT_RANGE = (1 / 127.5, -1.0)  # Xception and InceptionV3: [-1, 1]
BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "xception",
            keras.applications.Xception,
            min_size=71,
            default_size=299,
            preprocessing=_UNIT_RANGE,
            weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "inceptionv3",
            keras.applications.InceptionV3,
            min_size=75,
            default_size=299,
            preprocessing=_UNIT_RANGE,
            weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            efficientnet_lite.NAME,
            efficientnet_lite.build,
            min_size=32,
            default_size=efficientnet_lite.DEFAULT_SIZE,
            preprocessing=efficientnet_lite.PREPROCESSING,
        ),
    )
}


class WeightsUnavailableError(SnapcatError, RuntimeError):
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


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]


def check_input_size(backbone: str, image_size: int) -> None:
    """Raises ValueError for an unknown backbone or an input smaller than it accepts."""
    minimum = get_backbone(backbone).min_size
    if image_size < minimum:
        raise ValueError(f"{backbone} needs images of at least {minimum} px, not {image_size}")


def keras_cache_dir() -> Path:
    import os

    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(backbone: str, weights: str, connect_timeout: float = 3.0) -> str | None:
    """Turns the ``--weights`` value into what the backbone constructor takes, failing fast
    instead of hanging.

    ``imagenet`` is used from the Keras cache when present (the training image bakes it in);
    otherwise a short connection test decides between downloading and a clear error. Backbones
    whose weights ship in an installed package need neither.
    """
    if weights.lower() == "none":
        return None
    if weights.lower() != "imagenet":
        if not Path(weights).is_file():
            raise WeightsUnavailableError(f"--weights {weights}: no such weights file")
        return weights
    weights_file = get_backbone(backbone).weights_file
    if weights_file is None:
        return "imagenet"
    cached = keras_cache_dir() / weights_file
    if cached.is_file():
        return "imagenet"
    try:
        socket.create_connection(WEIGHTS_HOST, timeout=connect_timeout).close()
    except OSError as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for {backbone} are not in the Keras cache ({cached}) and "
            f"{WEIGHTS_HOST[0]} cannot be reached ({exc}). The training image downloads them at "
            "build time; elsewhere pass --weights none or --weights PATH to a weights file, or "
            f"use --backbone {efficientnet_lite.NAME}, whose weights are installed with snapcat."
        ) from exc
    return "imagenet"


@dataclass(frozen=True)
class BakedWeights:
    """What :func:`bake_imagenet_weights` put into the Keras cache, and what it could not."""

    baked: tuple[str, ...]
    skipped: dict[str, str]  # backbone -> why its weights are not in the cache

    def __str__(self) -> str:
        lines = [f"ImageNet weights baked: {', '.join(self.baked) or 'none'}"]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def bake_imagenet_weights(names=None, missing: str = "skip") -> BakedWeights:
    """Puts the ImageNet weights of the ``names`` backbones (default: all) into the Keras cache
    at image build time, so that training pods need no network.

    Weights that must be downloaded (Xception, InceptionV3) cannot be where the build has no
    internet: with ``missing="skip"`` such a backbone is left out and the result says why (pods
    then refuse ``--weights imagenet`` for it with a clear error); ``missing="fail"`` raises
    instead, for release builds that must carry every backbone. Weights that come with an
    installed package (EfficientNet-Lite0) are always baked: failing there is a real error."""
    if missing not in ("skip", "fail"):
        raise ValueError(f"missing={missing!r}: choose 'skip' or 'fail'")
    baked, skipped = [], {}
    for name in names or BACKBONES:
        backbone = get_backbone(name)
        size = (backbone.default_size, backbone.default_size, 3)
        try:
            weights = resolve_weights(name, "imagenet")
            backbone.constructor(include_top=False, weights=weights, input_shape=size)
        except Exception as exc:
            if backbone.weights_file is None or missing == "fail":
                raise
            cause = exc.__cause__ or exc
            skipped[name] = f"cannot download {backbone.weights_file} ({cause})"
            continue
        baked.append(name)
    return BakedWeights(tuple(baked), skipped)


def build_model(spec: ModelSpec) -> tuple[keras.Model, keras.Model]:
    """Returns (classifier, backbone). Unfreeze the backbone with :func:`set_backbone_trainable`,
    never with ``backbone.trainable = True``: that keeps its batch-norm layers in inference mode."""
    check_input_size(spec.backbone, spec.image_size)
    scale, offset = get_backbone(spec.backbone).preprocessing
    backbone = get_backbone(spec.backbone).constructor(
        include_top=False,
        weights=resolve_weights(spec.backbone, spec.weights),
        input_shape=(spec.image_size, spec.image_size, 3),
    )
    inputs = keras.Input((spec.image_size, spec.image_size, 3), name="pixels")
    x = keras.layers.Rescaling(scale, offset=offset, name="backbone_preprocessing")(inputs)
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
