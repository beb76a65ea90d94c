"""The fast normalization path produces the picture the plain Pillow path produced.

``reference_canonical`` below is the normalization as it was before it was made fast (issue 15),
kept here as the oracle: Pillow's own DCT-scaled decode to at least ``size`` x ``size``, EXIF
rotation of the decoded picture, Pillow's bicubic resize with ``reducing_gap``, the letterbox,
and Pillow's JPEG encode (:func:`reference_encode`). At the time of the change it reproduced the
old ``normalize_image`` byte for byte on these photos. Models trained on the old outputs must not
see a different picture at serving time, so on real-looking photos (the benchmark's generated
uploads, in several sizes and both orientations, the bundled sample photos and three real
photographs) the new outputs must stay within one grey level on average of the reference, and
the pictures before the JPEG encode within half a level.
"""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_DIR
from PIL import Image, ImageOps

from snapcat.contract.image_spec import ImageSpec
from snapcat.imaging import normalize as imaging

SPEC = ImageSpec()
#: (width, height, EXIF orientation) of generated uploads: the typical 1 MP sizes, a 16:9 photo
#: (decoded one DCT step smaller than before), one decoded at full size, one shot in portrait.
GENERATED = [(1280, 960, 1), (1080, 1080, 6), (1920, 1080, 1), (1600, 1200, 8), (741, 500, 1)]


def _bench_module():
    path = REPO_ROOT / "benchmarks" / "normalize_bench.py"
    spec = importlib.util.spec_from_file_location("normalize_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    bench = _bench_module()
    generated = {}
    for seed, (width, height, orientation) in enumerate(GENERATED):
        exif = Image.Exif()
        if orientation != 1:
            exif[0x0112] = orientation
        buffer = io.BytesIO()
        bench.make_photo(width, height, seed).save(buffer, "JPEG", quality=90, exif=exif)
        generated[f"{width}x{height}-o{orientation}"] = buffer.getvalue()
    samples = sorted(SAMPLE_DIR.rglob("*.jpg"))[::40]
    assert len(samples) >= 8
    real = sorted((REPO_ROOT / "tests" / "data" / "imagenet").glob("*.jpg"))  # real photographs
    assert len(real) >= 3
    return generated | {p.name: p.read_bytes() for p in [*samples, *real]}


def reference_canonical(data: bytes, spec: ImageSpec) -> Image.Image:
    """The plain Pillow normalization (RGB JPEGs without an ICC profile, as the photos here)."""
    image = Image.open(io.BytesIO(data))
    image.draft(None, (spec.size, spec.size))
    image = ImageOps.exif_transpose(image)
    scale = spec.size / max(image.size)
    if scale < 1:
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    scale = spec.size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if target == (spec.size, spec.size):
        return image
    canvas = Image.new("RGB", (spec.size, spec.size), imaging.BACKGROUND)
    canvas.paste(image, ((spec.size - target[0]) // 2, (spec.size - target[1]) // 2))
    return canvas


def reference_encode(image: Image.Image, spec: ImageSpec) -> bytes:
    """The canonical JPEG as Pillow encoded it before: the outputs are compared to these bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=spec.jpeg_quality, subsampling=2, optimize=False)
    return buffer.getvalue()


def _canonical_picture(data: bytes) -> Image.Image:
    """The fast path's picture just before its JPEG encode, as an RGB image."""
    return Image.fromarray(np.ascontiguousarray(imaging.canonical_pixels(data, SPEC)[:, :, :3]))


def _pixels(image_or_bytes) -> np.ndarray:
    image = image_or_bytes
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_outputs_stay_within_one_grey_level_of_the_plain_pillow_path(photos):
    output_diffs, picture_diffs = {}, {}
    for name, data in photos.items():
        reference = reference_canonical(data, SPEC)
        picture = _canonical_picture(data)
        assert picture.size == reference.size == (SPEC.size, SPEC.size)
        picture_diffs[name] = np.abs(_pixels(picture) - _pixels(reference)).mean()
        output = imaging.normalize_image(data, SPEC)
        expected = reference_encode(reference, SPEC)
        output_diffs[name] = np.abs(_pixels(output) - _pixels(expected)).mean()
    report = {n: (round(picture_diffs[n], 2), round(output_diffs[n], 2)) for n in photos}
    # Re-encoding amplifies any change (quantization decisions flip), hence two bounds.
    assert np.mean(list(picture_diffs.values())) < 0.5, report
    assert np.mean(list(output_diffs.values())) < 1.0, report
    assert max(output_diffs.values()) < 1.5, report
    # The comparison can fail: the same photo decoded naively at full size and stretched to the
    # square (no letterbox) is far from the reference.
    name, data = next(iter(photos.items()))
    stretched = Image.open(io.BytesIO(data)).convert("RGB").resize((SPEC.size, SPEC.size))
    assert np.abs(_pixels(stretched) - _pixels(reference_canonical(data, SPEC))).mean() > 5
