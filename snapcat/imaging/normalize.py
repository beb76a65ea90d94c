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
   letterboxed content (:func:`decode_scale`; the plan is made before decoding so that a check can
   look at the decode size first), by libjpeg-turbo straight from memory: a 12 MP phone photo is
   decoded at 1/8 scale, which is most of the speed-up over a naive decode. A JPEG's header is
   read without Pillow too (:mod:`snapcat.imaging.jpeg_header`); Pillow opens only the other formats, a
   CMYK JPEG, and a JPEG that libjpeg-turbo reads with any complaint (Pillow then decides).
3. Bring every mode to 8-bit: 16-bit and float images are scaled (not clipped).
4. Resize once, with the aspect ratio kept so the longer side equals ``size`` (bicubic, by SIMD
   code: :mod:`snapcat.imaging.resizing`). Everything after it is per-pixel work on the small picture:
   transparency is composited onto white (a transparent background is "nothing", which white
   shows best), an embedded ICC profile (Display P3 on iPhones) is converted to sRGB (CMYK press
   profiles before the resize), and the EXIF orientation is applied, so a photo shot in portrait
   is upright.
5. Centre it on a white ``size`` x ``size`` canvas (letterbox). Nothing of the item is cropped.
6. Encode as baseline JPEG at a fixed quality and 4:2:0 subsampling, without metadata: a few tens
   of KB per image, cheap to ship to the predictor and to store in training shards.

A JPEG goes through all of this as ``numpy`` memory: decoded into a buffer the thread reuses,
resized straight into the letterbox canvas (or, when it must be rotated or colour-converted,
into a small array then copied into the canvas as a rotated view), encoded from there.

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
from typing import Protocol

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, UnidentifiedImageError

from snapcat.contract.image_spec import ImageSpec
from snapcat.errors import SnapcatError, human_bytes
from snapcat.imaging import colour
from snapcat.imaging.jpeg_header import (
    MAX_SCANS,
    JpegHeader,
    TooManySegmentsError,
    read_frame,
    read_jpeg_header,
)
from snapcat.imaging.resizing import resize

#: Pillow plugins we decode with (JPEG covers multi-picture MPO). Others never run.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
#: Letterbox and transparency background.
BACKGROUND = (255, 255, 255)


class ImageError(SnapcatError, ValueError):
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


class DecodeWorkError(ImageError):
    """A JPEG whose scans would take too much CPU to decode (refused before decoding)."""

    reason = "over-decode-work"
    status = 413


class ImageTooSmallError(ImageError):
    reason = "too-small"


@functools.cache
def _register_plugins() -> None:
    """Loads Pillow's plugins and pillow-heif's (HEIC is what iPhones send), once per process."""
    import pillow_heif

    Image.init()
    pillow_heif.register_heif_opener()


class DecodeTarget(Protocol):
    """What :data:`BeforeDecode` is shown of a photo: its format, the mode its pixels decode to
    and the size they decode at (a Pillow image opened by :func:`open_image` is one too)."""

    format: str | None
    mode: str
    size: tuple[int, int]


@dataclass(frozen=True)
class JpegTarget:
    """The :class:`DecodeTarget` of a JPEG: decoded without Pillow, or (``image``) a Pillow image
    opened from one. ``held_bytes``: what the decoder holds besides the output, whatever the
    scale (a progressive or multi-scan file's full-size DCT coefficients)."""

    mode: str
    size: tuple[int, int]
    format: str = "JPEG"
    held_bytes: int = 0


#: The most decode work a JPEG may take, in coefficients walked: its scans times the whole
#: image's coefficients (all components). libjpeg walks every block of a component in each scan
#: that codes it, so this bounds a photo's decode CPU: measured ~0.5 s per 10^9 on the 2-core
#: development machine (benchmarks/decode_cost_bench.py). A 48 MP 4:2:0 phone photo in 10
#: progressive scans is 0.72e9; 883 scans of a 10 MP one took 19 s before this bound.
MAX_DECODE_WORK = 2_000_000_000


