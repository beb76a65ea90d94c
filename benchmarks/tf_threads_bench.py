"""TF threads benchmark: what a backbone's forward pass costs under each thread-pool sizing.

TensorFlow's intra-op and inter-op pools can only be sized before its runtime starts, so each
setting runs in a fresh child process; rounds interleave the settings so all see the same machine.
For each setting (``intra/inter``), on canonical JPEGs through the exported signature
(``ServingModel.predict``, as the predictor calls it), it prints the CPU per photo and the p50 of
one call at batch 1 back to back, at batch 1 with ``--gap-ms`` between calls (online serving:
requests spaced out, where idle threads spin), and at batch 8; then each setting's CPU per photo
relative to the one ``tf_serving_threads`` picks for this machine's CPU limit and the backbone,
measured in the same run. docs/serving.md ("TF Serving's threads") has the figures behind the rule.

    .venv/bin/python benchmarks/tf_threads_bench.py                       # EfficientNet-Lite0
    .venv/bin/python benchmarks/tf_threads_bench.py --backbone xception --seconds 8

Cost does not depend on the weights: an untrained model (``weights="none"``) of ``--backbone`` is
exported to a temporary folder, unless ``--model-dir`` names an exported model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = (("batch 1", 1, 0.0), ("batch 1, spaced", 1, None), ("batch 8", 8, 0.0))


def measure(model_dir: str, photos: str, intra: int, inter: int, seconds: float, gap: float):
    """In this (child) process: the setting's figures per case, as a dict."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from serving_bench import load_photos, raw_run

    from snapcat.imaging.normalize import normalize_image
    from snapcat.train.export import ServingModel

    model = ServingModel(model_dir)
    canonical = [normalize_image(p, model.info.spec) for p in load_photos(Path(photos), 32)]
    return {
        name: raw_run(model, canonical, batch, seconds, pause=gap if pause is None else pause)
        for name, batch, pause in CASES
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--model-dir", help="an exported model (default: an untrained one)")
    parser.add_argument("--photos", default=str(REPO_ROOT / "data" / "sample"))
    parser.add_argument(
        "--settings",
        default="1/1,1/2,2/2",
        help="intra/inter pairs, comma separated (default: 1/1,1/2,2/2)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per case")
    parser.add_argument("--gap-ms", type=float, default=20.0, help="between spaced calls")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "intra/inter": measure, print JSON
    args = parser.parse_args()

    if args.child:
        intra, inter = map(int, args.child.split("/"))
        figures = measure(
            args.model_dir, args.photos, intra, inter, args.seconds, args.gap_ms / 1000
        )
        print(json.dumps(figures))
        return 0

    from tqdm import tqdm

    from snapcat.contract.model_info import load_model_info
    from snapcat.contract.tf_serving_config import tf_serving_threads
    from snapcat.serve.container_limits import read_container_limits

    settings = [s.strip() for s in args.settings.split(",")]
    with tempfile.TemporaryDirectory(prefix="tf-threads-bench-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from serving_bench import export_untrained

            from snapcat.train.modeling import get_backbone

            size = get_backbone(args.backbone).default_size
            model_dir = export_untrained(size, f"{tmp}/model", args.backbone)
        backbone = load_model_info(model_dir).backbone
        rule = tf_serving_threads(read_container_limits().cpus, backbone)
        chosen = f"{rule.intra_op}/{rule.inter_op}"
        if chosen not in settings:
            settings.append(chosen)
        print(
            f"{backbone}, {rule.cpus:g} CPUs: the rule picks intra {rule.intra_op} / inter "
            f"{rule.inter_op}; load average at start "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        runs: dict[str, list[dict]] = {s: [] for s in settings}
        with tqdm(total=args.rounds * len(settings), desc="settings", unit="run") as bar:
            for round_ in range(args.rounds):
                order = settings if round_ % 2 == 0 else settings[::-1]
                for setting in order:
                    child = subprocess.run(
                        [sys.executable, __file__, "--child", setting, "--model-dir", model_dir,
                         "--photos", args.photos, "--seconds", str(args.seconds),
                         "--gap-ms", str(args.gap_ms)],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    runs[setting].append(json.loads(child.stdout.strip().splitlines()[-1]))
                    bar.update()

    def med(setting: str, case: str, field: str) -> float:
        return statistics.median(r[case][field] for r in runs[setting])

    print(f"--- medians of {args.rounds} interleaved rounds, {args.seconds:g} s per case")
    for setting in settings:
        mark = "  (the rule's)" if setting == chosen else ""
        cells = [
            f"{case}: {med(setting, case, 'cpu_ms'):6.1f} CPU-ms/photo, "
            f"p50 {med(setting, case, 'p50'):6.1f} ms, "
            f"CPU x{med(setting, case, 'cpu_ms') / med(chosen, case, 'cpu_ms'):.2f}"
            for case, _, _ in CASES
        ]
        print(f"intra/inter {setting}{mark}")
        for cell in cells:
            print(f"  {cell}")
    print(f"(spaced: {args.gap_ms:g} ms between calls; CPU x: against the rule's setting)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
