"""``snapcat train``: fits the classifier on a prepared dataset and exports it for TF Serving.

It reads like the keras-io transfer-learning recipe, one function per step: read the dataset's
stats, build the input pipelines, build the model, then per phase (head with a frozen backbone,
then fine-tuning) compile and fit with callbacks, and finally export the best epoch.

Training is resumable at epoch granularity because GPU nodes are preemptible: every epoch ends
with a Keras ``BackupAndRestore`` backup and an entry in ``state.json`` in the checkpoint folder
(``OUTPUT/training`` unless ``checkpoint_dir`` says otherwise), so re-running the same command
continues where the killed run stopped. On Kubeflow the checkpoint folder must outlive the pod: the
pipeline points it at the run's workspace volume, not at the output artifact's scratch folder.
Which epoch is exported follows :mod:`snapcat.train.selection`: the lowest validation loss (later epoch
on ties), or the last epoch of the fixed schedule when the validation split is too small to
choose.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import posixpath
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import fsspec

from snapcat import storage
from snapcat.contract.confidence import DEFAULT_TARGET_PRECISION
from snapcat.errors import SnapcatError
from snapcat.train.calibration_fit import Calibration, fit_calibration, predict_labelled
from snapcat.train.selection import (
    MIN_SELECTION_PHOTOS,
    SelectionRule,
    is_improvement,
    select_epoch,
    selection_rule,
)

log = logging.getLogger(__name__)

MODES = ("two-phase", "feature-extraction", "fine-tuning")
#: The names of :data:`snapcat.train.modeling.BACKBONES`, importable without Keras (CLI choices).
BACKBONE_NAMES = ("xception", "inceptionv3", "efficientnet-lite0")
TRAINING_SUBDIR = "training"


class TrainingError(SnapcatError, ValueError):
    """A training request that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class Recipe:
    """A backbone's defaults for what ``snapcat train`` leaves open, and where they come from."""

    fine_tune_learning_rate: float
    head_fraction: float  # two-phase: the share of the epochs with the backbone frozen
    source: str


