"""Normalization throughput by upload size, against the JPEG decode alone measured in the same run.

Most listing photos are not 12 MP: apps resize before uploading, so a typical upload is a ~1 MP
JPEG of ~200 KB. For each upload size below the script generates a few realistic phone-like JPEGs
(smooth lighting, blurred objects with edges, sensor noise; quality 90; every other one shot in
portrait, i.e. with EXIF orientation 6) and times, in this one process (a single core):

- decode alone (the floor): Pillow's DCT-scaled decode, ``draft("RGB", (size, size))`` +
  ``load()``, which is what any normalization must at least do;
- snapcat: ``normalize_image``, the whole path to the canonical ``size`` px letterboxed JPEG;
- naive (for reference): a full decode, ``ImageOps.exif_transpose``, Pillow's default resize,
  the same letterbox and encode.

Rounds interleave the decode alone and normalize on every size, in alternating order, so both
see the same machine; CPU time of this process is measured (the work is single-threaded; other
processes on a shared machine inflate wall-clock time, not this), and medians over the rounds are
reported. The ratio "normalize vs decode" is normalize throughput / decode-alone throughput, the
median of the per-round ratios, with their interquartile range (targets: >= 0.8 on typical
uploads, >= 0.9 on 12 MP). The naive method is timed in rounds of its own after those: run
between the other two, its full decodes (~100 MB at 12 MP) flush the CPU caches and moved their
ratio by up to 0.04, a measure of the benchmark rather than of the code. As a sanity check it also
prints how far snapcat's output is from the naive one (mean absolute difference, 0-255 scale).

    python benchmarks/normalize_bench.py [--photos 6] [--rounds 15] [--naive-rounds 3] [--size 299]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from snapcat.contract.image_spec import ImageSpec
from snapcat.imaging import normalize as imaging

#: (label, width, height) of the uploads measured.
UPLOADS = (
    ("1 MP", 1280, 960),
    ("1 MP square", 1080, 1080),
    ("2.7 MP", 1920, 1440),
    ("12 MP", 4000, 3000),
)
QUALITY = 90
#: Targets for "normalize vs decode alone", by upload label (the others: the 1 MP target).
TARGETS = {"12 MP": 0.9}
TYPICAL_TARGET = 0.8


def make_photo(width: int, height: int, seed: int) -> Image.Image:
    """An image with the statistics of a photo rather than of a test card: low-frequency
    lighting, a few blurred objects with edges, and per-pixel sensor noise (sized so that the
    JPEG is as big as a real upload of that size: ~200 KB at 1 MP, ~1.8 MB at 12 MP)."""
    rng = np.random.default_rng(seed)
    k = width / 4000  # shapes, edges and blur scale with the picture
    lighting = Image.fromarray(rng.integers(40, 220, size=(6, 8, 3), dtype=np.uint8), "RGB")
    image = lighting.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(200, 1600) * k), int(rng.integers(200, 1200) * k)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = [x - w // 2, y - h // 2, x + w // 2, y + h // 2]
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=max(1, int(12 * k)))
        else:
            points = [tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(5)]
            draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3 * k))  # optics: no perfectly hard edges
    pixels = np.asarray(image, dtype=np.int16)
    noise = rng.normal(0, 3, size=(height, width, 1)) + rng.normal(0, 2, size=(height, width, 3))
    pixels = np.clip(pixels + noise.astype(np.int16), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def photo_bytes(width: int, height: int, seed: int, portrait: bool) -> bytes:
    exif = Image.Exif()
    if portrait:
        exif[0x0112] = 6  # shot in portrait: stored sideways, rotated on display
    buffer = io.BytesIO()
    make_photo(width, height, seed).save(buffer, "JPEG", quality=QUALITY, exif=exif)
    return buffer.getvalue()


def decode_alone(data: bytes, spec: ImageSpec) -> Image.Image:
    """The floor: Pillow's DCT-scaled decode to at least ``size`` x ``size``, nothing else."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (spec.size, spec.size))
    image.load()
    return image


