"""Serving benchmark: how close does transformer + predictor get to the raw SavedModel?

Prints, in one run on this machine:

- raw in-process throughput of the exported signature (``ServingModel.predict`` on canonical
  bytes, batch 1 / 8 / 32): the limit, since every image must go through the model;
- end-to-end throughput and p50/p95 latency through the KServe transformer and the local
  predictor (two processes, loopback HTTP, one photo per request) at concurrency 1 and 8;
- the ratio end-to-end / raw (target at concurrency 8: >= 0.9);
- bytes per image sent to the predictor, from the transformer's own counters
  (target at 299 px: <= 40 KB).

The predictor batches by TF Serving's batching parameters file, as production does:
``--batching-parameters-file`` (default: ``manifests/base/tfserving/batching_parameters.txt``, the
CPU sizing production's base/dev predictors run with; the prod overlay's file is sized for a GPU).

Rounds interleave raw and end-to-end runs, so both see the same machine, and medians are
reported. On a machine shared with other work, wall-clock figures move with the other load, so
the CPU time per image is measured too (of this process for the raw runs; of the predictor and
transformer processes for the end-to-end runs, the client excluded): its ratio is what the stack
costs over the bare model, whatever else runs.

    .venv/bin/python benchmarks/serving_bench.py                  # untrained Xception at 299 px
    .venv/bin/python benchmarks/serving_bench.py --model-dir MODEL_DIR --photos data/sample

Throughput does not depend on the weights, so without ``--model-dir`` an untrained model is
exported to a temporary folder (no download needed).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODEL_NAME = "listing-category"
_TICKS = os.sysconf("SC_CLK_TCK")


def export_untrained(image_size: int, folder: str, backbone: str = "xception") -> str:
    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.train.export import export_model
    from snapcat.train.modeling import ModelSpec, build_model

    classes = list(Taxonomy.load().trainable_slugs)
    model, _ = build_model(
        ModelSpec(
            backbone=backbone, num_classes=len(classes), image_size=image_size, weights="none"
        )
    )
    export_model(
        model, folder, classes=classes, image_size=image_size, jpeg_quality=90, backbone=backbone
    )
    return folder


def load_photos(folder: Path, limit: int) -> list[bytes]:
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    )
    step = max(1, len(paths) // limit)
    return [p.read_bytes() for p in paths[::step][:limit]]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def raw_run(model, canonical: list[bytes], batch: int, seconds: float) -> dict:
    model.predict(canonical[:batch])  # warm-up at this batch size
    done, i = 0, 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or done < 2 * batch:
        model.predict([canonical[(i + j) % len(canonical)] for j in range(batch)])
        done += batch
        i += batch
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"throughput": done / wall, "cpu_ms": cpu / done * 1000}


def e2e_run(url: str, photos: list[bytes], concurrency: int, seconds: float, pids) -> dict:
    import httpx

    bodies = [
        {"instances": [{"image_bytes": {"b64": base64.b64encode(p).decode("ascii")}}]}
        for p in photos
    ]
    predict = f"{url}/v1/models/{MODEL_NAME}:predict"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at, cpu_at_start = [0.0], [0.0]

    def start_clock() -> None:
        # Once every worker has warmed up (the first requests can take longer than a whole
        # measurement on a loaded machine), before any is released: the window and the CPU
        # baseline leave the warm-up out.
        cpu_at_start[:] = [process_cpu(p) for p in pids]
        stop_at[0] = time.perf_counter() + seconds

    start_gate = threading.Barrier(concurrency + 1, action=start_clock)

    def worker(offset: int) -> None:
        with httpx.Client(timeout=120) as client:
            client.post(predict, json=bodies[offset % len(bodies)])  # connection + warm-up
            start_gate.wait()
            i = offset
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                response = client.post(predict, json=bodies[i % len(bodies)])
                elapsed = time.perf_counter() - t0
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                i += concurrency

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    start_gate.wait()
    begin = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    cpu = [process_cpu(p) - at_start for p, at_start in zip(pids, cpu_at_start, strict=True)]
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    ordered = sorted(latencies)
    return {
        "throughput": len(ordered) / wall,
        "p50": statistics.median(ordered) * 1000,
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000,
        "cpu_ms": sum(cpu) / len(ordered) * 1000,
        # per server process, in the order of ``pids``
        "cpu_ms_by_process": [c / len(ordered) * 1000 for c in cpu],
    }


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="an exported model (default: untrained Xception)")
    parser.add_argument("--image-size", type=int, default=299, help="for the untrained model")
    parser.add_argument("--photos", default=str(REPO_ROOT / "data" / "sample"))
    parser.add_argument("--num-photos", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--batching-parameters-file",
        default=str(REPO_ROOT / "manifests" / "base" / "tfserving" / "batching_parameters.txt"),
        help="TF Serving's batching parameters for the predictor (default: the base CPU sizing)",
    )
    args = parser.parse_args()

    import httpx

    from snapcat.contract.tf_serving_config import BatchingParameters
    from snapcat.imaging.normalize import normalize_image
    from snapcat.local.stack import LocalStack
    from snapcat.serve.transformer_core import TransformerCore
    from snapcat.train.export import ServingModel

    batching = BatchingParameters.from_file(args.batching_parameters_file)
    print(
        f"batching: {os.path.relpath(batching.source, REPO_ROOT)}: max_batch_size "
        f"{batching.max_batch_size}, batch_timeout_micros {batching.batch_timeout_micros}, "
        f"num_batch_threads {batching.num_batch_threads}, max_enqueued_batches "
        f"{batching.max_enqueued_batches}, allowed_batch_sizes {list(batching.allowed_batch_sizes)}"
    )
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))

    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        model_dir = args.model_dir or export_untrained(args.image_size, f"{tmp}/{MODEL_NAME}")
        model = ServingModel(model_dir)
        info = model.info
        photos = load_photos(Path(args.photos), args.num_photos)
        canonical = [normalize_image(p, info.spec) for p in photos]
        body = TransformerCore.predictor_body(canonical)
        print(
            f"model: {info.backbone} {info.image_size} px, {len(info.classes)} classes; "
            f"{os.cpu_count()} CPUs; {len(photos)} photos from {args.photos} "
            f"(mean {statistics.mean(map(len, photos)) / 1024:.0f} KB); "
            f"canonical JPEG mean {statistics.mean(map(len, canonical)) / 1024:.1f} KB, "
            f"{len(body) / len(canonical) / 1024:.1f} KB per image in the predictor request"
        )
        runs: dict[str, list[dict]] = {k: [] for k in ("raw1", "raw8", "raw32", "e2e1", "e2e8")}
        ratios: list[float] = []
        with LocalStack(
            model_dir,
            model_name=MODEL_NAME,
            log_dir=f"{tmp}/logs",
            transformer_args=("--enable_latency_logging=false",),
            batching_parameters_file=args.batching_parameters_file,
        ) as stack:
            servers = [stack.predictor.pid, stack.transformer.pid]
            for round_ in range(1, args.rounds + 1):
                raw = {b: raw_run(model, canonical, b, args.seconds) for b in (1, 8, 32)}
                e2e = {c: e2e_run(stack.url, photos, c, args.seconds, servers) for c in (1, 8)}
                for b, r in raw.items():
                    runs[f"raw{b}"].append(r)
                for c, r in e2e.items():
                    runs[f"e2e{c}"].append(r)
                ratios.append(e2e[8]["throughput"] / max(r["throughput"] for r in raw.values()))
                print(
                    f"round {round_}: raw b1/b8/b32 "
                    + "/".join(f"{raw[b]['throughput']:.1f}" for b in (1, 8, 32))
                    + " img/s, e2e c1/c8 "
                    + "/".join(f"{e2e[c]['throughput']:.1f}" for c in (1, 8))
                    + f" img/s, ratio c8 {ratios[-1]:.2f}",
                    flush=True,
                )
            metrics = httpx.get(f"{stack.url}/metrics").text
        # the predictor logs its batch statistics when it stops
        batch_log = [
            line
            for line in Path(tmp, "logs", "predictor.log").read_text().splitlines()
            if "batching:" in line
        ]
        per_image = metric(metrics, "snapcat_predictor_request_bytes_total") / metric(
            metrics, "snapcat_predictor_images_total"
        )

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    best_raw_cpu = min(med(f"raw{b}", "cpu_ms") for b in (1, 8, 32))
    print(f"--- medians of {args.rounds} interleaved rounds, {args.seconds:g} s per measurement")
    for b in (1, 8, 32):
        print(
            f"raw SavedModel in-process, batch {b:>2}:  {med(f'raw{b}', 'throughput'):6.2f} img/s"
            f"   {med(f'raw{b}', 'cpu_ms'):6.1f} CPU-ms/img"
        )
    for c in (1, 8):
        predictor_ms, transformer_ms = (
            statistics.median(r["cpu_ms_by_process"][i] for r in runs[f"e2e{c}"]) for i in (0, 1)
        )
        print(
            f"end-to-end, concurrency {c}:           {med(f'e2e{c}', 'throughput'):6.2f} img/s"
            f"   {med(f'e2e{c}', 'cpu_ms'):6.1f} CPU-ms/img (servers: predictor "
            f"{predictor_ms:.1f} + transformer {transformer_ms:.1f})"
            f"   p50 {med(f'e2e{c}', 'p50'):5.0f} ms   p95 {med(f'e2e{c}', 'p95'):5.0f} ms"
        )
    print(
        f"ratio e2e/raw, concurrency 8: {statistics.median(ratios):.2f} by throughput (vs the best "
        f"raw batch size of the same round), {best_raw_cpu / med('e2e8', 'cpu_ms'):.2f} by CPU "
        "time per image; target >= 0.9"
    )
    print(
        f"ratio e2e/raw, concurrency 1: "
        f"{med('e2e1', 'throughput') / med('raw1', 'throughput'):.2f} by throughput (vs raw "
        f"batch 1), {med('raw1', 'cpu_ms') / med('e2e1', 'cpu_ms'):.2f} by CPU time per image"
    )
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(*batch_log[-1:], sep="\n")
    print(
        f"bytes per image sent to the predictor: {per_image / 1024:.1f} KB at {info.image_size} px "
        "(the transformer's counters; target <= 40 KB at 299 px)"
    )
    normalize_ms = (
        metric(metrics, "snapcat_normalize_seconds_sum")
        / metric(metrics, "snapcat_normalize_seconds_count")
        * 1000
    )
    print(f"normalization in the transformer: {normalize_ms:.1f} ms per image (its own histogram)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
