"""``snapcat train``: fits the classifier on a prepared dataset and exports it for TF Serving.

Training is resumable at epoch granularity because GPU nodes are preemptible: every epoch ends
with a Keras ``BackupAndRestore`` backup and an entry in ``training/state.json`` under the output
folder, so re-running the same command continues where the killed run stopped. The best epoch by
validation top-3 accuracy is kept (the reference notebook monitored val_loss with mode="max" and
kept the worst one) and is what gets exported.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec

from snapcat import storage

log = logging.getLogger(__name__)

MODES = ("two-phase", "feature-extraction", "fine-tuning")
#: The names of :data:`snapcat.modeling.BACKBONES`, importable without Keras (CLI choices).
BACKBONE_NAMES = ("xception", "inceptionv3", "efficientnet-lite0")
TRAINING_SUBDIR = "training"


class TrainingError(ValueError):
    """A training request that cannot run as asked; the message says what to change."""


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
    fine_tune_learning_rate: float = 1e-5  # the whole network (fine-tuning, second phase)
    dropout: float = 0.2
    seed: int = 0
    augment: bool = True
    mixed_precision: str = "auto"  # auto | on | off
    early_stopping_patience: int = 4
    shuffle_buffer: int = 2048
    overwrite: bool = False

    def resume_key(self) -> dict:
        """Settings that must match for a re-run to continue the previous one."""
        return {k: v for k, v in asdict(self).items() if k != "overwrite"}


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
    (:func:`snapcat.tf_image.decode_canonical`), shuffled and augmented only for training.
    ``count``, the number of records (from stats.json), is asserted so progress bars know it;
    ``source_size`` is the size the shards were prepared at (default: ``image_size``).
    """
    import tensorflow as tf

    from snapcat.augment import augment_batch
    from snapcat.shards import feature_spec
    from snapcat.tf_image import decode_canonical, decode_canonical_uint8

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
    """The best monitored value already logged, so a resumed run's checkpoint does not replace
    the best epoch with a worse one."""
    values = [row[monitor] for row in read_history(history_csv) if monitor in row]
    return max(values) if values else None


