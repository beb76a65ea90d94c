"""Backbone benchmark: what each backbone costs per photo on this machine's CPUs.

Prints, in one run, for Xception (299 px), InceptionV3 (299 px) and EfficientNet-Lite0 (224 px),
each at the size it is trained at:

- the Keras forward pass alone on decoded pixels, batch 1 and batch 32 (ms per image, img/s);
- the whole local serving path (KServe transformer + TF-Serving-compatible predictor, two
  processes on loopback, one photo per request, concurrency 8): img/s and p50/p95 latency;
- each figure relative to Xception measured in the same run: the cost of a photo on a CPU
  serving tier.

Throughput does not depend on the weights, so untrained models are exported (no download).

    .venv/bin/python benchmarks/backbone_bench.py [--seconds 5] [--backbones efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving_bench import MODEL_NAME, e2e_run, export_untrained, load_photos  # noqa: E402


def forward_run(model, size: int, batch: int, seconds: float) -> float:
    """Images per second of ``model.predict_on_batch`` on random pixels at ``batch``."""
    import numpy as np

    pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    model.predict_on_batch(pixels)  # trace and warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 2 * batch:
        model.predict_on_batch(pixels)
        done += batch
    return done / (time.perf_counter() - start)


def measure(backbone: str, photos: list[bytes], seconds: float, tmp: str) -> dict:
    import keras

    from snapcat.local.stack import LocalStack
    from snapcat.train.modeling import BACKBONES, ModelSpec, build_model

    size = BACKBONES[backbone].default_size
    keras.utils.set_random_seed(0)
    model, _ = build_model(
        ModelSpec(backbone=backbone, num_classes=19, image_size=size, weights="none")
    )
    result = {
        "size": size,
        "params": model.count_params(),
        "b1": forward_run(model, size, 1, seconds),
        "b32": forward_run(model, size, 32, seconds),
    }
    del model
    keras.backend.clear_session()
    model_dir = export_untrained(size, f"{tmp}/{backbone}/{MODEL_NAME}", backbone)
    with LocalStack(model_dir, model_name=MODEL_NAME, log_dir=f"{tmp}/{backbone}/logs") as stack:
        servers = [stack.predictor.pid, stack.transformer.pid]
        result["e2e"] = e2e_run(stack.url, photos, 8, seconds, servers)
    return result


def main() -> int:
    from snapcat.train.modeling import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--photos", default=str(REPO_ROOT / "data" / "sample"))
    parser.add_argument("--num-photos", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args()

    photos = load_photos(Path(args.photos), args.num_photos)
    print(
        f"{os.cpu_count()} CPUs; {len(photos)} photos from {args.photos} "
        f"(mean {statistics.mean(map(len, photos)) / 1024:.0f} KB); {args.seconds:g} s per figure"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as tmp:
        for backbone in args.backbones:
            results[backbone] = measure(backbone, photos, args.seconds, tmp)
            r = results[backbone]
            print(
                f"  measured {backbone}: forward b1 {r['b1']:.1f} img/s, b32 {r['b32']:.1f} "
                f"img/s, serving {r['e2e']['throughput']:.1f} img/s",
                flush=True,
            )
    base = results.get("xception")
    header = (
        f"{'backbone':<20}{'size':>5}{'params':>8}{'b1 ms/img':>11}{'b32 img/s':>11}"
        f"{'b32 ms/img':>12}{'serve img/s':>13}{'p50 ms':>8}{'p95 ms':>8}{'vs xception':>13}"
    )
    print(header)
    print("-" * len(header))
    for backbone, r in results.items():
        relative = f"{r['e2e']['throughput'] / base['e2e']['throughput']:.1f}x" if base else "-"
        print(
            f"{backbone:<20}{r['size']:>5}{r['params'] / 1e6:>7.1f}M{1000 / r['b1']:>11.1f}"
            f"{r['b32']:>11.1f}{1000 / r['b32']:>12.1f}{r['e2e']['throughput']:>13.1f}"
            f"{r['e2e']['p50']:>8.0f}{r['e2e']['p95']:>8.0f}{relative:>13}"
        )
    print("serving: transformer + predictor on 127.0.0.1, one photo per request, concurrency 8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