def jpeg_held_bytes(data: bytes) -> int:
    """What decoding ``data`` holds beyond its output: a progressive or multi-scan JPEG's
    full-image coefficient buffer (2 bytes a sample, whatever the DCT scale). Refuses a file of
    more than :data:`~snapcat.imaging.jpeg_header.MAX_SCANS` scans or :data:`MAX_DECODE_WORK`."""
    frame = read_frame(data)
    if frame is None:
        return 0
    if frame.scans > MAX_SCANS:
        raise DecodeWorkError(
            f"the JPEG file has {frame.scans} scans, over the limit of {MAX_SCANS}"
        )
    coefficients = frame.coefficient_bytes // 2 or frame.width * frame.height * len(frame.sampling)
    if max(frame.scans, 1) * coefficients > MAX_DECODE_WORK:
        raise DecodeWorkError(
            f"decoding this {frame.width}x{frame.height} JPEG's {frame.scans} scans would take "
            "too long; send it with fewer scans (a baseline JPEG)"
        )
    return frame.coefficient_bytes


#: Called with the photo's :class:`DecodeTarget` just before its pixels are decoded; raises an
#: :class:`ImageError` to refuse it. See :mod:`snapcat.imaging.decode_budget`.
BeforeDecode = Callable[[DecodeTarget], None]


def _check_file(data: bytes, spec: ImageSpec) -> None:
    if not data:
        raise EmptyImageError("the file is empty (0 bytes)")
    if len(data) > spec.max_bytes:
        raise ImageTooLargeError(
            f"the file is {human_bytes(len(data))}, over the {human_bytes(spec.max_bytes)} limit"
        )


def _check_dimensions(width: int, height: int, spec: ImageSpec) -> None:
    """The caps a header can tell: an empty size, a pixel count over the spec's (decompression
    bombs), a side too short to see anything."""
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


def open_image(data: bytes, spec: ImageSpec) -> Image.Image:
    """Opens ``data`` with Pillow reading only its header, enforcing every cap that the header can
    tell (bytes, format, pixel count, smallest side). Nothing is decoded yet. Raises a typed
    :class:`ImageError`."""
    _check_file(data, spec)
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
    _check_dimensions(*image.size, spec)
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


#: The decoded picture keeps at least 4/3 of the content's size on each side, so that a real
#: (bicubic) filter does the last part of the shrink. DCT scaling filters each 8x8 block on its
#: own: letting it do the whole shrink (1280x960 at 1/4 for 299x224) moves sharp photos by one to
#: three grey levels from a bicubic shrink, while decoding the larger scale costs little more
#: (the entropy decoding, the bulk of the time, is the same at every scale).
DCT_MARGIN = (4, 3)


def decode_scale(width: int, height: int, content: tuple[int, int]) -> int:
    """The smallest JPEG DCT scale (8, 4, 2, else 1) that leaves :data:`DCT_MARGIN` over the
    letterboxed ``content`` of a ``width`` x ``height`` photo."""
    num, den = DCT_MARGIN
    return next(
        (
            s
            for s in (8, 4, 2)
            if _ceil_div(width, s) * den >= content[0] * num
            and _ceil_div(height, s) * den >= content[1] * num
        ),
        1,
    )


def _plan(width: int, height: int, spec: ImageSpec, *, jpeg: bool) -> DecodePlan:
    content = content_size(width, height, spec.size)
    scale = decode_scale(width, height, content) if jpeg else 1
    size = (_ceil_div(width, scale), _ceil_div(height, scale))
    return DecodePlan(scale, size, content)


