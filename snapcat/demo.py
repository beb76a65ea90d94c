"""``make demo``: the main job end to end on the bundled sample, the way the cluster runs it.

1. The training pipeline through ``kfp.local`` (prepare -> train -> evaluate -> gate -> deploy
   dry-run), i.e. the very pipeline the platform team submits, at CPU-friendly settings.
2. The trained model served locally (TF-Serving-compatible predictor + the KServe transformer,
   two real processes on loopback), a few sample photos classified through it over HTTP, and the
   servers shut down.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

#: CPU-friendly settings for a few hundred clip-art images; production defaults are in the
#: pipeline (299 px, ImageNet weights, 12 epochs).
DEMO_PARAMS = {
    "image_size": 96,
    "weights": "none",  # ImageNet weights need internet or the training image
    "mode": "fine-tuning",
    "fine_tune_learning_rate": 1e-3,  # from scratch, a low fine-tuning rate learns nothing
    "epochs": 10,
    "validation_fraction": 0.25,  # ~60 photos: a less noisy best-epoch choice on tiny data
    "early_stopping_patience": 10,  # from scratch, validation lags training by several epochs
    "batch_size": 32,
    "min_top1": 0.0,  # the sample model cannot meet production floors; bless it to show deploy
    "min_top3": 0.0,
}
MODEL_NAME = "listing-category"


def pick_photos(data: Path, per_category: int = 1, categories: int = 4) -> list[Path]:
    folders = sorted(p for p in data.iterdir() if p.is_dir())[:categories]
    return [photo for folder in folders for photo in sorted(folder.glob("*.jpg"))[:per_category]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sample")
    parser.add_argument("--workdir", default="demo-output")
    args = parser.parse_args(argv)

    from pipelines.runner import describe_result, run_local
    from snapcat.commands.serve import LocalStack

    workdir = Path(args.workdir).resolve()
    print("== 1/2 training pipeline (kfp.local): prepare -> train -> evaluate -> gate -> deploy")
    artifacts = run_local(args.data, workdir, DEMO_PARAMS)
    print(describe_result(artifacts))

    print("\n== 2/2 serving the model locally and classifying sample photos through it")
    # The same wiring as `snapcat serve local`: predictor and transformer as two processes.
    with LocalStack(artifacts["model"], model_name=MODEL_NAME) as stack:
        photos = [str(p) for p in pick_photos(Path(args.data))]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "snapcat.cli",
                "classify",
                *photos,
                "--url",
                stack.url,
                "--model-name",
                MODEL_NAME,
            ],
            check=True,
        )
    print(f"\nHTML report: {artifacts.get('report')}")
    print(f"model:       {artifacts['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
