"""``snapcat train``: fit the classifier on a prepared dataset and export it for TF Serving."""

from __future__ import annotations

import argparse

from snapcat.commands import DefaultsHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.train.trainer import BACKBONE_NAMES, MODES, TrainConfig

    d = TrainConfig(data="", output="")
    p = sub.add_parser(
        "train",
        formatter_class=DefaultsHelpFormatter,
        help="train and export a model (resumes a killed run)",
        description=(
            "Trains an ImageNet backbone with a softmax head over the dataset's categories and "
            "exports MODEL_DIR/<version>/ (TF Serving layout). Re-running the same command on the "
            "same --output resumes from the last finished epoch."
        ),
    )
    p.add_argument("--data", required=True, help="prepared dataset folder (snapcat prepare)")
    p.add_argument("--output", required=True, help="model folder (MODEL_DIR)")
    p.add_argument(
        "--backbone",
        choices=BACKBONE_NAMES,
        default=d.backbone,
        help="xception (default; best on GPUs), inceptionv3, or efficientnet-lite0 (a sixth of "
        "the CPU per photo; its ImageNet weights come installed, no download)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=d.mode,
        help="two-phase: train the head frozen, then fine-tune everything (default)",
    )
    p.add_argument(
        "--weights",
        default=d.weights,
        help="imagenet (default; baked into the training image, installed with snapcat for "
        "efficientnet-lite0), none, or a PATH to backbone weights (.h5 / .weights.h5)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="model input size (default: the size the data was prepared at)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs in all")
    p.add_argument(
        "--head-epochs",
        type=int,
        default=None,
        help="two-phase: epochs with a frozen backbone (default: a third)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per replica")
    p.add_argument(
        "--learning-rate",
        type=float,
        default=d.learning_rate,
        help="head learning rate (feature extraction, two-phase first phase)",
    )
    p.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        default=None,
        help="whole-network learning rate (fine-tuning, two-phase second phase); default: the "
        "backbone's recipe (1e-5 for Xception/InceptionV3, 1e-4 for EfficientNet-Lite0)",
    )
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout before the head")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=d.augment,
        help="random flips, zoom, shifts, rotation and brightness/contrast jitter while training",
    )
    p.add_argument(
        "--mixed-precision",
        choices=("auto", "on", "off"),
        default=d.mixed_precision,
        help="mixed float16 compute (auto: on when every GPU has tensor cores)",
    )
    p.add_argument(
        "--early-stopping-patience",
        type=int,
        default=d.early_stopping_patience,
        help="epochs without improvement before stopping",
    )
    p.add_argument(
        "--confident-precision",
        type=float,
        default=d.confident_precision,
        help="top-3 precision (on the validation split) that answers flagged confident must "
        "reach; sets the threshold stored with the model",
    )
    p.add_argument(
        "--checkpoint-dir",
        help="where checkpoints, history and run state go (default OUTPUT/training): a folder "
        "that outlives the process, e.g. a Kubeflow workspace volume",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard a previous run in --output (and --checkpoint-dir)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from snapcat.commands import config_from_args
    from snapcat.train.trainer import TrainConfig, train

    config = config_from_args(
        TrainConfig, args, defaults=("shuffle_buffer", "min_selection_photos")
    )
    summary = train(config)
    best = summary.get("best", {})
    print(f"exported {summary['version_dir']}")
    if best:
        print(
            f"best epoch {summary['best_epoch']}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in best.items() if "top" in k)
        )
    return 0
