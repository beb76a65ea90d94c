"""Per-pod concurrency of the transformer: how many requests in flight one pod's CPU turns into
throughput before more only queue. Knative scales the transformer on exactly that (scaleMetric
``concurrency``: in-flight requests per pod), so the prod overlay's scaleTarget follows from this
measurement (the formula: docs/deploy.md, "Autoscaling targets"; tests/test_manifests.py checks
the manifest against it).

The local stack runs with the transformer pinned to one CPU (``sched_setaffinity``: a pod's CPU
request) and the predictor to the other, serving an untrained EfficientNet-Lite0 at 224 px, so the
transformer is what saturates; no admission limit (``--max_photos_in_flight=64``), so the curve
shows queueing instead of 503s. Each request carries one 4000 x 3000 phone-sized JPEG (what the
app sends). Concurrencies 1..8 are measured in interleaved rounds; the knee is the smallest
concurrency whose median throughput reaches 90 % of the best: beyond it a pod only adds latency.

    .venv/bin/python benchmarks/concurrency_sweep.py            # prints, writes the record
    .venv/bin/python benchmarks/concurrency_sweep.py --no-write # prints only

Everything runs on 127.0.0.1 and is bounded by ``--seconds`` x concurrencies x ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RECORD = REPO_ROOT / "benchmarks" / "results" / "transformer_concurrency.json"
CONCURRENCIES = (1, 2, 3, 4, 6, 8)
KNEE_SHARE = 0.9


def knee(throughputs: dict[int, float], share: float = KNEE_SHARE) -> int:
    """The smallest concurrency reaching ``share`` of the best throughput."""
    best = max(throughputs.values())
    return min(c for c, t in throughputs.items() if t >= share * best)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not update the record")
    args = parser.parse_args()

    from serving_bench import MODEL_NAME, e2e_run, export_untrained
    from soak import big_jpeg

    from snapcat.local.stack import LocalStack

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs two CPUs: one for the transformer, one for the predictor", file=sys.stderr)
        return 2
    photo = big_jpeg()
    runs: dict[int, list[dict]] = {c: [] for c in CONCURRENCIES}
    with tempfile.TemporaryDirectory(prefix="concurrency-") as tmp:
        model_dir = export_untrained(224, f"{tmp}/{MODEL_NAME}", "efficientnet-lite0")
        with LocalStack(
            model_dir,
            model_name=MODEL_NAME,
            log_dir=f"{tmp}/logs",
            transformer_args=("--enable_latency_logging=false", "--max_photos_in_flight=64"),
        ) as stack:
            transformer, predictor = stack.transformer.pid, stack.predictor.pid
            for pid in _threads(transformer):
                os.sched_setaffinity(pid, {cpus[0]})
            for pid in _threads(predictor):
                os.sched_setaffinity(pid, {cpus[1]})
            for round_ in range(1, args.rounds + 1):
                for c in CONCURRENCIES:
                    runs[c].append(e2e_run(stack.url, [photo], c, args.seconds, [transformer]))
                print(
                    f"round {round_}: "
                    + ", ".join(f"c{c} {runs[c][-1]['throughput']:.2f}/s" for c in CONCURRENCIES),
                    flush=True,
                )

    def med(c: int, field: str) -> float:
        return statistics.median(r[field] for r in runs[c])

    throughputs = {c: med(c, "throughput") for c in CONCURRENCIES}
    found = knee(throughputs)
    print(f"--- medians of {args.rounds} rounds, {args.seconds:g} s each; transformer on 1 CPU")
    for c in CONCURRENCIES:
        print(
            f"concurrency {c}: {throughputs[c]:5.2f} photos/s  p50 {med(c, 'p50'):5.0f} ms  "
            f"p95 {med(c, 'p95'):5.0f} ms  {med(c, 'cpu_ms'):5.0f} transformer CPU-ms/photo"
        )
    print(f"knee (>= {KNEE_SHARE:.0%} of the best throughput): concurrency {found} per CPU")
    if not args.no_write:
        record = {
            "what": "transformer requests in flight per CPU at the throughput knee",
            "knee_concurrency_per_cpu": found,
            "knee_share": KNEE_SHARE,
            "throughput_per_concurrency": {str(c): round(t, 3) for c, t in throughputs.items()},
            "p95_ms_per_concurrency": {str(c): round(med(c, "p95")) for c in CONCURRENCIES},
            "photo": "4000x3000 JPEG (benchmarks/soak.py big_jpeg), one per request",
            "predictor": "local stand-in, untrained EfficientNet-Lite0 224 px, on its own CPU",
            "rounds": args.rounds,
            "seconds": args.seconds,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
            "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        }
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=2) + "\n")
        print(f"recorded in {RECORD.relative_to(REPO_ROOT)}")
    return 0


def _threads(pid: int) -> list[int]:
    """Every thread of a process (affinity is per thread; new threads inherit the spawner's)."""
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


if __name__ == "__main__":
    sys.exit(main())
