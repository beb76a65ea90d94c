"""The resize written in place: into a region of the letterbox canvas, never outside it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from snapcat.imaging import normalize as imaging
from snapcat.imaging.resizing import pillow_view, resize


def _noise(height: int, width: int, channels: int = 4) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(height * width).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("content", [(60, 96), (96, 60), (96, 96)])  # portrait, landscape, square
def test_resize_into_a_canvas_region_writes_exactly_that_region(content):
    source = _noise(200, 300)
    canvas = imaging._blank_canvas(96)
    before = canvas.copy()
    region = imaging._centre(canvas, *content)
    resize(source, content, out=region)
    expected = resize(source, content)  # into an array of its own
    assert np.array_equal(region, expected)
    inside = np.zeros(canvas.shape[:2], bool)
    imaging._centre(inside, *content)[:] = True
    assert np.array_equal(canvas[~inside], before[~inside])  # the margins stay white
    assert (canvas[~inside] == 255).all()


def test_the_resize_matches_pillows_bicubic_within_a_grey_level():
    source = _noise(300, 400, 1)
    ours = resize(source, (150, 113)).astype(int)
    pillows = np.asarray(Image.fromarray(source).resize((150, 113), Image.Resampling.BICUBIC))
    assert np.abs(ours - pillows).mean() < 1.0


def test_a_region_without_memory_after_it_is_refused():
    plain = np.zeros((10, 10, 4), np.uint8)  # no slack: the last row's whole stride would overrun
    with pytest.raises(ValueError, match="after its last row"):
        pillow_view(plain[:, 2:8])
    assert pillow_view(plain[2:8]).size == (10, 6)  # whole rows are contiguous: fine
    with pytest.raises(ValueError, match="uint8"):
        pillow_view(np.zeros((4, 4, 3), np.uint8))  # RGB without the fourth byte


def test_an_array_of_the_size_already_is_copied_not_shared():
    source = _noise(50, 40)
    out = resize(source, (40, 50))
    assert np.array_equal(out, source) and not np.shares_memory(out, source)
