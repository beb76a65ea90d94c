"""A heat map blended on the photo it explains, as PNG (Pillow only): what the transformer's
``:explain`` answers (:mod:`snapcat.serve.explain`) and what the evaluation report's error
gallery shows (:mod:`snapcat.evaluate.evaluation`), drawn by one function so both look alike."""

from __future__ import annotations

import io
from collections.abc import Sequence

#: How much of the photo the hottest region covers in the overlay (the rest shows through).
OVERLAY_OPACITY = 0.6


def overlay_png(photo: bytes, heat_map: Sequence[Sequence[float]]) -> bytes:
    """The heat map, upsampled (bicubic) and coloured blue -> yellow -> red, blended on ``photo``
    (the canonical JPEG the model saw: the same square the map covers), as PNG. Where the map is
    0 the photo shows unchanged; at its peak the colour covers :data:`OVERLAY_OPACITY` of it."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(photo)) as opened:
        base = opened.convert("RGB")
    side = len(heat_map)
    levels = bytes(round(255 * v) for line in heat_map for v in line)
    heat = Image.frombytes("L", (side, side), levels).resize(base.size, Image.Resampling.BICUBIC)
    colour = ImageOps.colorize(heat, black="#2040ff", mid="#ffe000", white="#ff2000")
    mask = heat.point(lambda v: round(v * OVERLAY_OPACITY))
    buffer = io.BytesIO()
    # zlib level 3, not Pillow's 6: about a third of the encode time for ~12 % more bytes
    # (a 299 px photo: ~21 ms and 100 KB against ~58 ms and 89 KB on the dev machine)
    Image.composite(colour, base, mask).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