#: Per-backbone defaults. EfficientNet-Lite0's were measured on real photos by
#: ``benchmarks/real_photo_bench.py`` (docs/training.md has the figures); Xception's and
#: InceptionV3's are keras-io's transfer-learning recipe, unmeasured here (no ImageNet weights
#: for them on this machine).
RECIPES: dict[str, Recipe] = {
    "xception": Recipe(1e-5, 1 / 3, "keras-io transfer-learning recipe (unmeasured here)"),
    "inceptionv3": Recipe(1e-5, 1 / 3, "keras-io transfer-learning recipe (unmeasured here)"),
    "efficientnet-lite0": Recipe(
        1e-4, 1 / 3, "measured: benchmarks/real_photo_bench.py on the real-photo check set"
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    data: str
    output: str
    backbone: str = "xception"
    mode: str = "two-phase"
    weights: str = "imagenet"
    image_size: int | None = None  # None: the size the dataset was prepared at
    epochs: int = 12
    head_epochs: int | None = None  # two-phase: epochs with the backbone frozen (default: 1/3)
    batch_size: int = 32
    learning_rate: float = 1e-3  # the head (feature extraction, two-phase's first phase)
    #: the whole network (fine-tuning, second phase); None: the backbone's recipe
    fine_tune_learning_rate: float | None = None
    dropout: float = 0.2
    seed: int = 0
    augment: bool = True
    mixed_precision: str = "auto"  # auto | on | off
    early_stopping_patience: int = 4
    shuffle_buffer: int = 2048
    overwrite: bool = False
    #: top-3 precision the ``confident`` answers must reach on validation (snapcat.train.calibration_fit)
    confident_precision: float = DEFAULT_TARGET_PRECISION
    #: fewer validation photos than this: no epoch selection, the last epoch is kept
    min_selection_photos: int = MIN_SELECTION_PHOTOS
    # Where checkpoints, history and run state live (default OUTPUT/training): a folder that
    # survives the process, e.g. a KFP workspace volume when OUTPUT is a pod's scratch space.
    checkpoint_dir: str | None = None

    def resume_key(self) -> dict:
        """Settings that must match for a re-run to continue the previous one. Not where the data,
        output or checkpoints are: a retried or re-run pipeline mounts them elsewhere; the data's
        identity is checked by content (:func:`dataset_digest`)."""
        # calibration happens after training: its setting does not change what is resumed
        where = ("overwrite", "data", "output", "checkpoint_dir", "confident_precision")
        return {k: v for k, v in asdict(self).items() if k not in where}

    def with_recipe(self) -> TrainConfig:
        """This config with what it leaves open filled from the backbone's :data:`RECIPES`."""
        recipe = RECIPES.get(self.backbone, RECIPES["xception"])
        head = self.head_epochs
        if head is None and self.mode == "two-phase":
            head = max(1, round(self.epochs * recipe.head_fraction))
        lr = self.fine_tune_learning_rate
        return replace(
            self,
            head_epochs=head,
            fine_tune_learning_rate=recipe.fine_tune_learning_rate if lr is None else lr,
        )

    @property
    def workdir(self) -> Path:
        return Path(self.checkpoint_dir or Path(self.output, TRAINING_SUBDIR))

    @property
    def separate_checkpoints(self) -> bool:
        return self.workdir.resolve() != Path(self.output, TRAINING_SUBDIR).resolve()


# ------------------------------------------------------------------------------ input pipeline
def make_dataset(
    data_dir: str,
    split: str,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: bool,
    seed: int,
    shuffle_buffer: int = 2048,
    count: int | None = None,
    source_size: int | None = None,
):
    """A ``tf.data`` pipeline of (pixels float32 0..255, label) batches from the prepared shards.

    Shards are read in parallel, decoded in parallel by the exported model's own decoder
    (:func:`snapcat.train.tf_image.decode_canonical`), shuffled and augmented only for training.
    ``count``, the number of records (from stats.json), is asserted so progress bars know it;
    ``source_size`` is the size the shards were prepared at (default: ``image_size``).
    """
    import tensorflow as tf

    from snapcat.dataset.shards import feature_spec
    from snapcat.train.augment import augment_batch
    from snapcat.train.tf_image import decode_canonical, decode_canonical_uint8

    files = sorted(tf.io.gfile.glob(f"{data_dir.rstrip('/')}/{split}-*.tfrecord"))
    if not files:
        raise TrainingError(f"{data_dir} has no {split} shards")
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=autotune,
        deterministic=not training,
    )
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    spec = feature_spec()

    augmenting = training and augment
    source_size = source_size or image_size

    def parse(serialized):
        example = tf.io.parse_single_example(serialized, spec)
        if augmenting:  # uint8 pixels: the fused augmentation resamples them to image_size
            pixels = decode_canonical_uint8(example["image"], source_size)
        else:
            pixels = decode_canonical(example["image"], image_size)
        return pixels, example["label"]

    ds = ds.map(parse, num_parallel_calls=autotune, deterministic=not training)
    if count is not None:  # lets Keras show a real progress bar on the first epoch
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    ds = ds.batch(batch_size)
    if augmenting:
        ds = ds.map(lambda x, y: (augment_batch(x, image_size), y), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def keras_verbosity() -> int:
    """A progress bar on a terminal; one line per epoch in log files and pipeline pods, where a
    progress bar is a stream of carriage returns and ANSI codes."""
    return 1 if sys.stdout.isatty() else 2


# ------------------------------------------------------------------------------ devices
def choose_strategy():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), gpus
    return tf.distribute.get_strategy(), gpus


def mixed_precision_wanted(setting: str, gpus: list) -> bool:
    """``auto``: on when every visible GPU has tensor cores (compute capability 7.0 or newer)."""
    if setting == "on":
        return True
    if setting == "off" or not gpus:
        return False
    import tensorflow as tf

    capabilities = [
        tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus
    ]
    return all(c is not None and tuple(c) >= (7, 0) for c in capabilities)


# ------------------------------------------------------------------------------ state
class RunState:
    """``training/state.json``: which phases are done, so a re-run resumes instead of restarting."""

    def __init__(self, folder: Path):
        self.path = folder / "state.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


def best_so_far(history_csv: Path, monitor: str) -> float | None:
    """The lowest monitored loss already logged, so a resumed run's checkpoint does not replace
    the best epoch with a worse one."""
    values = [row[monitor] for row in read_history(history_csv) if monitor in row]
    return min(values) if values else None


def read_history(history_csv: Path) -> list[dict]:
    """History rows, one per epoch (a resumed epoch logged twice keeps its last entry). Values
    Keras' CSVLogger could not fill (``NA``: a metric an epoch did not log) are left out."""
    if not history_csv.exists():
        return []
    with open(history_csv, newline="") as handle:
        rows = {int(r["epoch"]): r for r in csv.DictReader(handle)}
    return [
        {
            k: (float(v) if k != "epoch" else int(v))
            for k, v in rows[e].items()
            if v not in ("", "NA")
        }
        for e in sorted(rows)
    ]


# ------------------------------------------------------------------------------ training
def _phases(config: TrainConfig) -> list[dict]:
    """(name, first epoch, last epoch, backbone trainable, learning rate) for the chosen mode."""
    if config.mode == "feature-extraction":
        return [
            dict(name="head", start=0, end=config.epochs, trainable=False, lr=config.learning_rate)
        ]
    if config.mode == "fine-tuning":
        return [
            dict(
                name="fine-tune",
                start=0,
                end=config.epochs,
                trainable=True,
                lr=config.fine_tune_learning_rate,
            )
        ]
    head = config.head_epochs if config.head_epochs is not None else math.ceil(config.epochs / 3)
    head = min(max(head, 1), config.epochs)
    assert config.fine_tune_learning_rate is not None, "train() fills it from the recipe"
    phases = [dict(name="head", start=0, end=head, trainable=False, lr=config.learning_rate)]
    if config.epochs > head:
        phases.append(
            dict(
                name="fine-tune",
                start=head,
                end=config.epochs,
                trainable=True,
                lr=config.fine_tune_learning_rate,
            )
        )
    return phases


def _has_progress(workdir: Path) -> bool:
    """Whether an earlier run left something a re-run would resume from (a finished epoch's backup
    or log line, a finished phase). One that failed before its first epoch ended (weights not
    available, say) left nothing, so a corrected command may reuse the folder."""
    return (
        (workdir / "state.json").exists()
        or (workdir / "history.csv").exists()
        or any(workdir.glob("backup-*"))
    )


def dataset_digest(data: str) -> str:
    """The prepared dataset's identity: its stats.json and every file's name and size, so a
    re-prepared copy of the same photos elsewhere matches and different photos do not."""
    import hashlib

    fs, root = fsspec.core.url_to_fs(data)
    root = root.rstrip("/")
    digest = hashlib.sha256()
    with fs.open(f"{root}/stats.json", "rb") as handle:
        digest.update(handle.read())
    listing = fs.find(root, detail=True)
    for path in sorted(listing):
        digest.update(f"{posixpath.relpath(path, root)}\0{listing[path].get('size')}\n".encode())
    return digest.hexdigest()[:16]


def _prepare_workdir(config: TrainConfig) -> Path:
    for what, where in (("--output", config.output), ("--checkpoint-dir", config.checkpoint_dir)):
        if where and storage.is_remote(where):
            raise TrainingError(
                f"{what} must be a local or mounted path (on Kubeflow: the output artifact's "
                "folder and the run's workspace volume)"
            )
    output = Path(config.output)
    workdir = config.workdir
    if config.overwrite:
        for folder in {output, workdir}:
            shutil.rmtree(folder, ignore_errors=True)
    saved = workdir / "config.json"
    key = {**config.resume_key(), "data_digest": dataset_digest(config.data)}
    if saved.exists() and _has_progress(workdir):
        previous = json.loads(saved.read_text())
        if previous != key:
            changed = sorted(k for k in key if previous.get(k) != key[k])
            raise TrainingError(
                f"{workdir} holds a training run with other settings ({', '.join(changed)}); "
                "re-run with the same settings to resume, or use a new --output / "
                "--checkpoint-dir or --overwrite"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(key, indent=2))
    return workdir


# ------------------------------------------------------------------------------ the recipe
@dataclass
class TrainingData:
    """What the datasets step hands to fitting and export."""

    stats: dict
    classes: list[str]
    image_size: int
    train: object  # tf.data.Dataset
    validation: object | None
    class_weight: dict[int, float]
    selection: SelectionRule

    @property
    def monitor(self) -> str | None:
        """The loss the kept epoch is chosen on; None: the last epoch is kept."""
        return self.selection.monitor


@dataclass
class Devices:
    strategy: object
    gpus: list
    mixed_precision: bool


def read_stats(config: TrainConfig) -> tuple[dict, int]:
    """The prepared dataset's stats.json, and the model input size checked against the
    backbone."""
    storage.require_complete(config.data, "prepared dataset")
    with fsspec.open(storage.join(config.data, "stats.json"), "r", encoding="utf-8") as handle:
        stats = json.load(handle)
    if sum(stats["splits"]["train"].values()) == 0:
        raise TrainingError(f"{config.data} has no training photos")
    trained = [slug for slug, n in stats["splits"]["train"].items() if n > 0]
    if len(trained) < 2:
        raise TrainingError(
            f"{config.data} has training photos of {len(trained)} category "
            f"({', '.join(trained) or 'none'}): a classifier needs at least two. Prepare data "
            "with photos of at least two trainable categories."
        )
    image_size = config.image_size or int(stats["image_size"])
    from snapcat.train.modeling import check_input_size

    try:
        check_input_size(config.backbone, image_size)
    except ValueError as exc:
        raise TrainingError(f"{exc}: pass a larger --image-size") from exc
    return stats, image_size


def set_up_devices(config: TrainConfig) -> Devices:
    """Seeds, the distribution strategy (all local GPUs) and the mixed-precision policy."""
    import keras

    keras.utils.set_random_seed(config.seed)
    strategy, gpus = choose_strategy()
    mixed = mixed_precision_wanted(config.mixed_precision, gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    log.info(
        "devices: %d GPU(s), %d replica(s), mixed precision %s",
        len(gpus),
        strategy.num_replicas_in_sync,
        "on" if mixed else "off",
    )
    return Devices(strategy, gpus, mixed)


def make_datasets(
    config: TrainConfig, stats: dict, image_size: int, devices: Devices
) -> TrainingData:
    """Training (shuffled, augmented) and validation pipelines, and the class weights."""
    photos = {split: sum(counts.values()) for split, counts in stats["splits"].items()}
    batch_size = config.batch_size * devices.strategy.num_replicas_in_sync
    train_ds = make_dataset(
        config.data,
        "train",
        image_size,
        batch_size,
        training=True,
        augment=config.augment,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        count=photos["train"],
        source_size=int(stats["image_size"]),
    )
    val_ds = None
    if photos["validation"] > 0:
        val_ds = make_dataset(
            config.data,
            "validation",
            image_size,
            batch_size,
            training=False,
            augment=False,
            seed=config.seed,
            count=photos["validation"],
        )
    else:
        log.warning("no validation photos: uncalibrated, never 'confident'")
    selection = selection_rule(photos["validation"], config.min_selection_photos)
    log.info("epoch selection: %s", selection.why)
    classes = list(stats["classes"])
    weights = stats["class_weights"]
    return TrainingData(
        stats=stats,
        classes=classes,
        image_size=image_size,
        train=train_ds,
        validation=val_ds,
        class_weight={i: float(weights.get(slug, 1.0)) for i, slug in enumerate(classes)},
        selection=selection,
    )


def make_callbacks(config: TrainConfig, phase: dict, data: TrainingData, workdir: Path) -> list:
    """Per phase: a resumable backup, the kept-epoch checkpoint and early stopping (only when the
    validation split can choose an epoch), the history log, learning-rate reduction on plateau
    and TensorBoard."""
    import keras

    history_csv = workdir / "history.csv"
    callbacks = [
        # Two backups: a pod killed while writing one still resumes from the other.
        keras.callbacks.BackupAndRestore(
            str(workdir / f"backup-{phase['name']}"), double_checkpoint=True
        ),
    ]
    if data.selection.selecting:
        callbacks += [
            # a resumed run must not replace the best epoch with a worse one
            KeepBestEpoch(workdir / "best.weights.h5", best_so_far(history_csv, data.monitor)),
            keras.callbacks.EarlyStopping(
                monitor=data.monitor, mode="min", patience=config.early_stopping_patience
            ),
        ]
    return callbacks + [
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss" if data.validation is not None else "loss",
            factor=0.3,
            patience=2,
            min_lr=1e-7,
        ),
        keras.callbacks.TensorBoard(str(workdir / "tensorboard")),
    ]


def _keep_best_epoch_class():
    import keras

    class KeepBestEpoch(keras.callbacks.Callback):
        """Saves the weights whenever validation loss is lower than or *equal* to the best so
        far (:func:`snapcat.train.selection.is_improvement`): on ties the later epoch is kept, which
        Keras' ``ModelCheckpoint`` (strictly better only) cannot do."""

        def __init__(self, path: Path, best: float | None):
            super().__init__()
            self.path, self.best = path, best

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_loss")
            if value is not None and is_improvement(float(value), self.best):
                self.best = float(value)
                self.model.save_weights(str(self.path))

    return KeepBestEpoch


def KeepBestEpoch(path: Path, best: float | None):  # noqa: N802 - a class, built lazily
    return _keep_best_epoch_class()(path, best)


def fit_phase(
    model,
    backbone,
    pretrained: bool,
    phase: dict,
    config: TrainConfig,
    data: TrainingData,
    devices: Devices,
    workdir: Path,
) -> None:
    """One phase of the recipe: (un)freeze the backbone, compile with the phase's learning rate,
    fit its epochs (resuming a killed one), and record it as done."""
    import keras

    from snapcat.train.modeling import set_backbone_trainable

    set_backbone_trainable(backbone, phase["trainable"], pretrained=pretrained)
    with devices.strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(phase["lr"]),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[
                keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(
                    k=min(3, len(data.classes)), name="top3"
                ),
            ],
        )
    log.info(
        "phase %s: epochs %d-%d, backbone %s, learning rate %g",
        phase["name"],
        phase["start"] + 1,
        phase["end"],
        "trainable" if phase["trainable"] else "frozen",
        phase["lr"],
    )
    with warnings.catch_warnings():
        # Keras says a tf.data dataset ignores shuffle=True: ours shuffles itself.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(
            data.train,
            validation_data=data.validation,
            epochs=phase["end"],
            initial_epoch=phase["start"],
            class_weight=data.class_weight,
            callbacks=make_callbacks(config, phase, data, workdir),
            verbose=keras_verbosity(),
        )
    model.save_weights(str(workdir / "last_phase.weights.h5"))


