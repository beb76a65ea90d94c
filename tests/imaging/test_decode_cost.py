"""Issue 24, finding 3: progressive and multi-scan JPEGs are budgeted at what libjpeg really holds
(the whole image's DCT coefficients, whatever the output scale), and a JPEG's scans are capped
in number and in work, before anything is decoded. Valid photos, progressive ones included,
still pass (``benchmarks/decode_cost_bench.py`` measures that on every sample photo)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from conftest import REPO_ROOT, make_image
from PIL import Image

from snapcat.contract.image_spec import ImageSpec
from snapcat.imaging.decode_budget import DecodeBudget, DecodeBudgetExceededError
from snapcat.imaging.jpeg_header import MAX_SCANS, read_frame
from snapcat.imaging.normalize import DecodeWorkError, normalize_image

MB = 2**20


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def many_scans(data: bytes, copies: int) -> bytes:
    """``data`` with its smallest scan repeated ``copies`` times before its end-of-image marker:
    scans libjpeg walks in full, each a few bytes."""
    bounds = []
    for match in re.finditer(rb"\xff\xda", data):
        start = match.start()
        body = start + 2 + ((data[start + 2] << 8) | data[start + 3])
        end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, body)
        bounds.append((start, end.start()))
    start, end = min(bounds, key=lambda b: b[1] - b[0])
    eoi = data.rfind(b"\xff\xd9")
    return data[:eoi] + data[start:end] * copies + data[eoi:]


def _normalize(data: bytes, per_photo_bytes: int) -> bytes:
    budget = DecodeBudget(total_bytes=per_photo_bytes, per_photo_bytes=per_photo_bytes)
    with budget.photo() as reservation:
        return normalize_image(data, ImageSpec(size=71), before_decode=reservation.admit)


def test_frame_header_gives_the_coefficient_buffer_of_multi_scan_files():
    flat = Image.new("RGB", (1000, 800), (90, 100, 110))
    baseline = read_frame(jpeg(flat, quality=80))
    assert (baseline.width, baseline.height, baseline.scans) == (1000, 800, 1)
    assert not baseline.progressive and baseline.coefficient_bytes == 0
    progressive = read_frame(jpeg(flat, quality=80, progressive=True))  # 4:2:0
    assert progressive.progressive and progressive.scans == 10
    assert progressive.sampling == ((2, 2), (1, 1), (1, 1))
    # luma 1008 x 800 (MCU-padded) + two chroma planes of 504 x 400, 2 bytes a sample
    assert progressive.coefficient_bytes == (1008 * 800 + 2 * 504 * 400) * 2
    full = read_frame(jpeg(flat, quality=80, progressive=True, subsampling=0))
    assert full.coefficient_bytes == 1000 * 800 * 3 * 2
    assert read_frame(b"\xff\xd8\xff\xda\x00\x02") is None


def test_a_small_progressive_file_is_budgeted_at_its_full_coefficients():
    """A flat 4000 x 4000 progressive JPEG is a few dozen KB and decodes at 1/8 scale (~1 MB of
    pixels), but libjpeg holds 96 MB of coefficients: over a 64 MB per-photo budget. (Was
    estimated at the scaled output only and decoded.)"""
    flat = Image.new("RGB", (4000, 4000), (120, 130, 140))
    data = jpeg(flat, quality=50, progressive=True, subsampling=0)
    assert len(data) < 200_000
    with pytest.raises(DecodeBudgetExceededError):
        _normalize(data, 64 * MB)
    # the same picture as a baseline JPEG holds no such buffer
    _normalize(jpeg(flat, quality=50, subsampling=0), 64 * MB)


def test_a_progressive_cmyk_file_through_pillow_is_budgeted_too():
    cmyk = Image.new("CMYK", (3000, 3000), (10, 20, 30, 40))
    data = jpeg(cmyk, quality=50, progressive=True)
    assert read_frame(data).coefficient_bytes == 3000 * 3000 * 4 * 2
    with pytest.raises(DecodeBudgetExceededError):
        _normalize(data, 48 * MB)
    _normalize(jpeg(cmyk, quality=50), 48 * MB)


def test_too_many_scans_are_refused_before_decoding():
    small = jpeg(make_image((200, 150), seed=4), quality=85, progressive=True)
    _normalize(small, 64 * MB)
    with pytest.raises(DecodeWorkError, match=f"over the limit of {MAX_SCANS}"):
        _normalize(many_scans(small, MAX_SCANS), 64 * MB)


def test_many_scans_of_a_big_photo_are_refused_by_their_work():
    """300 scans of a 12 MP photo are legal-looking and took seconds of CPU each request."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    data = many_scans(jpeg(noise.resize((4000, 3000)), quality=90, progressive=True), 300)
    assert read_frame(data).scans == 310 < MAX_SCANS
    with pytest.raises(DecodeWorkError, match="would take too long"):
        _normalize(data, 256 * MB)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "tests" / "data" / "imagenet").glob("*.jpg")))
def test_real_photos_and_their_progressive_versions_pass(path):
    data = path.read_bytes()
    _normalize(data, 64 * MB)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    _normalize(jpeg(image, quality=92, progressive=True), 64 * MB)
    # a 12 MP phone-size progressive one, within the shipped per-photo budget
    _normalize(jpeg(image.resize((4000, 3000)), quality=92, progressive=True), 256 * MB)