def read_history(history_csv: Path) -> list[dict]:
    """History rows, one per epoch (a resumed epoch logged twice keeps its last entry)."""
    if not history_csv.exists():
        return []
    with open(history_csv, newline="") as handle:
        rows = {int(r["epoch"]): r for r in csv.DictReader(handle)}
    return [
        {k: (float(v) if k != "epoch" else int(v)) for k, v in rows[e].items() if v != ""}
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


def _prepare_workdir(config: TrainConfig) -> Path:
    if storage.is_remote(config.output):
        raise TrainingError(
            "--output must be a local or mounted path (KFP mounts artifact storage); "
            "copy the exported model to object storage afterwards"
        )
    output = Path(config.output)
    workdir = output / TRAINING_SUBDIR
    saved = workdir / "config.json"
    if config.overwrite and output.exists():
        shutil.rmtree(output)
    if saved.exists() and _has_progress(workdir):
        previous = json.loads(saved.read_text())
        if previous != config.resume_key():
            changed = sorted(
                k for k in config.resume_key() if previous.get(k) != config.resume_key()[k]
            )
            raise TrainingError(
                f"{output} holds a training run with other settings ({', '.join(changed)}); "
                "re-run with the same settings to resume, or use a new --output or --overwrite"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(config.resume_key(), indent=2))
    return workdir


def train(config: TrainConfig) -> dict:
    """Trains (or resumes) and exports. Returns a summary with the exported version folder."""
    if config.mode not in MODES:
        raise TrainingError(f"unknown mode {config.mode!r}; choose from {MODES}")
    storage.require_complete(config.data, "prepared dataset")
    with fsspec.open(storage.join(config.data, "stats.json"), "r", encoding="utf-8") as handle:
        stats = json.load(handle)
    image_size = config.image_size or int(stats["image_size"])
    classes = list(stats["classes"])
    photos = {split: sum(counts.values()) for split, counts in stats["splits"].items()}
    if photos["train"] == 0:
        raise TrainingError(f"{config.data} has no training photos")
    from snapcat.modeling import check_input_size

    try:
        check_input_size(config.backbone, image_size)
    except ValueError as exc:
        raise TrainingError(f"{exc}: pass a larger --image-size") from exc

    workdir = _prepare_workdir(config)
    state = RunState(workdir)
    if state.data.get("exported"):
        log.info(
            "already trained and exported: %s (use --overwrite to retrain)", state.data["exported"]
        )
        return state.data["summary"]

    import keras

    from snapcat.export import export_model
    from snapcat.modeling import ModelSpec, build_model, set_backbone_trainable

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

    batch_size = config.batch_size * strategy.num_replicas_in_sync
    has_validation = photos["validation"] > 0
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
    val_ds = (
        make_dataset(
            config.data,
            "validation",
            image_size,
            batch_size,
            training=False,
            augment=False,
            seed=config.seed,
            count=photos["validation"],
        )
        if has_validation
        else None
    )
    monitor = "val_top3" if has_validation else "top3"
    if not has_validation:
        log.warning("no validation photos: checkpointing on training top-3 accuracy")
    weights = stats["class_weights"]
    class_weight = {i: float(weights.get(slug, 1.0)) for i, slug in enumerate(classes)}

    spec = ModelSpec(
        backbone=config.backbone,
        num_classes=len(classes),
        image_size=image_size,
        weights=config.weights,
        dropout=config.dropout,
    )
    with strategy.scope():
        model, backbone = build_model(spec)

    history_csv = workdir / "history.csv"
    best_weights = workdir / "best.weights.h5"
    for phase in _phases(config):
        if phase["name"] in state.data.get("phases_done", []):
            continue
        if state.data.get("phases_done"):  # resuming into a later phase: start from the earlier one
            model.load_weights(str(workdir / "last_phase.weights.h5"))
        set_backbone_trainable(backbone, phase["trainable"], pretrained=spec.pretrained)
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(phase["lr"]),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[
                    keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1"),
                    keras.metrics.SparseTopKCategoricalAccuracy(
                        k=min(3, len(classes)), name="top3"
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
        callbacks = [
            # Two backups: a pod killed while writing one still resumes from the other.
            keras.callbacks.BackupAndRestore(
                str(workdir / f"backup-{phase['name']}"), double_checkpoint=True
            ),
            keras.callbacks.ModelCheckpoint(
                str(best_weights),
                monitor=monitor,
                mode="max",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=best_so_far(history_csv, monitor),
            ),
            keras.callbacks.CSVLogger(str(history_csv), append=True),
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode="max", patience=config.early_stopping_patience
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss" if has_validation else "loss",
                factor=0.3,
                patience=2,
                min_lr=1e-7,
            ),
            keras.callbacks.TensorBoard(str(workdir / "tensorboard")),
        ]
        with warnings.catch_warnings():
            # Keras says a tf.data dataset ignores shuffle=True: ours shuffles itself.
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=phase["end"],
                initial_epoch=phase["start"],
                class_weight=class_weight,
                callbacks=callbacks,
                verbose=keras_verbosity(),
            )
        model.save_weights(str(workdir / "last_phase.weights.h5"))
        state.data.setdefault("phases_done", []).append(phase["name"])
        state.save()

    if best_weights.exists():
        with warnings.catch_warnings():
            # The checkpoint may hold another phase's optimizer state; only weights matter here.
            warnings.filterwarnings("ignore", message=".*optimizer.*")
            model.load_weights(str(best_weights))
    history = read_history(history_csv)
    best = max(history, key=lambda r: r.get(monitor, -1.0)) if history else {}
    summary = {
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "best": {k: v for k, v in best.items() if k != "epoch"},
        "monitor": monitor,
        "epochs_run": len(history),
        "mixed_precision": mixed,
        "gpus": len(gpus),
        "parameters": int(model.count_params()),
    }
    version_dir = export_model(
        model,
        config.output,
        classes=classes,
        image_size=image_size,
        jpeg_quality=int(stats.get("jpeg_quality", 90)),
        backbone=config.backbone,
        taxonomy_dir=config.data,
        card={
            "training": {**config.resume_key(), "image_size": image_size},
            "data": stats,
            "result": summary,
        },
    )
    summary["version_dir"] = version_dir
    state.data.update(exported=version_dir, summary=summary)
    state.save()
    for leftover in ("last_phase.weights.h5", "best.weights.h5"):
        (workdir / leftover).unlink(missing_ok=True)  # big; the SavedModel has the weights now
    keras.mixed_precision.set_global_policy("float32")
    return summary