def plan_decode(image: Image.Image, spec: ImageSpec) -> DecodePlan:
    """The :class:`DecodePlan` of an image opened by :func:`open_image` (nothing decoded yet):
    for a JPEG, :func:`decode_scale`; other formats at full size. The scale is set on ``image``
    (Pillow's draft), so ``image.size`` is the decode size from then on."""
    width, height = image.size
    plan = _plan(width, height, spec, jpeg=image.format in ("JPEG", "MPO"))
    if plan.scale > 1:
        # Pillow's draft picks the largest scale s <= min(width // w, height // h).
        image.draft(None, (width // plan.scale, height // plan.scale))
    return plan


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


#: Decoded pixels: a Pillow image, or for the common JPEG the decoder's own ``uint8`` array
#: (``H x W x 4`` RGBX, Pillow's own four-bytes-per-pixel layout, or ``H x W`` grey) in this
#: thread's reused decode buffer, which :func:`snapcat.imaging.resizing.resize` reads in place. A
#: megapixel picture is then never copied, and its memory is not freshly mapped for every photo
#: (the page faults alone cost a twentieth of the decode).
Decoded = Image.Image | np.ndarray


class _ThreadScratch(threading.local):
    """The decode buffer of a thread (the serving transformer normalizes on a thread pool),
    reused from photo to photo."""

    def __init__(self) -> None:
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
    """Decodes ``image`` (opened from ``data`` by :func:`open_image`) as ``plan`` says, with
    Pillow, to an 8-bit L, RGB, RGBA or CMYK picture in the stored orientation. Raises a typed
    :class:`ImageError`."""
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


def decode_jpeg_turbo(data: bytes, header: JpegHeader, plan: DecodePlan) -> np.ndarray | None:
    """A YCbCr, RGB or greyscale JPEG decoded by libjpeg-turbo straight from memory (simplejpeg)
    into the thread's decode buffer (see :data:`Decoded`): the same pixels as Pillow's decoder at
    the same scale, without Pillow's chunked, suspending reads. ``None`` when libjpeg-turbo
    reports anything wrong, even a mere warning: Pillow then decodes it and decides (it accepts
    what only warns, refuses a truncated file)."""
    width, height = plan.size
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if header.grey else "RGBX",
            min_width=width,
            min_height=height,
            buffer=_decode_buffer(width * height * (1 if header.grey else 4)),
        )
    except ValueError:
        return None
    if pixels.shape[:2] != (height, width):
        return None
    return pixels.reshape(height, width) if header.grey else pixels


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


def _as_srgb_array(image: Decoded, icc: bytes | None) -> np.ndarray:
    """The resized picture as an sRGB ``uint8`` array (grey, RGB or RGBX), transparency on white.
    Pillow is needed only for an alpha channel or a profile that is not sRGB."""
    if isinstance(image, np.ndarray):
        if not colour.needs_conversion(icc, "L" if image.ndim == 2 else "RGB"):
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


def _blank_canvas(size: int) -> np.ndarray:
    """A white ``size`` x ``size`` RGBX canvas (the layout the encoder reads). Its memory runs
    one row past its end, so that the resize can write into a centred region of it (see
    :func:`snapcat.imaging.resizing.pillow_view`)."""
    memory = np.empty((size + 1) * size * 4, np.uint8)
    canvas = memory[: size * size * 4].reshape(size, size, 4)
    canvas.view(np.uint32).fill(_BACKGROUND_WORD)  # filling with a 4-tuple takes 50x longer
    return canvas


def _centre(canvas: np.ndarray, width: int, height: int) -> np.ndarray:
    """The ``width`` x ``height`` region in the middle of ``canvas`` (a view)."""
    top, left = (canvas.shape[0] - height) // 2, (canvas.shape[1] - width) // 2
    return canvas[top : top + height, left : left + width]


def _paste_centred(canvas: np.ndarray, pixels: np.ndarray) -> None:
    """Copies ``pixels`` (grey, RGB or RGBX; any view: an EXIF rotation is read here) into the
    middle of ``canvas``, whole 4-byte pixels at a time for RGBX (copying 3 of every 4 bytes is
    8 to 37 times slower)."""
    height, width = pixels.shape[:2]
    region = _centre(canvas, width, height)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        region.view(np.uint32)[:, :, 0] = pixels.view(np.uint32)[:, :, 0]
    else:
        region[:, :, :3] = pixels[:, :, None] if pixels.ndim == 2 else pixels


def _compose(
    working: Decoded, content: tuple[int, int], icc: bytes | None, orientation: int, size: int
) -> np.ndarray:
    """The letterboxed ``size`` px canvas of decoded pixels: one resize to ``content`` first (the
    rest is per-pixel work on the small picture), colour management, then the EXIF rotation as
    a view read by the copy into the canvas. An upright sRGB RGBX picture, most JPEGs, is
    resized straight into the canvas."""
    canvas = _blank_canvas(size)
    upright = _UPRIGHT.get(orientation)
    if (
        upright is None
        and isinstance(working, np.ndarray)
        and working.ndim == 3
        and not colour.needs_conversion(icc, "RGB")
    ):
        resize(working, content, out=_centre(canvas, *content))
        return canvas
    pixels = _as_srgb_array(resize(working, content), icc)
    _paste_centred(canvas, pixels if upright is None else upright(pixels))
    return canvas


class _AdmitOnce:
    """``before_decode`` called at most once a photo, also when the JPEG path hands a photo to
    Pillow after admitting it (the decode budget would otherwise reserve it twice)."""

    def __init__(self, before_decode: BeforeDecode | None) -> None:
        self._before_decode = before_decode

    def __call__(self, target: DecodeTarget) -> None:
        if self._before_decode is not None:
            before_decode, self._before_decode = self._before_decode, None
            before_decode(target)


def _canonical_jpeg(data: bytes, spec: ImageSpec, admit: _AdmitOnce) -> np.ndarray | None:
    """:func:`canonical_pixels` of a JPEG read and decoded without Pillow; ``None`` when it
    must take Pillow's path (see :func:`snapcat.imaging.jpeg_header.read_jpeg_header` and
    :func:`decode_jpeg_turbo`)."""
    try:
        header = read_jpeg_header(data)
    except TooManySegmentsError as exc:
        raise CorruptImageError(f"the JPEG file has {exc}") from exc
    if header is None:
        return None
    _check_dimensions(header.width, header.height, spec)
    held = jpeg_held_bytes(data)
    plan = _plan(header.width, header.height, spec, jpeg=True)
    admit(JpegTarget("L" if header.grey else "RGB", plan.size, held_bytes=held))
    pixels = decode_jpeg_turbo(data, header, plan)
    if pixels is None:
        return None
    return _compose(pixels, plan.content, header.icc_profile, header.orientation, spec.size)


def canonical_pixels(
    data: bytes, spec: ImageSpec, before_decode: BeforeDecode | None = None
) -> np.ndarray:
    """Decodes and normalizes to the ``size`` x ``size`` RGBX array the canonical bytes encode:
    a JPEG without Pillow when libjpeg-turbo reads it cleanly, anything else with Pillow."""
    _check_file(data, spec)
    admit = _AdmitOnce(before_decode)
    canvas = _canonical_jpeg(data, spec, admit)
    if canvas is not None:
        return canvas
    image = open_image(data, spec)
    plan = plan_decode(image, spec)
    if image.format in ("JPEG", "MPO"):
        held = jpeg_held_bytes(data)
        admit(JpegTarget(image.mode, image.size, image.format, held) if held else image)
    else:
        admit(image)
    working = decode(image, data, plan)
    icc = image.info.get("icc_profile")
    if working.mode == "CMYK":
        working = colour.to_srgb(working, icc)  # no meaningful resize in press colours
        icc = None
    return _compose(working, plan.content, icc, _exif_orientation(image), spec.size)


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
