"""The heat-map overlay: coloured where the map is hot, the photo unchanged where it is 0."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from snapcat.imaging.heat_overlay import overlay_png


def test_the_overlay_colours_the_hot_region_and_leaves_the_cold_one():
    buffer = io.BytesIO()
    Image.new("RGB", (140, 140), (128, 128, 128)).save(buffer, format="JPEG", quality=95)
    heat = np.zeros((14, 14))
    heat[:5, :5] = 1.0  # hot top-left corner
    png = overlay_png(buffer.getvalue(), heat.tolist())
    with Image.open(io.BytesIO(png)) as overlay:
        pixels = np.asarray(overlay.convert("RGB"), dtype=float)
    assert pixels.shape == (140, 140, 3)
    assert np.abs(pixels[10, 10] - 128).max() > 60  # coloured
    assert np.abs(pixels[120, 120] - 128).max() < 4  # the photo as it was
