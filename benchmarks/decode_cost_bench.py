"""What the JPEG decode-cost checks refuse, and what they save (issue 24, finding 3).

1. **False rejections** on valid JPEGs: every photo in ``data/sample`` and ``tests/data/imagenet``
   as it is, re-encoded progressive by libjpeg (Pillow, its default 10-scan script, 4:2:0), and
   upscaled to phone sizes (12 MP and 48 MP) progressive, normalized with the decode budget of
   the shipped transformer (1 GiB container: 350 MB for all photos, 256 MB for one). Prints how
   many were refused and why.
2. **Memory**: the peak RSS of decoding a progressive 8000 x 8000 JPEG (a few hundred KB) in a
   fresh process, against the budget's estimate, and against the estimate without the
   coefficient buffer (the old one).
3. **CPU**: a 12 MP progressive file with its smallest scan repeated (many legal-looking scans):
   CPU seconds to decode without the check, and to be refused with it.

    .venv/bin/python benchmarks/decode_cost_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from snapcat.contract.image_spec import ImageSpec  # noqa: E402
from snapcat.imaging.decode_budget import DecodeBudget, estimate_decode_bytes  # noqa: E402
from snapcat.imaging.jpeg_header import read_frame  # noqa: E402
from snapcat.imaging.normalize import ImageError, JpegTarget, normalize_image  # noqa: E402

MB = 2**20


def progressive(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, progressive=True)
    return buffer.getvalue()


def false_rejections(quick: bool) -> None:
    photos = sorted((REPO_ROOT / "data" / "sample").glob("*/*.jpg"))
    photos += sorted((REPO_ROOT / "tests" / "data" / "imagenet").glob("*.jpg"))
    if quick:
        photos = photos[::8]
    budget = DecodeBudget(total_bytes=350 * MB, per_photo_bytes=256 * MB, deadline_seconds=60)
    spec = ImageSpec()
    counts: dict[str, int] = {}
    refused: dict[str, list[str]] = {}
    scans: list[int] = []

    def run(kind: str, name: str, data: bytes) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        frame = read_frame(data)
        if frame is not None:
            scans.append(frame.scans)
        try:
            with budget.photo() as reservation:
                normalize_image(data, spec, before_decode=reservation.admit)
        except ImageError as exc:
            refused.setdefault(kind, []).append(f"{name}: {exc.reason}: {exc}")

    for index, path in enumerate(photos):
        data = path.read_bytes()
        run("original", path.name, data)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        run("progressive", path.name, progressive(image))
        if index % (4 if quick else 8) == 0:  # phone sizes: fewer, they take seconds each
            run("progressive 12 MP", path.name, progressive(image.resize((4000, 3000))))
            run("progressive 48 MP", path.name, progressive(image.resize((8000, 6000))))
    total = sum(counts.values())
    wrong = sum(len(v) for v in refused.values())
    print(f"false rejections: {wrong} of {total} valid JPEGs ({100 * wrong / total:.2f} %)")
    for kind, n in counts.items():
        print(f"  {kind:18s} {len(refused.get(kind, [])):3d} refused of {n}")
    for kind, lines in refused.items():
        for line in lines[:5]:
            print(f"    {kind}: {line}")
    print(f"  scans per file: min {min(scans)}, max {max(scans)}")


# The peak is VmHWM, reset first (ru_maxrss is inherited from the parent across fork and exec).
_PEAK = """
import re, sys
sys.path.insert(0, {root!r})
from snapcat.contract.image_spec import ImageSpec
from snapcat.imaging.normalize import normalize_image
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) * 1024
data = open({path!r}, "rb").read()
open("/proc/self/clear_refs", "w").write("5")
before = hwm()
normalize_image(data, ImageSpec())
print(hwm() - before)
"""


def memory(tmp: Path) -> None:
    side = 8000
    image = Image.new("RGB", (side, side), (120, 130, 140))
    for subsampling, label in ((0, "4:4:4"), (2, "4:2:0")):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=50, progressive=True, subsampling=subsampling)
        data = buffer.getvalue()
        path = tmp / f"progressive-{label.replace(':', '')}.jpg"
        path.write_bytes(data)
        code = _PEAK.format(root=str(REPO_ROOT), path=str(path))
        peak = int(subprocess.check_output([sys.executable, "-c", code], text=True).split()[-1])
        frame = read_frame(data)
        size = (side // 8, side // 8)
        old = estimate_decode_bytes(JpegTarget("RGB", size))
        new = estimate_decode_bytes(JpegTarget("RGB", size, held_bytes=frame.coefficient_bytes))
        print(
            f"progressive {side}x{side} {label}, {len(data) / 1024:.0f} KB: decoding adds "
            f"{peak / MB:.0f} MiB RSS; estimate now {new / MB:.0f} MiB (was {old / MB:.0f} MiB)"
        )


def _scan_bounds(data: bytes) -> list[tuple[int, int]]:
    bounds = []
    for match in re.finditer(rb"\xff\xda", data):
        start = match.start()
        body = start + 2 + ((data[start + 2] << 8) | data[start + 3])
        end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, body)
        bounds.append((start, end.start()))
    return bounds


def many_scans(data: bytes, copies: int) -> bytes:
    """``data`` with its smallest scan repeated ``copies`` times before the end of image."""
    start, end = min(_scan_bounds(data), key=lambda b: b[1] - b[0])
    eoi = data.rfind(b"\xff\xd9")
    return data[:eoi] + data[start:end] * copies + data[eoi:]


def cpu() -> None:
    import snapcat.imaging.normalize as imaging

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    data = many_scans(progressive(noise.resize((4000, 3000))), 300)
    frame = read_frame(data)
    start = time.process_time()
    try:
        normalize_image(data, ImageSpec())
    except ImageError as exc:
        refused = f"refused ({exc.reason})"
    checked = time.process_time() - start
    limit = imaging.MAX_DECODE_WORK
    imaging.MAX_DECODE_WORK = 10**18
    saved = imaging.MAX_SCANS
    imaging.MAX_SCANS = 10**6
    try:
        start = time.process_time()
        normalize_image(data, ImageSpec())
        unchecked = time.process_time() - start
    finally:
        imaging.MAX_DECODE_WORK, imaging.MAX_SCANS = limit, saved
    print(
        f"12 MP progressive with {frame.scans} scans ({len(data) / MB:.1f} MB): decoded without "
        f"the check in {unchecked:.2f} s CPU; with it {refused} in {checked * 1000:.0f} ms "
        f"({unchecked / max(checked, 1e-6):.0f}x less)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every 8th photo only")
    args = parser.parse_args()
    import tempfile

    false_rejections(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        memory(Path(tmp))
    cpu()


if __name__ == "__main__":
    main()
