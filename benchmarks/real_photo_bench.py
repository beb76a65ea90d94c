"""Real-photo benchmark: the CLI's defaults against a linear probe on the same frozen features.

On the real-photo check set (:mod:`real_photos`, built from pinned Debian packages), prepared at
224 px with ``snapcat prepare``'s defaults, it measures on the *test* split:

- (a) a **linear probe**: multinomial logistic regression (numpy, L2, full-batch gradient
  descent) on frozen EfficientNet-Lite0 ImageNet features (global average pooled) of the train
  split: what the backbone can do without fine-tuning;
- (b) **the CLI**: ``snapcat train --data ... --backbone efficientnet-lite0`` with nothing else
  (plus any ``--train-args`` to try a variant), then ``snapcat evaluate``'s figures: top-1,
  top-3, macro F1, test ECE before/after temperature scaling, and the ``confident`` flag's
  coverage and top-3 precision on test;
- the gap, CLI minus probe, in points of top-1 (the target: within 5).

    .venv/bin/python benchmarks/real_photo_bench.py [--seeds 0 1] [--train-args "--epochs 9"]

Each seed is a different split (``prepare --seed``) and training seed. CPU only is fine (about
two minutes a seed on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import real_photos  # noqa: E402

BACKBONE = "efficientnet-lite0"
SIZE = 224


def prepare(photos: Path, out: Path, seed: int, validation_fraction: float = 0.1) -> Path:
    from snapcat.dataset.prepare import PrepareConfig, run_prepare

    if not (out / "_SUCCESS").exists():
        run_prepare(
            PrepareConfig(
                input=str(photos / "manifest.csv"),
                output=str(out),
                image_size=SIZE,
                seed=seed,
                validation_fraction=validation_fraction,
                progress=False,
                overwrite=True,
            )
        )
    return out


def features(data: Path, split: str, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """Frozen Lite0 ImageNet features (global average pooled) of a split, and its labels."""
    import keras

    from snapcat.train.modeling import ModelSpec, build_model
    from snapcat.train.trainer import make_dataset

    model, _ = build_model(ModelSpec(BACKBONE, len(stats["classes"]), SIZE, "imagenet", 0.0))
    extractor = keras.Model(model.input, model.get_layer("avg_pool").output)
    ds = make_dataset(str(data), split, SIZE, 32, training=False, augment=False, seed=0)
    xs, ys = [], []
    for pixels, labels in ds.as_numpy_iterator():
        xs.append(extractor.predict_on_batch(pixels))
        ys.append(labels)
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def logistic_regression(x, y, classes: int, l2: float = 1e-3, steps: int = 3000, lr: float = 0.5):
    """Multinomial logistic regression on standardized features (full-batch gradient descent,
    class-balanced like the CLI's training): returns a predict_proba function."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    counts = np.bincount(y, minlength=classes)
    sample_w = (len(y) / (classes * np.maximum(counts, 1)))[y]
    w = np.zeros((z.shape[1], classes))
    b = np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = z @ w + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) * sample_w[:, None] / len(y)
        w -= lr * (z.T @ g + l2 * w)
        b -= lr * g.sum(0)

    def predict(xt):
        logits = ((xt - mean) / std) @ w + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    return predict


def probe(data: Path) -> dict:
    from snapcat.evaluate.metrics import classification_metrics

    stats = json.loads((data / "stats.json").read_text())
    classes = stats["classes"]
    x_train, y_train = features(data, "train", stats)
    x_test, y_test = features(data, "test", stats)
    predict = logistic_regression(x_train, y_train, len(classes))
    m = classification_metrics([classes[i] for i in y_test], predict(x_test), classes, classes)
    return {k: m[k] for k in ("n", "top1", "top3", "macro_f1")}


def cli(data: Path, workdir: Path, seed: int, train_args: list[str]) -> dict:
    from snapcat.evaluate.evaluation import EvaluateConfig, evaluate

    model = workdir / "model"
    command = [
        str(Path(sys.executable).parent / "snapcat"),
        "train",
        "--data",
        str(data),
        "--output",
        str(model),
        "--backbone",
        BACKBONE,
        "--seed",
        str(seed),
        "--overwrite",
        *train_args,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"snapcat train failed:\n{result.stderr[-3000:]}")
    kept = [
        line
        for line in result.stderr.splitlines()
        if "kept epoch" in line or "uncalibrated" in line
    ]
    metrics = evaluate(
        EvaluateConfig(
            data=str(data), model=str(model), output=str(workdir / "eval"), progress=False
        )
    )
    cal = metrics["calibration"]
    card = json.loads(next(model.glob("*/model_card.json")).read_text())
    return {
        "n": metrics["n"],
        "top1": metrics["top1"],
        "top3": metrics["top3"],
        "macro_f1": metrics["macro_f1"],
        "temperature": cal["temperature"],
        "ece_before": cal["ece_before"],
        "ece_after": cal["ece"],
        "confident_coverage": cal["confidence"]["coverage"],
        "confident_top3": cal["confidence"]["top3_confident"],
        "kept": card["result"].get("best_epoch"),
        "epochs_run": card["result"].get("epochs_run"),
        "log": kept,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-args", default="", help="extra `snapcat train` arguments")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / ".cache")
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="prepare's (default 0.1); a larger one lets calibration and the threshold act",
    )
    args = parser.parse_args(argv)
    photos = real_photos.build(args.cache / "real-photos")
    rows = []
    for seed in args.seeds:
        name = f"prepared-{SIZE}-seed{seed}-val{args.validation_fraction:g}"
        data = prepare(
            photos, args.cache / "real-photo-bench" / name, seed, args.validation_fraction
        )
        p = None if args.skip_probe else probe(data)
        with tempfile.TemporaryDirectory() as tmp:
            c = cli(data, Path(tmp), seed, shlex.split(args.train_args))
        rows.append((seed, p, c))
        print(f"seed {seed}: probe {p}\n        cli   {json.dumps(c)}", flush=True)
    print(f"\nCLI: snapcat train --backbone {BACKBONE} {args.train_args}".rstrip())
    header = "| seed | test n | probe top-1 | CLI top-1 | gap | CLI top-3 | CLI macro F1 |"
    print(header + " T | test ECE before -> after | confident coverage / top-3 | kept epoch |")
    for seed, p, c in rows:
        gap = f"{100 * (c['top1'] - p['top1']):+.1f}" if p else "-"
        print(
            f"| {seed} | {c['n']} | {p['top1'] if p else '-'} | {c['top1']} | {gap} | {c['top3']} | "
            f"{c['macro_f1']} | {c['temperature']} | {c['ece_before']} -> {c['ece_after']} | "
            f"{c['confident_coverage']} / {c['confident_top3']} | {c['kept']}/{c['epochs_run']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
