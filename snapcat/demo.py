"""``make demo``: the main job end to end on the bundled sample, the way the cluster runs it.

1. The training pipeline through ``kfp.local`` (prepare -> train -> evaluate -> gate -> deploy
   dry-run), i.e. the very pipeline the platform team submits, at CPU-friendly settings.
2. The trained model served locally (TF-Serving-compatible predictor + the KServe transformer,
   two real processes on loopback), a few sample photos classified through it over HTTP, and the
   servers shut down.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready within {timeout:.0f} s")


def pick_photos(data: Path, per_category: int = 1, categories: int = 4) -> list[Path]:
    folders = sorted(p for p in data.iterdir() if p.is_dir())[:categories]
    return [photo for folder in folders for photo in sorted(folder.glob("*.jpg"))[:per_category]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sample")
    parser.add_argument("--workdir", default="demo-output")
    args = parser.parse_args(argv)

    from pipelines.runner import describe_result, run_local

    workdir = Path(args.workdir).resolve()
    print("== 1/2 training pipeline (kfp.local): prepare -> train -> evaluate -> gate -> deploy")
    artifacts = run_local(args.data, workdir, DEMO_PARAMS)
    print(describe_result(artifacts))

    print("\n== 2/2 serving the model locally and classifying sample photos through it")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapcat.cli",
            "serve",
            "local",
            "--model-dir",
            artifacts["model"],
            "--port",
            str(port),
            "--model-name",
            MODEL_NAME,
        ],
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}", server)
        photos = [str(p) for p in pick_photos(Path(args.data))]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "snapcat.cli",
                "classify",
                *photos,
                "--url",
                f"http://127.0.0.1:{port}",
                "--model-name",
                MODEL_NAME,
            ],
            check=True,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"\nHTML report: {artifacts.get('report')}")
    print(f"model:       {artifacts['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
