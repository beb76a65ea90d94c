"""Colour management for normalization: an embedded ICC profile (Display P3 on iPhones, a press
profile in a CMYK JPEG) is converted to sRGB, the colour space the model is trained in.

Phones embed the same few profiles in every photo and building a transform costs more than
applying it to a 299 px picture, so transforms are built once per distinct profile; a profile
that is sRGB already is recognised once and then skipped, so most photos pay nothing here.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageCms

#: Marks a profile whose conversion to sRGB changes no pixel by more than one grey level.
ALREADY_SRGB = "already sRGB"

#: Profiles up to this size have their transform cached (16 of them at most): phone profiles are
#: a few KB, press (CMYK) profiles up to a few hundred; a bigger one is rare, so it is not kept.
_CACHED_PROFILE_BYTES = 1024 * 1024


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | str | None:
    """The conversion of ``mode`` pixels (RGB, CMYK or L) from ``icc`` to sRGB.
    :data:`ALREADY_SRGB` for an sRGB profile (converting would change nothing); ``None`` for a
    profile that cannot be used, which is then ignored (the pixels are taken as sRGB, which is
    what browsers do too)."""
    if len(icc) > _CACHED_PROFILE_BYTES:
        return _build_srgb_transform.__wrapped__(icc, mode)
    return _build_srgb_transform(icc, mode)


def needs_conversion(icc: bytes | None, mode: str) -> bool:
    """Whether pixels of ``mode`` tagged with ``icc`` change when converted to sRGB."""
    return bool(icc) and isinstance(srgb_transform(icc, mode), ImageCms.ImageCmsTransform)


@functools.lru_cache(maxsize=16)
def _build_srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | str | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        transform = ImageCms.buildTransform(source, _srgb_profile(), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    if mode == "RGB":
        probe = _colour_probe()
        converted = ImageCms.applyTransform(probe, transform)
        if converted is not None:
            moved = np.abs(np.asarray(converted, np.int16) - np.asarray(probe, np.int16))
            if moved.max() <= 1:
                return ALREADY_SRGB
    return transform


@functools.cache
def _colour_probe() -> Image.Image:
    """Every grey level plus a 16-step cube of colours: enough to tell a profile that is sRGB."""
    grid = np.linspace(0, 255, 16).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return Image.fromarray(np.concatenate([greys, cube])[None], "RGB")


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """``image`` (RGB, CMYK or L) as sRGB: converted with the embedded ICC profile when there is
    one; a broken profile is ignored."""
    if icc and image.mode in ("RGB", "CMYK", "L"):
        transform = srgb_transform(icc, image.mode)
        if isinstance(transform, ImageCms.ImageCmsTransform):
            try:
                converted = ImageCms.applyTransform(image, transform)
                if converted is not None:
                    return converted
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                pass
    return image.convert("RGB") if image.mode != "RGB" else image
