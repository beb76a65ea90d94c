"""Training: weights sources, the three modes, best-epoch checkpointing, resume after a kill, and
the guard against resuming with other settings."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["_training_fixtures"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
BATCH_SIZE = 32


class _Stop(Exception):
    """Raised in place of the export to end a dry ``train()`` early."""


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)
    env.pop("KERAS_BACKEND", None)
    return env


@pytest.fixture
def closed_port():
    """A local TCP port that refuses connections (bound, never listening): "no network" that
    stays deterministic on a machine that has internet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def offline(monkeypatch, tmp_path, closed_port):
    """An empty Keras cache and an unreachable weights host."""
    import snapcat.train.modeling as modeling

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(modeling, "WEIGHTS_HOST", ("127.0.0.1", closed_port))
    return home


# ------------------------------------------------------------------------------ modes
def test_recipe_fills_only_what_the_command_left_open():
    from snapcat.train.trainer import RECIPES, TrainConfig

    lite = TrainConfig(data="d", output="o", backbone="efficientnet-lite0", epochs=12)
    filled = lite.with_recipe()
    recipe = RECIPES["efficientnet-lite0"]
    assert filled.fine_tune_learning_rate == recipe.fine_tune_learning_rate
    assert filled.head_epochs == round(12 * recipe.head_fraction)
    mine = replace(lite, fine_tune_learning_rate=3e-5, head_epochs=5).with_recipe()
    assert (mine.fine_tune_learning_rate, mine.head_epochs) == (3e-5, 5)


def test_phases_per_mode():
    from snapcat.train.trainer import TrainConfig, _phases

    base = TrainConfig(data="d", output="o", epochs=6, learning_rate=1e-3).with_recipe()
    assert base.fine_tune_learning_rate == 1e-5 and base.head_epochs == 2  # Xception: keras-io
    fe = _phases(replace(base, mode="feature-extraction"))
    assert [(p["name"], p["start"], p["end"], p["trainable"]) for p in fe] == [
        ("head", 0, 6, False)
    ]
    assert fe[0]["lr"] == base.learning_rate
    ft = _phases(replace(base, mode="fine-tuning"))
    assert [(p["name"], p["start"], p["end"], p["trainable"]) for p in ft] == [
        ("fine-tune", 0, 6, True)
    ]
    assert ft[0]["lr"] == base.fine_tune_learning_rate
    two = _phases(replace(base, mode="two-phase"))
    assert [(p["name"], p["start"], p["end"], p["trainable"]) for p in two] == [
        ("head", 0, math.ceil(6 / 3), False),
        ("fine-tune", math.ceil(6 / 3), 6, True),
    ]
    assert [p["lr"] for p in two] == [base.learning_rate, base.fine_tune_learning_rate]
    explicit = _phases(replace(base, mode="two-phase", head_epochs=4))
    assert [(p["start"], p["end"]) for p in explicit] == [(0, 4), (4, 6)]
    # Every epoch is a head epoch: there is nothing left to fine-tune.
    assert [p["name"] for p in _phases(replace(base, mode="two-phase", head_epochs=9))] == ["head"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("feature-extraction", [(False, 0, 3, 2e-3)]),
        ("fine-tuning", [(True, 0, 3, 2e-5)]),
        ("two-phase", [(False, 0, 1, 2e-3), (True, 1, 3, 2e-5)]),
    ],
)
def test_train_runs_each_mode_as_planned(mode, expected, prepared, tmp_path, monkeypatch):
    """``train`` sets the backbone's trainability, epochs and learning rate per phase (fits are
    recorded, not run; the export is cut off)."""
    import snapcat.train.export
    from snapcat.train.trainer import TrainConfig, train

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(snapcat.train.export, "export_model", stop)
    config = TrainConfig(
        data=str(prepared),
        output=str(tmp_path / "m"),
        mode=mode,
        weights="none",
        epochs=3,
        head_epochs=1,
        learning_rate=2e-3,
        fine_tune_learning_rate=2e-5,
        batch_size=BATCH_SIZE,
    )
    from _training_fixtures import FitSpy

    spy = FitSpy(dry=True)
    with spy.active(), pytest.raises(_Stop):
        train(config)
    got = [(c.backbone_trainable, c.initial_epoch, c.epochs, c.learning_rate) for c in spy.calls]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[3] for g in got] == pytest.approx([e[3] for e in expected])


