"""Image normalization: turns any accepted photo into the model's canonical input bytes.

Both ``snapcat prepare`` (training data) and the serving transformer call :func:`normalize_image`,
and the model decodes the result with one TensorFlow decoder in both the training input pipeline
and the exported serving signature. So the pixels the network sees at serving time are exactly
the ones it was trained on; there is no second implementation anywhere.

The policy, in order:

1. Refuse files over ``max_bytes`` before decoding anything, and images whose header claims more
   than ``max_pixels`` before their pixels are decoded (decompression bombs).
2. Decode only the allowed formats (JPEG, PNG, WebP, GIF first frame, BMP, TIFF, HEIC/HEIF); any
   other plugin Pillow has (EPS, PSD, ...) is never even tried. JPEGs, nearly every upload, are
   decoded with DCT scaling at the smallest of 1/2, 1/4, 1/8 that still leaves a margin over the
   letterboxed content (:func:`plan_decode`, a step of its own so that a check can look at the
   decode size first), by libjpeg-turbo straight from memory: a 12 MP phone photo is decoded at
   1/8 scale, which is most of the speed-up over a naive decode.
3. Bring every mode to 8-bit: 16-bit and float images are scaled (not clipped).
4. Resize once, with the aspect ratio kept so the longer side equals ``size`` (bicubic, by SIMD
   code). Everything after it is per-pixel work on the small picture: transparency is
   composited onto white (a transparent background is "nothing", which white shows best), an
   embedded ICC profile (Display P3 on iPhones) is converted to sRGB (CMYK press profiles before
   the resize), and the EXIF orientation is applied, so a photo shot in portrait is upright.
5. Centre it on a white ``size`` x ``size`` canvas (letterbox). Nothing of the item is cropped.
6. Encode as baseline JPEG at a fixed quality and 4:2:0 subsampling, without metadata: a few tens
   of KB per image, cheap to ship to the predictor and to store in training shards.

A JPEG goes through all of this as ``numpy`` memory: decoded into a buffer the thread reuses,
resized in place, rotated as a view, copied once into the letterbox, encoded from there.

On a typical upload (a ~1 MP, ~200 KB JPEG) all of this costs little more than the JPEG decode
alone; ``benchmarks/normalize_bench.py`` measures it.
"""

from __future__ import annotations

import functools
import io
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simplejpeg
from cykooz_resizer import FilterType, ResizeAlg, ResizeOptions, Resizer
from cykooz_resizer.alpha import set_image_mode
from PIL import ExifTags, Image, UnidentifiedImageError

from snapcat import colour

#: Pillow plugins we decode with (JPEG covers multi-picture MPO). Others never run.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
#: Letterbox and transparency background.
BACKGROUND = (255, 255, 255)
#: The smallest input size Xception accepts; canonical images may not be smaller.
MIN_MODEL_SIZE = 71


class ImageError(ValueError):
    """An input image that cannot be used; ``reason`` is a stable machine-readable code."""

    reason = "invalid-image"


class EmptyImageError(ImageError):
    reason = "empty"


class ImageTooLargeError(ImageError):
    """The encoded file is over the byte cap (HTTP 413 at the serving edge)."""

    reason = "too-large"


class DecompressionBombError(ImageError):
    reason = "decompression-bomb"


class UnsupportedFormatError(ImageError):
    reason = "unsupported-format"


class CorruptImageError(ImageError):
    reason = "corrupt"


class ImageTooSmallError(ImageError):
    reason = "too-small"


@dataclass(frozen=True)
class ImageSpec:
    """What the model's input is, and what inputs are refused. Saved with every model."""

    size: int = 299
    jpeg_quality: int = 90
    max_bytes: int = 30 * 1024 * 1024
    max_pixels: int = 100_000_000
    min_side: int = 16

    def __post_init__(self) -> None:
        if self.size < MIN_MODEL_SIZE:
            raise ValueError(f"image size {self.size} is below the model minimum {MIN_MODEL_SIZE}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be within 1..100")


@functools.cache
def _register_plugins() -> None:
    """Loads Pillow's plugins and pillow-heif's (HEIC is what iPhones send), once per process."""
    import pillow_heif

    Image.init()
    pillow_heif.register_heif_opener()


def _human_bytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


#: Called with the opened image just before its pixels are decoded (``image.size`` is then the
#: decode scale's); raises an :class:`ImageError` to refuse it. See :mod:`snapcat.decode_budget`.
BeforeDecode = Callable[[Image.Image], None]