def calibrate(model, val_ds, target_precision: float) -> Calibration | None:
    """Temperature and confidence threshold fitted on the validation split's predictions; None
    (exported uncalibrated, never ``confident``) without validation photos."""
    if val_ds is None:
        log.warning("no validation photos: exporting uncalibrated scores, never 'confident'")
        return None
    probabilities, labels = predict_labelled(model, val_ds)
    calibration = fit_calibration(probabilities, labels, target_precision)
    if calibration.uncalibrated_reason:
        log.warning("%s: exported with T = 1", calibration.uncalibrated_reason)
    log.info(
        "calibration on %d validation photos: temperature %.3f, NLL %.3f -> %.3f, "
        "ECE %.3f -> %.3f, confident at top-3 mass >= %s (%.0f%% of photos; precision lower "
        "bound %s)",
        calibration.photos,
        calibration.temperature,
        calibration.nll_before,
        calibration.nll_after,
        calibration.ece_before,
        calibration.ece_after,
        calibration.confidence_threshold,
        100 * (calibration.validation_coverage or 0.0),
        calibration.validation_precision_lower_bound,
    )
    return calibration


def export_best(
    model, config: TrainConfig, data: TrainingData, devices: Devices, workdir: Path
) -> dict:
    """Loads the best epoch's weights and exports them; returns the run's summary."""
    from snapcat.train.export import export_model

    kept_weights = workdir / (
        "best.weights.h5" if data.selection.selecting else "last_phase.weights.h5"
    )
    if kept_weights.exists():
        with warnings.catch_warnings():
            # The checkpoint may hold another phase's optimizer state; only weights matter here.
            warnings.filterwarnings("ignore", message=".*optimizer.*")
            model.load_weights(str(kept_weights))
    history_csv = workdir / "history.csv"
    history = read_history(history_csv)
    best = select_epoch(history, data.selection) or {}
    log.info(
        "kept epoch %s of %d: %s",
        int(best["epoch"]) + 1 if best else None,
        len(history),
        data.selection.why,
    )
    summary = {
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "best": {k: v for k, v in best.items() if k != "epoch"},
        "monitor": data.monitor,
        "selection": data.selection.to_dict(),
        "epochs_run": len(history),
        "mixed_precision": devices.mixed_precision,
        "gpus": len(devices.gpus),
        "parameters": int(model.count_params()),
    }
    calibration = calibrate(model, data.validation, config.confident_precision)
    version_dir = export_model(
        model,
        config.output,
        classes=data.classes,
        image_size=data.image_size,
        jpeg_quality=int(data.stats.get("jpeg_quality", 90)),
        backbone=config.backbone,
        taxonomy_dir=config.data,
        calibration=calibration,
        card={
            "training": {**config.resume_key(), "data": config.data, "image_size": data.image_size},
            "data": data.stats,
            "result": summary,
        },
    )
    if config.separate_checkpoints and history_csv.exists():
        # The report draws the curves from OUTPUT/training/history.csv.
        Path(config.output, TRAINING_SUBDIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(history_csv, Path(config.output, TRAINING_SUBDIR, "history.csv"))
    summary["version_dir"] = version_dir
    summary["calibration"] = calibration.to_dict() if calibration else None
    return summary


def _finished(state: RunState, config: TrainConfig) -> dict | None:
    """The summary of a run that already exported into this output, if there is one."""
    exported = state.data.get("exported")
    if exported and Path(exported).is_dir() and Path(exported).parent == Path(config.output):
        return state.data["summary"]
    return None


def train(config: TrainConfig) -> dict:
    """Trains (or resumes) and exports. Returns a summary with the exported version folder."""
    if config.mode not in MODES:
        raise TrainingError(f"unknown mode {config.mode!r}; choose from {MODES}")
    if not 0.0 < config.confident_precision <= 1.0:
        raise TrainingError("--confident-precision must be in (0, 1]")
    config = config.with_recipe()
    log.info(
        "recipe for %s: fine-tuning rate %g, %s head epochs of %d (%s)",
        config.backbone,
        config.fine_tune_learning_rate,
        config.head_epochs,
        config.epochs,
        RECIPES.get(config.backbone, RECIPES["xception"]).source,
    )
    stats, image_size = read_stats(config)
    workdir = _prepare_workdir(config)
    state = RunState(workdir)
    if finished := _finished(state, config):
        log.info("already trained and exported: %s (use --overwrite to retrain)", finished)
        return finished

    import keras

    from snapcat.train.modeling import ModelSpec, build_model

    devices = set_up_devices(config)
    data = make_datasets(config, stats, image_size, devices)
    spec = ModelSpec(
        backbone=config.backbone,
        num_classes=len(data.classes),
        image_size=image_size,
        weights=config.weights,
        dropout=config.dropout,
    )
    with devices.strategy.scope():
        model, backbone = build_model(spec)

    done = state.data.setdefault("phases_done", [])
    fitted = False
    for phase in _phases(config):
        if phase["name"] in done:
            continue
        if done:  # resuming into a later phase: start from the earlier one's weights
            model.load_weights(str(workdir / "last_phase.weights.h5"))
        fit_phase(model, backbone, spec.pretrained, phase, config, data, devices, workdir)
        fitted = True
        done.append(phase["name"])
        state.save()
    kept = "best.weights.h5" if data.selection.selecting else "last_phase.weights.h5"
    if not fitted and not (workdir / kept).exists():
        raise TrainingError(
            f"{workdir} records a finished training whose weights are gone; use --overwrite to "
            "train again"
        )

    summary = export_best(model, config, data, devices, workdir)
    state.data.update(exported=summary["version_dir"], summary=summary)
    state.save()
    # Big, and the SavedModel has the weights now; kept where the checkpoints outlive the output
    # (a pod killed after the export but before its upload re-exports from them).
    leftovers = []
    if not config.separate_checkpoints:
        leftovers += ["last_phase.weights.h5", "best.weights.h5"]
    elif data.selection.selecting:
        leftovers.append("last_phase.weights.h5")
    for leftover in leftovers:
        (workdir / leftover).unlink(missing_ok=True)
    keras.mixed_precision.set_global_policy("float32")
    return summary
