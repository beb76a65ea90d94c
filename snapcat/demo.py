"""``make demo``: the main job end to end on the bundled sample, the way the cluster runs it.

1. The training pipeline through ``kfp.local`` (prepare -> train and evaluate -> select -> gate
   -> deploy dry-run), i.e. the very pipeline the platform team submits: EfficientNet-Lite0 with
   its real ImageNet weights, two-phase (frozen backbone, head, then fine-tuning), at settings
   that fit two CPU cores.
2. The trained model served locally (TF-Serving-compatible predictor + the KServe transformer,
   two real processes on loopback), held-out test photos classified through it over HTTP, and
   the servers shut down.

The terminal gets a short story; the step logs (kfp.local executors, Keras, the servers) go to
files under ``WORKDIR/logs``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

#: Settings for a few hundred photos on two CPU cores; production defaults are in the pipeline.
DEMO_PARAMS = {
    "candidates": ["efficientnet-lite0:two-phase"],
    "weights": "imagenet",  # installed with snapcat: Google's checkpoint, converted once
    "image_size": 224,
    "epochs": 8,
    "head_epochs": 5,  # a few hundred photos: the head converges in a few epochs at this rate
    "learning_rate": 5e-3,
    "fine_tune_learning_rate": 3e-5,  # low: at 1e-4 the whole network overfits 250 photos
    "validation_fraction": 0.15,
    "early_stopping_patience": 10,  # few epochs: let every one run
    "batch_size": 32,
    "min_top1": 0.0,  # no production floor on clip art: bless it to show the deploy step
    "min_top3": 0.0,
}
#: What a kfp.local log line looks like when a task starts or ends, and how the demo says it.
_TASK_EVENTS = (("Executing task", "  started  "), ("finished with status", "  finished "))
#: Keras' per-epoch output in a log (verbose=2): "Epoch 3/8", then one line of "name: value".
_EPOCH_START = re.compile(r"\bEpoch (\d+)/(\d+)\s*$")
_EPOCH_METRIC = re.compile(r"\b(loss|top1|top3|val_loss|val_top1|val_top3): ([0-9.eE+-]+|nan)")
_PHASE = re.compile(r"phase (\w[\w-]*): epochs (\d+)-(\d+)")


class TrainingEcho:
    """Turns the training step's log into one terminal line per epoch (and one per phase), so a
    run of minutes shows progress while the full log still goes to its file."""

    def __init__(self) -> None:
        self.epoch: str | None = None

    def __call__(self, line: str) -> str | None:
        if phase := _PHASE.search(line):
            name, first, last = phase.groups()
            return f"             phase {name}: epochs {first}-{last}"  # logged 1-based
        if start := _EPOCH_START.search(line):
            self.epoch = f"{start[1]}/{start[2]}"
            return None
        if self.epoch and " - loss: " in line:
            values = dict(_EPOCH_METRIC.findall(line))
            shown = "  ".join(
                f"{name.replace('_', ' ')} {float(values[name]):.3f}"
                for name in ("loss", "val_loss", "val_top1", "val_top3")
                if name in values
            )
            epoch, self.epoch = self.epoch, None
            return f"             epoch {epoch:>5}  {shown}"
        return None


def run_pipeline(data: str, workdir: Path, log: Path) -> dict[str, str]:
    """``snapcat pipeline run-local`` as a child process: its output goes to ``log``; the task
    start/finish lines and one line per training epoch are echoed."""
    command = [sys.executable, "-m", "snapcat.cli", "pipeline", "run-local"]
    command += ["--input", data, "--workdir", str(workdir)]
    for key, value in DEMO_PARAMS.items():
        text = ",".join(value) if isinstance(value, list) else str(value)
        command += ["--param", f"{key}={text}"]
    started = time.monotonic()
    echo_training = TrainingEcho()
    with open(log, "w", encoding="utf-8", buffering=1) as sink:  # tail -f works
        child = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # lines as they happen, not at exit
        )
        for line in child.stdout:
            sink.write(line)
            event = next((say for key, say in _TASK_EVENTS if key in line), None)
            if event:
                task = line.split("'")[1] if "'" in line else line.strip()
                print(f"{event}{task:<28} {time.monotonic() - started:6.0f} s", flush=True)
            elif said := echo_training(line):
                print(said, flush=True)
        if child.wait():
            raise SystemExit(f"the pipeline failed: see {log}")
    from pipelines.runner import locate_artifacts

    runs = sorted((workdir / "pipeline_root").iterdir(), key=lambda p: p.stat().st_mtime)
    return locate_artifacts(runs[-1])


def held_out_photos(dataset: str, per_category: int = 1) -> list[dict]:
    """Test-split photos (never seen in training), one per category; their ``path`` is relative
    to the input folder, as prepare's index.csv records it."""
    with open(Path(dataset) / "index.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    chosen: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["path"]):
        picked = chosen.setdefault(row["category"], [])
        if len(picked) < per_category:
            picked.append(row)
    return [row for slug in sorted(chosen) for row in chosen[slug]]


def suggestions_table(photos: list[dict], results) -> tuple[str, int]:
    lines, right = [], 0
    for photo, result in zip(photos, results, strict=True):
        top = result.categories
        hit = top[0].slug == photo["category"]
        right += hit
        guesses = ", ".join(f"{c.slug} {c.score:.2f}" for c in top)
        guesses += "" if result.confident else "  (not sure: show the full picker)"
        mark = "ok  " if hit else ("top3" if photo["category"] in [c.slug for c in top] else "miss")
        lines.append(f"  {mark} {photo['category']:<22} -> {guesses}")
    return "\n".join(lines), right


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sample")
    parser.add_argument("--workdir", default="demo-output")
    args = parser.parse_args(argv)

    from snapcat.local.stack import LocalStack
    from snapcat.serve.client import SnapcatClient

    workdir = Path(args.workdir).resolve()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    print("snapcat demo: train, evaluate, serve and classify on the bundled sample")
    print(f"(step logs: {logs})\n")
    print("1/3 training pipeline (kfp.local): EfficientNet-Lite0, ImageNet weights, two-phase")
    artifacts = run_pipeline(args.data, workdir, logs / "pipeline.log")
    metrics = json.loads(Path(artifacts["metrics"]).read_text("utf-8"))
    chance = 1 / len(metrics["model"]["classes"])
    print(
        f"\n2/3 evaluation on {metrics['n']} held-out test photos: top-1 {metrics['top1']:.2f}, "
        f"top-3 {metrics['top3']:.2f}, macro F1 {metrics['macro_f1']:.2f} "
        f"(chance: {chance:.2f} / {min(1.0, 3 * chance):.2f}); "
        f"gate {'blessed' if metrics['blessed'] else 'refused'} it"
    )
    print(f"    report:   {artifacts['report']}")
    print(f"    model:    {artifacts['model']}")
    if "deploy manifest" in artifacts:
        print(f"    canary the deploy step would apply: {artifacts['deploy manifest']}")

    print("\n3/3 serving it (predictor + KServe transformer on 127.0.0.1), classifying test photos")
    photos = held_out_photos(artifacts["dataset"])
    with (
        LocalStack(artifacts["model"], log_dir=logs) as stack,
        SnapcatClient(stack.url, stack.model_name) as client,
    ):
        results = [client.classify_one(str(Path(args.data, p["path"]))) for p in photos]
    table, right = suggestions_table(photos, results)
    print(f"       true category          -> top-3 suggestions (served over HTTP)\n{table}")
    print(f"    {right} of {len(photos)} right at top-1")
    print(f"\ndone in {time.monotonic() - began:.0f} s; HTML report: {artifacts['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