def test_two_phase_freezes_then_fine_tunes_with_batch_norm_in_inference_mode(trained):
    head, fine = trained.spy.calls
    assert not head.backbone_trainable
    assert head.learning_rate == pytest.approx(trained.config.learning_rate)
    assert not any(head.changed.values()), "phase 1 changed the frozen backbone"
    assert head.head_changed, "phase 1 did not train the head"

    assert fine.backbone_trainable
    assert fine.learning_rate == pytest.approx(trained.config.fine_tune_learning_rate)
    assert fine.moving_stats, "the backbone has no batch-norm moving statistics?"
    moved = [p for p in fine.moving_stats if fine.changed[p]]
    assert not moved, f"BN layers ran in training mode during fine-tuning: {moved[:3]}"
    frozen = set(fine.changed) - set(fine.trainable_paths)
    assert set(fine.moving_stats) <= frozen
    assert not [p for p in frozen if fine.changed[p]]
    trained_fraction = np.mean([fine.changed[p] for p in fine.trainable_paths])
    assert trained_fraction > 0.9, f"only {trained_fraction:.0%} of backbone weights changed"
    assert fine.head_changed


# ------------------------------------------------------------------------------ weights
def test_weights_path_loads_the_backbone_file(trained):
    import keras
    from _training_fixtures import IMAGE_SIZE

    from snapcat.train.modeling import ModelSpec, build_model

    # What train() started from is the file's content...
    started = trained.spy.calls[0].backbone_before
    assert len(started) == len(trained.saved_backbone)
    for got, want in zip(started, trained.saved_backbone, strict=True):
        np.testing.assert_array_equal(got, want)

    # ...and build_model alone loads the same, where a fresh random backbone would differ.
    spec = ModelSpec(num_classes=3, image_size=IMAGE_SIZE, weights=str(trained.weights_file))
    _, backbone = build_model(spec)
    for w, want in zip(backbone.weights, trained.saved_backbone, strict=True):
        np.testing.assert_array_equal(w.numpy(), want)
    keras.utils.set_random_seed(trained.config.seed)
    _, fresh = build_model(replace(spec, weights="none"))
    for w, want in zip(fresh.weights, trained.saved_backbone, strict=True):
        if np.ptp(want) > 0:  # BN's gamma/beta start at the same constants either way
            assert not np.array_equal(w.numpy(), want), w.path


def test_weights_path_that_does_not_exist(tmp_path):
    from snapcat.train.modeling import WeightsUnavailableError, resolve_weights

    with pytest.raises(WeightsUnavailableError, match="no such weights file"):
        resolve_weights("xception", str(tmp_path / "missing.weights.h5"))


def test_imagenet_without_network_fails_fast(offline):
    from snapcat.train.modeling import (
        BACKBONES,
        WeightsUnavailableError,
        keras_cache_dir,
        resolve_weights,
    )

    assert keras_cache_dir() == offline / "models"
    downloadable = [name for name, b in BACKBONES.items() if b.weights_file]
    assert {"xception", "inceptionv3"} <= set(downloadable)
    for backbone in downloadable:
        started = time.monotonic()
        with pytest.raises(WeightsUnavailableError) as caught:
            resolve_weights(backbone, "imagenet")
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert "\n" not in message
        assert str(keras_cache_dir() / BACKBONES[backbone].weights_file) in message
        assert "--weights none" in message and "--weights PATH" in message


def test_imagenet_from_the_keras_cache_needs_no_network(offline):
    from snapcat.train.modeling import BACKBONES, keras_cache_dir, resolve_weights

    cached = keras_cache_dir() / BACKBONES["xception"].weights_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in")  # only its presence is checked here
    assert resolve_weights("xception", "imagenet") == "imagenet"


