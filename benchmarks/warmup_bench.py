"""Warm-up benchmark: what the export's warm-up records save a new predictor's first requests.

Exports an untrained model (latency does not depend on the weights), copies its version without
``assets.extra/`` (no warm-up records, as exports were before) and with serving_default's records
only (no explain record, as exports were before that), and starts the local predictor on each
in turn, as TF Serving would load them: it prints the time until the port answers (load
plus warm-up) and the latency of the first requests after that, a lone photo, then a batch of
8 (each batch shape's first call pays its own set-up), then an ``explain`` of one photo, against
the same requests sent again.

    .venv/bin/python benchmarks/warmup_bench.py                  # untrained Xception at 299 px
    .venv/bin/python benchmarks/warmup_bench.py --backbone efficientnet-lite0 --image-size 224
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving_bench import MODEL_NAME, export_untrained, load_photos  # noqa: E402


def first_requests(model_dir: str, bodies: dict[str, dict], timeout: float) -> dict[str, float]:
    import httpx

    from snapcat.local.processes import free_port, spawn, stop_process, wait_http_ok
    from snapcat.local.stack import predictor_command

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
    start = time.perf_counter()
    process = spawn(predictor_command(model_dir=model_dir, port=port, model_name=MODEL_NAME))
    try:
        wait_http_ok(url, timeout, [process], interval=0.05)
        figures = {"ready_s": time.perf_counter() - start}
        with httpx.Client(timeout=120) as client:
            for round_ in ("first", "again"):
                for name, body in bodies.items():
                    t0 = time.perf_counter()
                    response = client.post(f"{url}:predict", json=body)
                    response.raise_for_status()
                    figures[f"{round_} {name}"] = (time.perf_counter() - t0) * 1000
        return figures
    finally:
        stop_process(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="xception")
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    from snapcat.contract.model_info import load_model_info
    from snapcat.imaging.normalize import normalize_image
    from snapcat.train.warmup import write_warmup_requests

    with tempfile.TemporaryDirectory(prefix="warmup-bench-") as tmp:
        warm = export_untrained(args.image_size, f"{tmp}/warm/{MODEL_NAME}", args.backbone)
        version = next(p for p in Path(warm).iterdir() if p.name.isdigit())
        cold_version = Path(tmp, "cold", MODEL_NAME, version.name)
        shutil.copytree(version, cold_version, ignore=shutil.ignore_patterns("assets.extra"))
        # the records before the explain one existed: serving_default's only
        predict_only = Path(tmp, "predict-only", MODEL_NAME, version.name)
        shutil.copytree(version, predict_only)
        spec = load_model_info(warm).spec
        write_warmup_requests(
            predict_only,
            image_size=spec.size,
            jpeg_quality=spec.jpeg_quality,
            model_name=MODEL_NAME,
            explain_batch_sizes=(),
        )
        photos = [normalize_image(p, spec) for p in load_photos(REPO_ROOT / "data" / "sample", 8)]

        def body(images):
            return {
                "instances": [
                    {"image_bytes": {"b64": base64.b64encode(i).decode("ascii")}} for i in images
                ]
            }

        explain = {
            "signature_name": "explain",
            "instances": [
                {
                    "image_bytes": {"b64": base64.b64encode(photos[0]).decode("ascii")},
                    "class_index": -1,
                }
            ],
        }
        bodies = {"1 photo": body(photos[:1]), "8 photos": body(photos[:8]), "explain": explain}
        variants = {
            "with warm-up records": warm,
            "predict records only": str(predict_only.parent),
            "without": str(cold_version.parent),
        }
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for round_ in range(1, args.rounds + 1):
            for name, model_dir in variants.items():
                figures = first_requests(model_dir, bodies, args.timeout)
                runs[name].append(figures)
                print(f"round {round_} {name}: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in figures.items()
                ), flush=True)  # fmt: skip

    print(
        f"--- {args.backbone} {args.image_size} px, {os.cpu_count()} CPUs, medians of "
        f"{args.rounds} rounds (ms unless said)"
    )
    for name, figures in runs.items():
        keys = figures[0]
        med = {k: statistics.median(f[k] for f in figures) for k in keys}
        print(
            f"{name:>20}: ready after {med['ready_s']:.1f} s; first request 1 photo "
            f"{med['first 1 photo']:.0f} ms (again {med['again 1 photo']:.0f}), first 8 photos "
            f"{med['first 8 photos']:.0f} ms (again {med['again 8 photos']:.0f}), first explain "
            f"of 1 photo {med['first explain']:.0f} ms (again {med['again explain']:.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
