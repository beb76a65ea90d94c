"""Normalization throughput: ``snapcat.imaging.normalize_image`` against a naive Pillow pipeline.

Generates a few realistic 12 MP (4000x3000) phone-like JPEGs (smooth lighting gradients, sensor
noise, shapes; quality 92; some with an EXIF orientation) in a temporary folder, then times, in
this one process (a single core), both ways of turning them into the canonical ``size`` px
letterboxed JPEG:

- snapcat: ``normalize_image`` (DCT-scaled "draft" JPEG decode, shrink first, then colour work);
- naive (the baseline the target is against): what one writes with Pillow's defaults: full
  decode ``Image.open(...).convert("RGB")``, ``ImageOps.exif_transpose`` of the full image,
  ``Image.resize`` with its default filter (bicubic, no ``reducing_gap``), the same letterbox
  canvas and the same JPEG encode;
- full decode + tuned resize (for information: how much of the gain is the decode): the full
  decode as above, then snapcat's own ``letterbox`` resize (which uses ``reducing_gap``).

Each is run ``--repeats`` times over all images; the median and best passes are reported with the
speed-up (target: at least 4x). As a sanity check it also reports how far apart the two outputs
are (mean absolute pixel difference), which must stay small: the speed must not come from
producing a different picture.

    python benchmarks/normalize_bench.py [--images 6] [--repeats 3] [--size 299]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from tqdm import tqdm

from snapcat import imaging

WIDTH, HEIGHT = 4000, 3000
#: EXIF orientations given to the generated photos in turn (1: none; 6 and 8: shot in portrait).
ORIENTATIONS = (1, 6, 1, 8, 3, 1)


def make_photo(seed: int) -> Image.Image:
    """A 12 MP image with the statistics of a photo rather than of a test card: low-frequency
    lighting, a few blurred objects with edges, and per-pixel sensor noise."""
    rng = np.random.default_rng(seed)
    # Smooth lighting: a tiny random image upsampled with bicubic interpolation.
    lighting = Image.fromarray(rng.integers(40, 220, size=(6, 8, 3), dtype=np.uint8), "RGB")
    image = lighting.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        w, h = int(rng.integers(200, 1600)), int(rng.integers(200, 1200))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = [x - w // 2, y - h // 2, x + w // 2, y + h // 2]
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=12)
        else:
            points = [tuple(int(v) for v in rng.integers(0, (WIDTH, HEIGHT))) for _ in range(5)]
            draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3))  # optics: no perfectly hard edges
    pixels = np.asarray(image, dtype=np.int16)
    noise = rng.normal(0, 5, size=(HEIGHT, WIDTH, 1)) + rng.normal(0, 3, size=(HEIGHT, WIDTH, 3))
    pixels = np.clip(pixels + noise.astype(np.int16), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def generate(folder: Path, count: int, quality: int, seed: int) -> list[Path]:
    paths = []
    for i in tqdm(range(count), desc="generating 12 MP JPEGs", unit="img", file=sys.stdout):
        exif = Image.Exif()
        orientation = ORIENTATIONS[i % len(ORIENTATIONS)]
        if orientation != 1:
            exif[0x0112] = orientation
        path = folder / f"photo_{i:02d}.jpg"
        make_photo(seed + i).save(path, "JPEG", quality=quality, exif=exif, subsampling=2)
        paths.append(path)
    return paths


def naive_normalize(data: bytes, spec: imaging.ImageSpec) -> bytes:
    """What one would write without thinking about cost: decode everything, then shrink with
    Pillow's defaults."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    scale = spec.size / max(image.size)
    resized = image.resize((round(image.width * scale), round(image.height * scale)))
    canvas = Image.new("RGB", (spec.size, spec.size), imaging.BACKGROUND)
    canvas.paste(resized, ((spec.size - resized.width) // 2, (spec.size - resized.height) // 2))
    return imaging.encode_canonical(canvas, spec)


def full_decode_tuned_resize(data: bytes, spec: imaging.ImageSpec) -> bytes:
    """The full decode, but snapcat's resize: isolates what DCT-scaled decoding buys."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    return imaging.encode_canonical(imaging.letterbox(image, spec.size), spec)


def time_passes(
    name: str,
    function: Callable[[bytes, imaging.ImageSpec], bytes],
    photos: list[bytes],
    spec: imaging.ImageSpec,
    repeats: int,
) -> tuple[list[float], list[float], list[bytes]]:
    """Wall-clock and CPU seconds of each of ``repeats`` passes over all photos; the outputs.

    CPU time of this process is reported too because on a shared machine other processes
    inflate wall-clock time; the work here is single-threaded, so the two agree when idle."""
    function(photos[0], spec)  # warm-up: plugin registration, first-call costs
    wall, cpu, outputs = [], [], []
    progress = tqdm(total=repeats * len(photos), desc=f"{name:>8}", unit="img", file=sys.stdout)
    for _ in range(repeats):
        outputs = []
        started, started_cpu = time.perf_counter(), time.process_time()
        for data in photos:
            outputs.append(function(data, spec))
            progress.update()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    progress.close()
    return wall, cpu, outputs


def mean_abs_diff(a: bytes, b: bytes) -> float:
    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.int16)
    return float(np.abs(x - y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6, help="12 MP photos to generate")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per method")
    parser.add_argument("--size", type=int, default=299, help="canonical size in px")
    parser.add_argument("--quality", type=int, default=92, help="JPEG quality of the photos")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        parser.error("--images and --repeats must be at least 1")
    spec = imaging.ImageSpec(size=args.size)

    with tempfile.TemporaryDirectory(prefix="snapcat-bench-") as tmp:
        paths = generate(Path(tmp), args.images, args.quality, args.seed)
        photos = [p.read_bytes() for p in paths]  # time decoding, not disk reads
    mb = sum(len(p) for p in photos) / len(photos) / 1e6
    print(
        f"{len(photos)} photos, {WIDTH}x{HEIGHT} JPEG q{args.quality}, {mb:.1f} MB on average, "
        f"orientations {[ORIENTATIONS[i % len(ORIENTATIONS)] for i in range(len(photos))]}"
    )

    naive_wall, naive_cpu, naive_out = time_passes(
        "naive", naive_normalize, photos, spec, args.repeats
    )
    tuned_wall, tuned_cpu, _ = time_passes(
        "tuned", full_decode_tuned_resize, photos, spec, args.repeats
    )
    ours_wall, ours_cpu, ours_out = time_passes(
        "snapcat", imaging.normalize_image, photos, spec, args.repeats
    )
    diffs = [mean_abs_diff(a, b) for a, b in zip(naive_out, ours_out, strict=True)]

    n = len(photos)
    rows = {
        "naive Pillow (defaults)": (naive_wall, naive_cpu),
        "full decode + tuned resize": (tuned_wall, tuned_cpu),
        "snapcat normalize_image": (ours_wall, ours_cpu),
    }
    figures = {
        name: (
            n / statistics.median(wall),
            n / min(wall),
            n / statistics.median(cpu),
        )
        for name, (wall, cpu) in rows.items()
    }
    print()
    print(
        f"normalize {n} photos to {args.size} px in one process, {args.repeats} passes each; "
        "images/s:"
    )
    print(f"  {'':28}{'median':>9}{'best':>9}{'CPU time':>10}{'ms/image':>10}")
    for name, (median, best, cpu) in figures.items():
        print(f"  {name:28}{median:9.2f}{best:9.2f}{cpu:10.2f}{1000 / median:10.1f}")
    ours = figures["snapcat normalize_image"]
    for label, baseline_name in (
        ("speed-up vs naive", "naive Pillow (defaults)"),
        ("vs full decode + tuned", "full decode + tuned resize"),
    ):
        baseline = figures[baseline_name]
        speedups = [o / b for o, b in zip(ours, baseline, strict=True)]
        verdict = (
            f"   (target >= 4x: {'met' if speedups[0] >= 4 else 'NOT met'} by the median)"
            if baseline_name.startswith("naive")
            else "   (information)"
        )
        print(f"  {label:28}{speedups[0]:8.1f}x{speedups[1]:8.1f}x{speedups[2]:9.1f}x{verdict}")
    print(
        f"  outputs differ by {statistics.mean(diffs):.2f} grey levels on average "
        f"(max {max(diffs):.2f} for one photo; 0-255 scale)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