def open_image(data: bytes, spec: ImageSpec) -> Image.Image:
    """Opens ``data`` reading only its header, enforcing every cap that the header can tell
    (bytes, format, pixel count, smallest side). Nothing is decoded yet. Raises a typed
    :class:`ImageError`."""
    if not data:
        raise EmptyImageError("the file is empty (0 bytes)")
    if len(data) > spec.max_bytes:
        raise ImageTooLargeError(
            f"the file is {_human_bytes(len(data))}, over the {_human_bytes(spec.max_bytes)} limit"
        )
    _register_plugins()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        kind = _guess_kind(data)
        if kind in ("JPEG", "PNG"):
            # Our format's signature, but Pillow could not parse its header: a cut-off upload.
            raise CorruptImageError(f"the {kind} file is truncated or damaged") from exc
        raise UnsupportedFormatError(
            "not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(f"image dimensions are too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImageError(f"the {_guess_kind(data)} file is damaged: {exc}") from exc

    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImageError("the image header gives an empty size")
    if width * height > spec.max_pixels:
        raise DecompressionBombError(
            f"the image claims {width}x{height} = {width * height / 1e6:.0f} MP, "
            f"over the {spec.max_pixels / 1e6:.0f} MP limit"
        )
    if min(width, height) < spec.min_side:
        raise ImageTooSmallError(
            f"the image is {width}x{height}; the shorter side must be at least {spec.min_side} px"
        )
    return image


def content_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The letterboxed content of a ``width`` x ``height`` image: its longer side becomes
    ``size``, the aspect ratio is kept. (Swapping the input swaps the output, so it can be worked
    out in the stored orientation before the EXIF rotation.)"""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class DecodePlan:
    """How big a photo is decoded, chosen from its header before any pixel is decoded.

    A JPEG decoder can run its inverse DCT at 1/2, 1/4 or 1/8 scale (libjpeg-turbo has SIMD code
    for exactly these), which is most of the speed-up on a big photo. ``size`` is what the
    decoder will allocate, so a memory budget can be checked against it before decoding.
    """

    scale: int  # DCT scale denominator: 1, 2, 4 or 8 (always 1 for formats other than JPEG)
    size: tuple[int, int]  # decoded width x height, as stored (before the EXIF orientation)
    content: tuple[int, int]  # what the decoded pixels are resized to, as stored
    source: tuple[int, int]  # width x height the header gives


#: The decoded picture keeps at least 4/3 of the content's size on each side, so that a real
#: (bicubic) filter does the last part of the shrink. DCT scaling filters each 8x8 block on its
#: own: letting it do the whole shrink (1280x960 at 1/4 for 299x224) moves sharp photos by one to
#: three grey levels from a bicubic shrink, while decoding the larger scale costs little more
#: (the entropy decoding, the bulk of the time, is the same at every scale).
DCT_MARGIN = (4, 3)


def plan_decode(image: Image.Image, spec: ImageSpec) -> DecodePlan:
    """The :class:`DecodePlan` of an image opened by :func:`open_image` (nothing decoded yet):
    for a JPEG, the smallest DCT scale that leaves :data:`DCT_MARGIN` over the letterboxed
    content; other formats at full size. The scale is set on ``image`` (Pillow's draft), so
    ``image.size`` is the decode size from then on."""
    width, height = image.size
    content = content_size(width, height, spec.size)
    num, den = DCT_MARGIN
    scale = 1
    if image.format in ("JPEG", "MPO"):
        scale = next(
            (
                s
                for s in (8, 4, 2)
                if _ceil_div(width, s) * den >= content[0] * num
                and _ceil_div(height, s) * den >= content[1] * num
            ),
            1,
        )
    if scale > 1:
        # Pillow's draft picks the largest scale s <= min(width // w, height // h).
        image.draft(None, (width // scale, height // scale))
    return DecodePlan(
        scale, (_ceil_div(width, scale), _ceil_div(height, scale)), content, (width, height)
    )


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


#: Decoded pixels: a Pillow image, or for the common JPEG the decoder's own ``uint8`` array
#: (``H x W x 4`` RGBX, Pillow's own four-bytes-per-pixel layout, or ``H x W`` grey) in this
#: thread's reused decode buffer, which :func:`resize` reads in place. A megapixel picture is
#: then never copied, and its memory is not freshly mapped for every photo (the page faults
#: alone cost a twentieth of the decode).
Decoded = Image.Image | np.ndarray


class _ThreadScratch(threading.local):
    """Per thread (the serving transformer normalizes on a thread pool): a resizer, which
    serializes the calls made through it, and the decode buffer, reused from photo to photo."""

    def __init__(self) -> None:
        self.resizer = Resizer()
        self.buffer = np.empty(0, np.uint8)


_scratch = _ThreadScratch()
#: Decode buffers up to this size are kept for the thread's next photo (a 1 MP upload decoded at
#: 1/2 needs 1.2 MB, a 12 MP one at 1/8 0.75 MB); a bigger one is freed after use.
_KEPT_DECODE_BYTES = 4 * 1024 * 1024


def _decode_buffer(nbytes: int) -> np.ndarray:
    if nbytes > _KEPT_DECODE_BYTES:
        return np.empty(nbytes, np.uint8)
    if _scratch.buffer.size < nbytes:
        _scratch.buffer = np.empty(nbytes, np.uint8)
    return _scratch.buffer[:nbytes]


def decode(image: Image.Image, data: bytes, plan: DecodePlan) -> Image.Image:
    """Decodes ``image`` (opened from ``data``) as ``plan`` says, to an 8-bit L, RGB, RGBA or
    CMYK picture in the stored orientation. Raises a typed :class:`ImageError`."""
    pixels = decode_pixels(image, data, plan)
    if isinstance(pixels, np.ndarray):
        return Image.fromarray(pixels if pixels.ndim == 2 else pixels[:, :, :3])  # a copy
    return pixels


def decode_pixels(image: Image.Image, data: bytes, plan: DecodePlan) -> Decoded:
    """:func:`decode`, leaving a JPEG decoded by libjpeg-turbo as its array (see
    :data:`Decoded`; valid until this thread decodes the next photo)."""
    if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L"):
        decoded = _decode_jpeg_turbo(data, image, plan)
        if decoded is not None:
            return decoded
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(f"image dimensions are too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise CorruptImageError(
            f"the {image.format or 'image'} file is truncated or damaged: {exc}"
        ) from exc
    return _to_working_mode(image)


def _decode_jpeg_turbo(data: bytes, image: Image.Image, plan: DecodePlan) -> np.ndarray | None:
    """The common case, a YCbCr or greyscale JPEG, decoded by libjpeg-turbo straight from memory
    (simplejpeg) into the thread's decode buffer: the same pixels as Pillow's decoder at the same
    scale, without Pillow's chunked, suspending reads. ``None`` when libjpeg-turbo reads another
    size from the header than Pillow did (so the caps checked stay the caps decoded) or reports
    anything wrong, even a mere warning: Pillow then decodes it and decides (it accepts what only
    warns, refuses a truncated file)."""
    width, height = plan.size
    grey = image.mode == "L"
    try:
        if simplejpeg.decode_jpeg_header(data)[:2] != plan.source[::-1]:
            return None
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if grey else "RGBX",
            min_width=width,
            min_height=height,
            buffer=_decode_buffer(width * height * (1 if grey else 4)),
        )
    except ValueError:
        return None
    if pixels.shape[:2] != (height, width):
        return None
    return pixels.reshape(height, width) if grey else pixels


def _guess_kind(data: bytes) -> str:
    head = data[:12]
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head.startswith(b"\x89PNG"):
        return "PNG"
    if head[4:8] == b"ftyp":
        return "HEIC"
    return "image"


def _to_working_mode(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit L, RGB, RGBA or CMYK, scaling deep images instead of clipping."""
    mode = image.mode
    if mode in ("RGB", "L", "CMYK", "RGBA"):
        return image
    if mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    if mode.startswith("I;16") or mode in ("I", "F"):
        pixels = np.asarray(image).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        if mode == "F" and pixels.max(initial=0) <= 1.0:
            peak = 1.0
        scaled = np.clip(np.rint(pixels * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L")
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image
    canvas = Image.new("RGB", image.size, BACKGROUND)
    canvas.paste(image, mask=image.getchannel("A"))
    return canvas


_CATMULL_ROM = ResizeOptions(resize_alg=ResizeAlg.convolution(FilterType.catmull_rom))


def resize(image: Decoded, size: tuple[int, int]) -> Decoded:
    """Bicubic (Catmull-Rom, Pillow's ``BICUBIC``) resize of an 8-bit L, RGB, RGBA (alpha
    premultiplied) or CMYK image, or of a decoder's RGBX or grey array (then into a new array of
    the same layout), with an antialiasing support that widens with the shrink factor like
    Pillow's, by fast_image_resize's SIMD code: several times faster than Pillow's and within a
    fraction of a grey level of it."""
    resizer = _scratch.resizer
    if isinstance(image, np.ndarray):
        if image.shape[1::-1] == size:
            return image.copy()  # not a view of the decode buffer
        resized = np.empty((size[1], size[0], *image.shape[2:]), np.uint8)
        resizer.resize_pil(_pillow_view(image), _pillow_view(resized), _CATMULL_ROM)
        return resized
    if image.size == size:
        return image
    resized = Image.new(image.mode, size, None)  # every pixel is written
    resizer.resize_pil(image, resized, _CATMULL_ROM)
    return resized


def _pillow_view(pixels: np.ndarray) -> Image.Image:
    """A Pillow image on the memory of a C-contiguous grey or RGBX array, for the resizer to read
    or write in place. An RGBX array is labelled RGB: that is how Pillow lays out RGB (fourth
    byte unused), and the label the resizer reads (as cykooz-resizer's own helper does it)."""
    height, width = pixels.shape[:2]
    if pixels.ndim == 2:
        return Image.frombuffer("L", (width, height), pixels, "raw", "L", 0, 1)
    view = Image.frombuffer("RGBX", (width, height), pixels, "raw", "RGBX", 0, 1)
    set_image_mode(view, "RGB")
    return view


def _as_srgb_array(image: Decoded, icc: bytes | None) -> np.ndarray:
    """The resized picture as an sRGB ``uint8`` array (grey, RGB or RGBX), transparency on white.
    Pillow is needed only for an alpha channel or a profile that is not sRGB."""
    if isinstance(image, np.ndarray):
        mode = "L" if image.ndim == 2 else "RGB"
        if not colour.needs_conversion(icc, mode):
            return image
        image = Image.fromarray(image if image.ndim == 2 else image[:, :, :3])
    return np.asarray(colour.to_srgb(_flatten_alpha(image), icc))


#: EXIF orientation -> the array view that makes the picture upright (rows are y, columns x).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored upside down
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # shot in portrait: turn 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda a: a.swapaxes(0, 1)[::-1],  # turn 90 degrees counter-clockwise
}


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (OSError, SyntaxError, ValueError, TypeError, struct.error):
        return 1  # unreadable EXIF: take the picture as stored


#: One RGBX pixel of the background, as the ``uint32`` it is in memory.
_BACKGROUND_WORD = np.frombuffer(bytes((*BACKGROUND, 255)), np.uint32)[0]


def letterbox(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centres ``pixels`` (grey, RGB or RGBX, each side at most ``size``) on a white ``size`` x
    ``size`` RGBX canvas (the layout the encoder reads). Any view (an EXIF rotation) is read in
    the same copy, of whole 4-byte pixels for RGBX (copying 3 of every 4 bytes is 8 to 37 times
    slower)."""
    height, width = pixels.shape[:2]
    canvas = np.empty((size, size, 4), np.uint8)
    words = canvas.view(np.uint32)[:, :, 0]
    words.fill(_BACKGROUND_WORD)  # filling with a 4-tuple instead takes 50x longer
    top, left = (size - height) // 2, (size - width) // 2
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        region = words[top : top + height, left : left + width]
        region[:] = pixels.view(np.uint32)[:, :, 0]  # any view: a rotation is read here
    else:
        region = canvas[top : top + height, left : left + width, :3]
        region[:] = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return canvas


def canonical_pixels(
    data: bytes, spec: ImageSpec, before_decode: BeforeDecode | None = None
) -> np.ndarray:
    """Decodes and normalizes to the ``size`` x ``size`` RGBX array the canonical bytes encode.

    Everything after the decode works on the small picture: the one resize comes first (colour
    management and compositing are per-pixel), and the EXIF rotation, a view read by the
    letterbox's copy, last."""
    image = open_image(data, spec)
    plan = plan_decode(image, spec)
    if before_decode is not None:
        before_decode(image)
    working = decode_pixels(image, data, plan)
    icc = image.info.get("icc_profile")
    if isinstance(working, Image.Image) and working.mode == "CMYK":
        working = colour.to_srgb(working, icc)  # no meaningful resize in press colours
        icc = None
    pixels = _as_srgb_array(resize(working, plan.content), icc)
    upright = _UPRIGHT.get(_exif_orientation(image))
    return letterbox(pixels if upright is None else upright(pixels), spec.size)


def encode_canonical(image: Image.Image | np.ndarray, spec: ImageSpec) -> bytes:
    """Baseline JPEG, 4:2:0, at the spec's quality, without metadata, by libjpeg-turbo (simplejpeg:
    straight from an RGB or RGBX array, a quarter faster than through Pillow)."""
    pixels = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels),
        quality=spec.jpeg_quality,
        colorspace="RGBX" if pixels.shape[2] == 4 else "RGB",
        colorsubsampling="420",
    )


def normalize_image(
    data: bytes, spec: ImageSpec | None = None, before_decode: BeforeDecode | None = None
) -> bytes:
    """Photo bytes in, canonical model-input JPEG bytes out. Raises a typed :class:`ImageError`.
    ``before_decode`` can refuse the photo once its decode size is known."""
    spec = spec or ImageSpec()
    return encode_canonical(canonical_pixels(data, spec, before_decode), spec)