def naive_normalize(data: bytes, spec: ImageSpec) -> bytes:
    """What one would write without thinking about cost: decode everything, then shrink with
    Pillow's defaults."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    scale = spec.size / max(image.size)
    resized = image.resize((round(image.width * scale), round(image.height * scale)))
    canvas = Image.new("RGB", (spec.size, spec.size), imaging.BACKGROUND)
    canvas.paste(resized, ((spec.size - resized.width) // 2, (spec.size - resized.height) // 2))
    return imaging.encode_canonical(canvas, spec)


METHODS: dict[str, Callable[[bytes, ImageSpec], object]] = {
    "decode": decode_alone,
    "normalize": imaging.normalize_image,
    "naive": naive_normalize,
}


def cpu_seconds_per_photo(function, photos: list[bytes], spec: ImageSpec) -> float:
    started = time.process_time()
    for data in photos:
        function(data, spec)
    return (time.process_time() - started) / len(photos)


def mean_abs_diff(a: bytes, b: bytes) -> float:
    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.int16)
    return float(np.abs(x - y).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=6, help="photos generated per upload size")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timed rounds")
    parser.add_argument(
        "--naive-rounds", type=int, default=3, help="timed rounds of the naive method"
    )
    parser.add_argument("--size", type=int, default=299, help="canonical size in px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.photos < 1 or args.rounds < 1 or args.naive_rounds < 1:
        parser.error("--photos, --rounds and --naive-rounds must be at least 1")
    spec = ImageSpec(size=args.size)

    photos = {
        label: [
            photo_bytes(width, height, args.seed + i, portrait=i % 2 == 1)
            for i in range(args.photos)
        ]
        for label, width, height in UPLOADS
    }
    print(
        f"{args.photos} generated JPEGs per size (q{QUALITY}, every other with EXIF orientation "
        f"6), to {args.size} px; {args.rounds} interleaved rounds of decode and normalize, "
        f"{args.naive_rounds} of naive; CPU time of one process",
        flush=True,
    )
    for label in photos:  # warm-up: plugin registration, first-call costs
        for function in METHODS.values():
            function(photos[label][0], spec)

    seconds = {(label, m): [] for label in photos for m in METHODS}
    compared = [m for m in METHODS if m != "naive"]
    for round_ in range(1, args.rounds + 1):
        for label, batch in photos.items():
            for method in compared if round_ % 2 else compared[::-1]:
                seconds[label, method].append(cpu_seconds_per_photo(METHODS[method], batch, spec))
        print(f"  round {round_}/{args.rounds} done", flush=True)
    for _ in range(args.naive_rounds):
        for label, batch in photos.items():
            seconds[label, "naive"].append(cpu_seconds_per_photo(naive_normalize, batch, spec))

    print()
    print(
        "| upload | JPEG | decode alone | normalize | normalize vs decode | quartiles | target "
        "| naive | speed-up vs naive | differs from naive by |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    failed = []
    for label, width, height in UPLOADS:
        batch = photos[label]
        rate = {m: 1 / statistics.median(seconds[label, m]) for m in METHODS}
        ratios = [
            d / n
            for d, n in zip(seconds[label, "decode"], seconds[label, "normalize"], strict=True)
        ]
        ratio = statistics.median(ratios)
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        target = TARGETS.get(label, TYPICAL_TARGET)
        if ratio < target:
            failed.append(label)
        kb = statistics.mean(map(len, batch)) / 1024
        size_text = f"{kb / 1024:.1f} MB" if kb >= 1024 else f"{kb:.0f} KB"
        diff = statistics.mean(
            mean_abs_diff(imaging.normalize_image(d, spec), naive_normalize(d, spec)) for d in batch
        )
        print(
            f"| {label} ({width}×{height}) | {size_text} | {rate['decode']:.0f}/s "
            f"| {rate['normalize']:.0f}/s | **{ratio:.2f}** | {low:.2f}–{high:.2f} | ≥ {target} "
            f"| {rate['naive']:.1f}/s | {rate['normalize'] / rate['naive']:.1f}x "
            f"| {diff:.2f} grey levels |"
        )
    print()
    print(
        "targets " + ("met" if not failed else f"NOT met for {', '.join(failed)}") + " (median "
        "of per-round ratios; throughputs are medians of CPU time per photo)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