def test_failed_start_does_not_block_a_corrected_rerun(offline, prepared, tmp_path):
    """The error tells people to pass --weights none; doing so on the same --output must work."""
    from snapcat.train.modeling import WeightsUnavailableError
    from snapcat.train.trainer import TrainConfig, _prepare_workdir, train

    config = TrainConfig(data=str(prepared), output=str(tmp_path / "m"), weights="imagenet")
    with pytest.raises(WeightsUnavailableError):
        train(config)
    _prepare_workdir(replace(config, weights="none"))  # no "other settings" error
    saved = json.loads((tmp_path / "m" / "training" / "config.json").read_text())
    assert saved["weights"] == "none"


def test_cli_imagenet_without_network_exits_2_with_one_line(prepared, tmp_path, closed_port):
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    # The CLI's own main(), with the weights host pointed at a closed port (see `closed_port`).
    code = (
        "import sys, snapcat.train.modeling as m; "
        f"m.WEIGHTS_HOST = ('127.0.0.1', {closed_port}); "
        "from snapcat.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = ["train", "--data", str(prepared), "--output", str(tmp_path / "m")]
    argv += ["--weights", "imagenet", "--epochs", "1"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        env=_env(KERAS_HOME=str(keras_home)),
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard: the refusal takes seconds
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("snapcat train: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == errors[0]
    assert "ImageNet weights" in errors[0] and "--weights none" in errors[0]
    assert not list((tmp_path / "m").glob("[0-9]*")), "nothing may be exported"


def test_image_size_below_the_backbone_minimum(prepared, tmp_path):
    from snapcat.train.modeling import ModelSpec, build_model
    from snapcat.train.trainer import TrainConfig, TrainingError, train

    with pytest.raises(ValueError, match="at least 75 px"):
        build_model(ModelSpec(backbone="inceptionv3", image_size=71, weights="none"))
    config = TrainConfig(
        data=str(prepared), output=str(tmp_path / "m"), backbone="inceptionv3", weights="none"
    )
    with pytest.raises(TrainingError, match="75"):  # the CLI prints it without a traceback
        train(config)


# ------------------------------------------------------------------------------ backbones
@pytest.mark.long
def test_inceptionv3_trains_and_exports(prepared, prepared_stats, tmp_path):
    from _training_fixtures import FitSpy

    from snapcat.dataset.shards import read_split
    from snapcat.train.export import ServingModel
    from snapcat.train.trainer import TrainConfig, train

    config = TrainConfig(
        data=str(prepared),
        output=str(tmp_path / "m"),
        backbone="inceptionv3",
        mode="feature-extraction",
        weights="none",
        image_size=75,  # prepared at 71: the signature resizes
        epochs=1,
        batch_size=BATCH_SIZE,
    )
    spy = FitSpy()
    with spy.active():
        summary = train(config)
    (call,) = spy.calls
    assert spy.backbone.name.startswith("inception_v3")
    assert not call.backbone_trainable and not any(call.changed.values()) and call.head_changed
    assert summary["epochs_run"] == 1

    served = ServingModel(str(tmp_path / "m"))
    assert served.version_dir == summary["version_dir"]
    assert served.info.backbone == "inceptionv3"
    assert served.info.image_size == 75
    assert list(served.info.classes) == prepared_stats["classes"]
    images = [r["image"] for r in read_split(str(prepared), "test")[:5]]
    probabilities = served.predict(images)
    assert probabilities.shape == (5, len(prepared_stats["classes"]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------ checkpoints
def test_kept_epoch_follows_the_selection_rule_and_is_what_was_exported(trained, prepared):
    """Issue 22: the kept epoch is the lowest validation loss (later on ties) with enough
    validation photos, else the last; the card says which rule and why."""
    from _training_fixtures import history_rows

    from snapcat.dataset.shards import read_split
    from snapcat.evaluate.metrics import classification_metrics
    from snapcat.train.export import ServingModel
    from snapcat.train.selection import select_epoch, selection_rule

    rows = history_rows(trained.output / "training" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    val_top3 = [float(r["val_top3"]) for r in rows]
    card = json.loads((trained.version_dir / "model_card.json").read_text("utf-8"))
    result = card["result"]
    n_validation = sum(card["data"]["splits"]["validation"].values())
    rule = selection_rule(n_validation)
    assert result["selection"]["rule"] == rule.rule and result["selection"]["why"] == rule.why
    history = [{k: float(v) for k, v in r.items()} for r in rows]
    best = int(select_epoch(history, rule)["epoch"])
    assert result["monitor"] == rule.monitor
    assert result["best_epoch"] == best + 1 == trained.summary["best_epoch"]
    assert result["epochs_run"] == 2

    # The exported weights are the best epoch's: they reproduce its validation top-3.
    records = read_split(str(trained.config.data), "validation")
    served = ServingModel(str(trained.version_dir))
    probabilities = served.predict([r["image"] for r in records])
    classes = list(served.info.classes)
    metrics = classification_metrics([r["slug"] for r in records], probabilities, classes, classes)
    assert metrics["top3"] == pytest.approx(val_top3[best], abs=1e-4)


def test_rerunning_a_finished_training_is_a_no_op(trained):
    from snapcat.contract.model_info import list_versions
    from snapcat.train.trainer import train

    history = (trained.output / "training" / "history.csv").read_text()
    versions = list_versions(str(trained.output))
    started = time.monotonic()
    summary = train(trained.config)
    assert time.monotonic() - started < 20
    assert summary["version_dir"] == trained.summary["version_dir"]
    assert list_versions(str(trained.output)) == versions
    assert (trained.output / "training" / "history.csv").read_text() == history


def test_changed_settings_on_the_same_output(trained):
    from snapcat.train.trainer import TrainingError, train

    saved = (trained.output / "training" / "config.json").read_text()
    with pytest.raises(TrainingError, match=r"other settings \(batch_size, epochs\)"):
        train(replace(trained.config, epochs=5, batch_size=8))
    assert (trained.output / "training" / "config.json").read_text() == saved


# ------------------------------------------------------------------------------ resume
def _wait_for(predicate, timeout: float, process: subprocess.Popen | None = None, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"train exited ({process.returncode}) before {what}")
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.mark.long
def test_resume_after_a_killed_run_continues_from_the_saved_epoch(prepared, tmp_path):
    from _training_fixtures import history_rows

    out = tmp_path / "m"
    command = [sys.executable, "-m", "snapcat.cli", "train", "--data", str(prepared)]
    command += ["--output", str(out), "--weights", "none", "--mode", "feature-extraction"]
    command += ["--epochs", "3", "--batch-size", "16", "--no-augment"]
    history = out / "training" / "history.csv"
    log = tmp_path / "first.log"

    with open(log, "w") as handle:
        first = subprocess.Popen(command, env=_env(), stdout=handle, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: len(history_rows(history)) >= 1, 180, first, "the first epoch")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    before = history_rows(history)
    assert 1 <= len(before) < 3, "the run finished before it could be killed"
    assert not list(out.glob("[0-9]*")), "killed before the export"

    second = subprocess.run(
        command, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stderr[-3000:]
    after = history_rows(history)
    assert [int(r["epoch"]) for r in after] == [0, 1, 2]  # each epoch once: none re-trained
    assert after[: len(before)] == before  # the killed run's epochs are kept as they were
    state = json.loads((out / "training" / "state.json").read_text())
    version_dir = Path(state["exported"])
    assert version_dir.parent == out and version_dir.name.isdigit()
    assert (version_dir / "saved_model.pb").is_file()
    assert state["summary"]["epochs_run"] == 3
    assert f"exported {version_dir}" in second.stdout


# ------------------------------------------------------------------------------ calibration
def test_calibration_is_fitted_on_validation_and_served(trained, prepared_stats):
    """The temperature is fitted on the validation split after training and is inside the
    served signature: the served scores' NLL on validation is the fitted 'after' figure."""
    from snapcat.dataset.shards import read_split
    from snapcat.stats import nll
    from snapcat.train.export import ServingModel

    card = json.loads((trained.version_dir / "model_card.json").read_text("utf-8"))
    fitted = card["calibration"]
    n_validation = sum(prepared_stats["splits"]["validation"].values())
    from snapcat.train.calibration_fit import MIN_CALIBRATION_PHOTOS

    assert fitted["photos"] == n_validation
    if n_validation < MIN_CALIBRATION_PHOTOS:  # T = 1, and the card says why
        assert fitted["fitted_on"] is None and fitted["temperature"] == 1.0
        assert "too few validation photos" in fitted["uncalibrated_reason"]
    elif fitted["fitted_on"] is None:
        assert "did not lower held-out validation NLL" in fitted["uncalibrated_reason"]
    assert fitted["target_precision"] == 0.95
    assert fitted["nll_after"] <= fitted["nll_before"]
    served = ServingModel(str(trained.version_dir))
    assert served.info.temperature == fitted["temperature"] > 0
    assert served.info.confidence_threshold == fitted["confidence_threshold"]
    records = read_split(str(trained.config.data), "validation")
    classes = list(served.info.classes)
    labels = np.array([classes.index(r["slug"]) for r in records])
    probabilities = served.predict([r["image"] for r in records])
    assert nll(probabilities, labels) == pytest.approx(fitted["nll_after"], abs=1e-3)


def test_without_validation_photos_the_model_is_exported_uncalibrated(caplog):
    from snapcat.train.trainer import calibrate

    assert calibrate(model=None, val_ds=None, target_precision=0.95) is None
    assert "uncalibrated" in caplog.text


@pytest.mark.long
def test_checkpoints_outside_the_output_survive_a_lost_output(prepared, tmp_path):
    """A pod whose attempt finished training but died before its output was uploaded: the retry
    gets a fresh, empty output folder and the same checkpoint folder (the run's workspace). It
    exports again from the kept best weights instead of training again."""
    from _training_fixtures import FitSpy, history_rows

    from snapcat.train.trainer import TrainConfig, train

    checkpoints = tmp_path / "workspace" / "train"
    config = TrainConfig(
        data=str(prepared),
        output=str(tmp_path / "attempt-1"),
        mode="feature-extraction",
        weights="none",
        epochs=1,
        batch_size=BATCH_SIZE,
        augment=False,
        checkpoint_dir=str(checkpoints),
    )
    first = train(config)
    assert Path(first["version_dir"]).parent == tmp_path / "attempt-1"
    assert (checkpoints / "best.weights.h5").is_file()  # kept: the output may yet be lost
    assert not (tmp_path / "attempt-1" / "training" / "state.json").exists()
    # the report's curves read OUTPUT/training/history.csv
    copied = tmp_path / "attempt-1" / "training" / "history.csv"
    assert history_rows(copied) == history_rows(checkpoints / "history.csv")

    spy = FitSpy(dry=True)
    with spy.active():
        second = train(replace(config, output=str(tmp_path / "attempt-2")))
    assert spy.calls == []  # nothing trained again
    assert Path(second["version_dir"]).parent == tmp_path / "attempt-2"
    assert (Path(second["version_dir"]) / "saved_model.pb").is_file()
    assert second["best_epoch"] == first["best_epoch"] == 1
    assert len(history_rows(checkpoints / "history.csv")) == 1


def test_history_skips_values_keras_could_not_fill(tmp_path):
    """Without a validation split Keras' CSVLogger writes NA for the val_ columns; reading the
    history (best epoch, resume, report curves) must not fail on them."""
    from snapcat.train.trainer import best_so_far, read_history

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,top3,val_top3\n0,2.0,0.5,NA\n1,1.0,0.8,NA\n")
    assert read_history(history) == [
        {"epoch": 0, "loss": 2.0, "top3": 0.5},
        {"epoch": 1, "loss": 1.0, "top3": 0.8},
    ]
    assert best_so_far(history, "loss") == 1.0  # the lowest loss
    assert best_so_far(history, "val_top3") is None
