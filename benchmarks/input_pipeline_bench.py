"""Input pipeline against training step: is ``tf.data`` ever what the model waits for?

In one process, on one prepared dataset (``--data``, or ``data/sample`` prepared at ``--size``
into a temporary folder with ``snapcat prepare``'s own code):

1. the input pipeline ``snapcat.train.trainer.make_dataset(..., training=True)`` exactly as ``train``
   builds it: shards read and shuffled, canonical JPEGs decoded by
   ``snapcat.train.tf_image.decode_canonical``, batched, augmented. It is timed confined to one thread
   (the per-core figure the target is about) and as ``train`` runs it, on every core. Decode
   without augmentation is shown too, to split the cost. "per core" is images per CPU-second of
   the whole process, which stays honest when other processes share the machine; "cores busy"
   is CPU-seconds per second.
2. the model's own consumption: the classifier ``train`` builds (``build_model``, compiled the
   same way), fed one fixed in-memory batch so no input work is counted, in its head phase
   (frozen backbone, the fastest step, i.e. the hungriest consumer) and its fine-tuning phase.

Target: the input pipeline is never the bottleneck, at least 400 images/s per core at 299 px.
On a CPU-only machine the model is of course far slower than its input; on a GPU node compare
the per-core figure times the cores the pod requests with the GPU's head-phase images/s.

    python benchmarks/input_pipeline_bench.py [--size 299] [--data PREPARED] [--seconds 10]
        [--batch-size 32] [--train-steps 3] [--backbone xception] [--skip-model]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
TARGET_PER_CORE = 400.0


def prepare_sample(size: int, folder: Path) -> Path:
    from snapcat.dataset.prepare import PrepareConfig, run_prepare

    out = folder / f"sample-{size}"
    run_prepare(
        PrepareConfig(input=str(REPO / "data" / "sample"), output=str(out), image_size=size)
    )
    return out


def time_pipeline(
    data: str, size: int, batch_size: int, threads: int | None, augment: bool, seconds: float
):
    """(images/s, images per CPU-second) of ``make_dataset``'s training pipeline, on a tf.data
    thread pool of ``threads`` threads, one op at a time (None: tf.data's defaults, as ``train``
    runs it). Per CPU-second is the per-core figure that stays honest when other processes share
    the machine."""
    import tensorflow as tf

    from snapcat.train.trainer import make_dataset

    ds = make_dataset(
        data, "train", size, batch_size, training=True, augment=augment, seed=0
    ).repeat()
    if threads is not None:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    iterator = iter(ds)
    warm_until = time.perf_counter() + min(3.0, seconds / 3)
    while time.perf_counter() < warm_until:  # graph tracing, first shard reads, prefetch fill
        next(iterator)
    images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + seconds
    while time.perf_counter() < deadline:
        pixels, _ = next(iterator)
        images += int(pixels.shape[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return images / wall, images / cpu if cpu > 0 else float("nan")


def time_training_step(backbone: str, size: int, classes: int, batch_size: int, steps: int):
    """Images/s the model consumes per phase, on one fixed batch (no input cost at all)."""
    import keras
    import numpy as np

    from snapcat.train.modeling import ModelSpec, build_model, set_backbone_trainable

    keras.utils.set_random_seed(0)
    model, base = build_model(
        ModelSpec(backbone=backbone, num_classes=classes, image_size=size, weights="none")
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, batch_size)
    rates = {}
    for phase, trainable in (("head (frozen backbone)", False), ("fine-tune", True)):
        set_backbone_trainable(base, trainable)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")],
        )
        model.train_on_batch(x, y)  # traces and compiles the step
        started = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        rates[phase] = steps * batch_size / (time.perf_counter() - started)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--data", help="a prepared dataset (default: data/sample, prepared now)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per pipeline measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--backbone", default="xception", choices=("xception", "inceptionv3"))
    parser.add_argument("--skip-model", action="store_true", help="time the input only")
    args = parser.parse_args(argv)

    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="snapcat-bench-") as tmp:
        data = args.data or str(prepare_sample(args.size, Path(tmp)))
        stats = json.loads(Path(data, "stats.json").read_text("utf-8"))
        n_train = sum(stats["splits"]["train"].values())
        print(
            f"data: {data} ({n_train} training photos, prepared at {stats['image_size']} px); "
            f"model input {args.size} px; batch {args.batch_size}; {cores} cores; "
            f"TensorFlow {tf.__version__}; GPUs: {len(tf.config.list_physical_devices('GPU'))}"
        )
        print("\ninput pipeline (make_dataset, training=True)    images/s   per core   cores busy")
        results = {}
        for label, threads, augment in (
            ("decode only, 1 thread", 1, False),
            ("decode + augment, 1 thread", 1, True),
            (f"decode + augment, as train runs it ({cores} cores)", None, True),
        ):
            rate, per_core = time_pipeline(
                data, args.size, args.batch_size, threads, augment, args.seconds
            )
            results[label] = (rate, per_core)
            print(f"  {label:<44} {rate:8.0f}   {per_core:8.0f}   {rate / per_core:10.2f}")
        per_core = results["decode + augment, 1 thread"][1]
        verdict = "meets" if per_core >= TARGET_PER_CORE else "MISSES"
        print(
            f"  -> {per_core:.0f} images/s per core with augmentation: {verdict} the "
            f"{TARGET_PER_CORE:.0f}/core target"
        )

        if not args.skip_model:
            print(
                f"\nmodel consumption ({args.backbone}, train_on_batch, fixed batch)"
                "   images/s   input headroom"
            )
            all_cores = results[f"decode + augment, as train runs it ({cores} cores)"][0]
            rates = time_training_step(
                args.backbone, args.size, len(stats["classes"]), args.batch_size, args.train_steps
            )
            for phase, rate in rates.items():
                print(f"  {phase:<44} {rate:8.1f}   {all_cores / rate:13.1f}x")
            hungriest = max(rates.values())
            print(
                f"  -> the input pipeline on {cores} cores delivers {all_cores:.0f} images/s, "
                f"{all_cores / hungriest:.1f}x what the fastest training step consumes; "
                f"{hungriest / per_core:.2f} core(s) of input work keep it fed"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
