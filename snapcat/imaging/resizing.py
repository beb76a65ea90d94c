"""The one resize of normalization: Pillow's bicubic, by fast_image_resize's SIMD code, on Pillow
images or in place on ``numpy`` memory.

Catmull-Rom (Pillow's ``BICUBIC``) with an antialiasing support that widens with the shrink
factor, like Pillow's, several times faster than Pillow's own code and within a fraction of a grey
level of it. A decoder's array is read, and the result written, through Pillow images mapped on
the arrays' memory (:func:`pillow_view`): a megapixel picture is never copied, and the result can
be written straight into a region of a bigger array (the letterbox canvas).
"""

from __future__ import annotations

import threading

import numpy as np
from cykooz_resizer import FilterType, ResizeAlg, ResizeOptions, Resizer
from cykooz_resizer.alpha import set_image_mode
from PIL import Image

_CATMULL_ROM = ResizeOptions(resize_alg=ResizeAlg.convolution(FilterType.catmull_rom))


class _ThreadResizer(threading.local):
    """A resizer per thread (the serving transformer normalizes on a thread pool): one serializes
    the calls made through it."""

    def __init__(self) -> None:
        self.resizer = Resizer()


_local = _ThreadResizer()


def resize(
    image: Image.Image | np.ndarray, size: tuple[int, int], out: np.ndarray | None = None
) -> Image.Image | np.ndarray:
    """``image`` resized to ``size`` (width, height): an 8-bit L, RGB, RGBA (alpha premultiplied)
    or CMYK Pillow image into a new one, or a grey or RGBX ``uint8`` array into ``out`` (an array
    of the same layout, or a region of one with spare memory after it: see :func:`pillow_view`)
    or a new array. An array of the size already is copied, never returned: it may be a decoder's
    reused buffer."""
    resizer = _local.resizer
    if isinstance(image, np.ndarray):
        if out is None:
            out = np.empty((size[1], size[0], *image.shape[2:]), np.uint8)
        if image.shape[1::-1] == size:
            out[:] = image
        else:
            resizer.resize_pil(pillow_view(image), pillow_view(out), _CATMULL_ROM)
        return out
    if image.size == size:
        return image
    resized = Image.new(image.mode, size, None)  # every pixel is written
    resizer.resize_pil(image, resized, _CATMULL_ROM)
    return resized


def pillow_view(pixels: np.ndarray) -> Image.Image:
    """A Pillow image on the memory of a grey or RGBX ``uint8`` array, for the resizer to read or
    write in place. An RGBX array is labelled RGB: that is how Pillow lays out RGB (fourth byte
    unused), and the label the resizer reads (as cykooz-resizer's own helper does it).

    The array is C-contiguous, or a region of rows of a C-contiguous array (Pillow's rows are
    pointers one stride apart). Pillow maps a region's last row as a whole stride, past the
    region's end, so the array it is cut from must have that much memory after it (the letterbox
    canvas keeps a row of slack); a region without it is refused."""
    height, width = pixels.shape[:2]
    row_bytes, pixel_bytes = pixels.strides[:2]
    if pixels.dtype != np.uint8 or pixel_bytes != (1 if pixels.ndim == 2 else 4):
        raise ValueError("a Pillow view needs grey or RGBX uint8 pixels, each row contiguous")
    memory = pixels
    if not pixels.flags.c_contiguous:
        base = pixels.base
        start = pixels.__array_interface__["data"][0]
        if (
            not isinstance(base, np.ndarray)
            or not base.flags.c_contiguous
            or row_bytes < width * pixel_bytes
            or start + height * row_bytes > base.__array_interface__["data"][0] + base.nbytes
        ):
            raise ValueError("a region's Pillow view needs a stride of memory after its last row")
        # The memory from the region's first pixel on, flat: ``height`` whole strides.
        memory = np.lib.stride_tricks.as_strided(pixels, shape=(height * row_bytes,), strides=(1,))
    if pixels.ndim == 2:
        return Image.frombuffer("L", (width, height), memory, "raw", "L", row_bytes, 1)
    view = Image.frombuffer("RGBX", (width, height), memory, "raw", "RGBX", row_bytes, 1)
    set_image_mode(view, "RGB")
    return view
