"""What an explanation costs against a prediction: the ratio behind ``EXPLAIN_SLOTS``.

For each backbone at its training size, in one run: the exported SavedModel's ``serving_default``
and ``explain`` signatures (what TF Serving runs) on the same canonical photos, batch 1 and 8,
and the transformer's overlay encode (:func:`snapcat.imaging.heat_overlay.overlay_png`) per
photo; each explain figure is printed as a ratio to predict measured in the same run. Timings
do not depend on the weights, so untrained models are exported (no download).

    .venv/bin/python benchmarks/explain_cost_bench.py [--seconds 4] [--backbones efficientnet-lite0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = {"efficientnet-lite0": 224, "xception": 299, "inceptionv3": 299}


def per_photo_ms(call, photos: int, seconds: float) -> float:
    call()  # trace and warm up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 2:
        call()
        calls += 1
    return 1000 * (time.perf_counter() - start) / (calls * photos)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--backbones", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args(argv)

    from snapcat.contract.image_spec import ImageSpec
    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.imaging.heat_overlay import overlay_png
    from snapcat.imaging.normalize import normalize_image
    from snapcat.train.export import ServingModel, export_model
    from snapcat.train.modeling import ModelSpec, build_model

    samples = sorted((REPO_ROOT / "data" / "sample").glob("*/*.jpg"))[:8]
    classes = list(Taxonomy.load().trainable_slugs[:5])
    print(f"{'backbone':<20}{'batch':>6}{'predict ms':>12}{'explain ms':>12}{'ratio':>7}")
    for backbone in args.backbones:
        size = SIZES[backbone]
        photos = [normalize_image(p.read_bytes(), ImageSpec(size=size)) for p in samples]
        model, _ = build_model(ModelSpec(backbone, len(classes), image_size=size, weights="none"))
        with tempfile.TemporaryDirectory() as tmp:
            served = ServingModel(
                export_model(
                    model, tmp, classes=classes, image_size=size, jpeg_quality=90, backbone=backbone
                )
            )
            for batch in (1, 8):
                chunk = photos[:batch]
                predict = per_photo_ms(lambda c=chunk, s=served: s.run(c), batch, args.seconds)
                explain = per_photo_ms(lambda c=chunk, s=served: s.explain(c), batch, args.seconds)
                print(
                    f"{backbone:<20}{batch:>6}{predict:>12.1f}{explain:>12.1f}"
                    f"{explain / predict:>7.2f}"
                )
            heat = served.explain(photos[:1])["heat_map"][0].tolist()
            encode = per_photo_ms(
                lambda p=photos[0], h=heat: overlay_png(p, h), 1, args.seconds / 2
            )
            print(f"{'':<20}overlay encode (transformer): {encode:.1f} ms per photo at {size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
