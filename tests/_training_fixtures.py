"""Shared, session-scoped fixtures for the training / export / evaluation tests.

Load with ``pytest_plugins = ["_training_fixtures"]`` in a test module (not by importing the
fixtures: an imported session fixture is instantiated once per importing module). Everything
expensive happens once per test session:

- ``prepared``: ``data/sample`` prepared at 71 px (the Xception minimum).
- ``trained``: one small Xception trained two-phase (1 head epoch + 1 fine-tune epoch) from a
  ``--weights PATH`` backbone file, with :class:`FitSpy` watching every ``fit`` call.
- ``evaluated``: that model evaluated on the test split, with warnings and matplotlib's log
  captured while the report is drawn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DIR

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_SIZE = 71
BATCH_SIZE = 32


# --------------------------------------------------------------------------------- fit spy
@dataclass
class FitCall:
    """What one ``model.fit`` call inside ``train()`` did to the backbone."""

    backbone_trainable: bool
    initial_epoch: int
    epochs: int
    learning_rate: float
    backbone_before: list[np.ndarray]  # backbone.weights as they were when fit started
    changed: dict[str, bool] = field(default_factory=dict)  # backbone weight path -> changed?
    moving_stats: list[str] = field(default_factory=list)  # paths of BN moving mean/variance
    trainable_paths: list[str] = field(default_factory=list)
    head_changed: bool = False


class FitSpy:
    """Wraps ``snapcat.train.modeling.build_model`` (to learn which model and backbone ``train`` builds)
    and ``keras.Model.fit`` (to snapshot the backbone around each training phase)."""

    def __init__(self, dry: bool = False) -> None:
        self.dry = dry  # record the calls without training (fit returns at once)
        self.model = None
        self.backbone = None
        self.calls: list[FitCall] = []

    @contextlib.contextmanager
    def active(self):
        import keras

        import snapcat.train.modeling as modeling

        original_build = modeling.build_model
        original_fit = keras.Model.fit
        spy = self

        def build_model(spec):
            model, backbone = original_build(spec)
            spy.model, spy.backbone = model, backbone
            return model, backbone

        def fit(model, *args, **kwargs):
            if model is not spy.model:
                return original_fit(model, *args, **kwargs)
            backbone = spy.backbone
            if spy.dry:
                spy.calls.append(
                    FitCall(
                        backbone_trainable=bool(backbone.trainable),
                        initial_epoch=int(kwargs.get("initial_epoch", 0)),
                        epochs=int(kwargs.get("epochs", 1)),
                        learning_rate=_learning_rate(model),
                        backbone_before=[],
                    )
                )
                return None
            before = [np.array(w.numpy()) for w in backbone.weights]
            head = model.get_layer("probabilities")
            head_before = [np.array(w.numpy()) for w in head.weights]
            call = FitCall(
                backbone_trainable=bool(backbone.trainable),
                initial_epoch=int(kwargs.get("initial_epoch", 0)),
                epochs=int(kwargs.get("epochs", 1)),
                learning_rate=_learning_rate(model),
                backbone_before=before,
                moving_stats=[w.path for w in backbone.weights if "moving_" in w.path],
                trainable_paths=[w.path for w in backbone.trainable_weights],
            )
            result = original_fit(model, *args, **kwargs)
            call.changed = {
                w.path: not np.array_equal(b, w.numpy())
                for w, b in zip(backbone.weights, before, strict=True)
            }
            call.head_changed = any(
                not np.array_equal(b, w.numpy())
                for w, b in zip(head.weights, head_before, strict=True)
            )
            spy.calls.append(call)
            return result

        modeling.build_model = build_model
        keras.Model.fit = fit
        try:
            yield self
        finally:
            modeling.build_model = original_build
            keras.Model.fit = original_fit


# --------------------------------------------------------------------------------- helpers
def _learning_rate(model) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def make_backbone_weights(
    path: Path, backbone: str = "xception", size: int = IMAGE_SIZE, seed=1234
):
    """Saves a randomly initialised backbone's weights (a seed ``train`` never uses, so they
    differ from what ``--weights none`` would build) and returns them as numpy arrays.

    The batch-norm moving statistics are calibrated on sample photos (one forward pass in
    training mode with momentum 0): left at their 0/1 initial values, a random deep backbone
    gives nearly the same features for every photo, and the tests comparing probabilities
    between code paths need a model whose output depends on its input.
    """
    import io

    import keras
    from PIL import Image

    from snapcat.contract.image_spec import ImageSpec
    from snapcat.imaging.normalize import normalize_image
    from snapcat.train.modeling import BACKBONES

    keras.utils.set_random_seed(seed)
    model = BACKBONES[backbone].constructor(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    scale, offset = BACKBONES[backbone].preprocessing
    spec = ImageSpec(size=size)
    photos = sorted(SAMPLE_DIR.glob("*/*.jpg"))[::5][:64]
    pixels = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(normalize_image(p.read_bytes(), spec))), "float32")
            for p in photos
        ]
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(pixels * scale + offset, training=True)  # the model's own input scaling
    model.save_weights(str(path))
    return [np.array(w.numpy()) for w in model.weights]


def spread_head_scores(model, photos: list[bytes], image_size: int) -> None:
    """A randomly initialised backbone gives nearly the same features for every photo, so its
    softmax is nearly uniform. Rescale the head (from the features' measured spread on
    ``photos``) so different photos get clearly different scores, and an answer that mixes
    photos up or reorders classes cannot pass."""
    import io

    import keras
    from PIL import Image

    from snapcat.contract.image_spec import ImageSpec
    from snapcat.imaging.normalize import normalize_image

    spec = ImageSpec(size=image_size)
    pixels = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(normalize_image(p, spec))).convert("RGB"), "float32")
            for p in photos
        ]
    )
    features = keras.Model(model.inputs, model.get_layer("avg_pool").output).predict(
        pixels, verbose=0
    )
    dense = model.get_layer("probabilities")
    kernel, _ = dense.get_weights()
    spread = float((features - features.mean(0)).std()) or 1.0
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 3 / (spread * np.sqrt(kernel.shape[0])), kernel.shape)
    kernel = kernel.astype(np.float32)
    dense.set_weights([kernel, (-(features.mean(0) @ kernel)).astype(np.float32)])


def history_rows(history_csv: Path) -> list[dict[str, str]]:
    """history.csv rows exactly as logged (no de-duplication of re-logged epochs)."""
    import csv

    if not history_csv.exists():
        return []
    with open(history_csv, newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Trained:
    config: object  # TrainConfig
    summary: dict
    spy: FitSpy
    saved_backbone: list[np.ndarray]
    weights_file: Path

    @property
    def output(self) -> Path:
        return Path(self.config.output)

    @property
    def version_dir(self) -> Path:
        return Path(self.summary["version_dir"])


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    from snapcat.dataset.prepare import PrepareConfig, run_prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    run_prepare(
        PrepareConfig(
            input=str(SAMPLE_DIR), output=str(out), image_size=IMAGE_SIZE, workers=2, progress=False
        )
    )
    return out


@pytest.fixture(scope="session")
def prepared_stats(prepared) -> dict:
    return json.loads((prepared / "stats.json").read_text("utf-8"))


@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory) -> Trained:
    from snapcat.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("trained")
    weights_file = root / "backbone.weights.h5"
    saved = make_backbone_weights(weights_file)
    config = TrainConfig(
        data=str(prepared),
        output=str(root / "model"),
        backbone="xception",
        mode="two-phase",
        weights=str(weights_file),
        epochs=2,
        head_epochs=1,
        batch_size=BATCH_SIZE,
        learning_rate=3e-3,
        fine_tune_learning_rate=1e-4,
    )
    spy = FitSpy()
    with spy.active():
        summary = train(config)
    for call in spy.calls[1:]:
        call.backbone_before = []  # only the first (what --weights PATH loaded) is compared
    return Trained(config, summary, spy, saved, weights_file)


@dataclass
class Evaluated:
    output: Path
    metrics: dict
    warnings: list[str]
    font_log: list[str]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def evaluated(trained, prepared, tmp_path_factory) -> Evaluated:
    from snapcat.evaluate.evaluation import EvaluateConfig, evaluate

    out = tmp_path_factory.mktemp("evaluated") / "eval"
    handler = _ListHandler()
    logger = logging.getLogger("matplotlib")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = evaluate(
                EvaluateConfig(
                    data=str(prepared),
                    model=str(trained.output),
                    output=str(out),
                    batch_size=BATCH_SIZE,
                    progress=False,
                )
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return Evaluated(out, metrics, [str(w.message) for w in caught], handler.messages)
