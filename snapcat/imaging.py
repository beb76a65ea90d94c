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
from cykooz_resizer import FilterType, ImageData, PixelType, ResizeAlg, ResizeOptions, Resizer
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

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
#: (``H x W x 3`` RGB or ``H x W`` grey), which :func:`resize` shrinks without first copying the
#: megapixel picture into Pillow's four-bytes-per-pixel layout (a quarter of what follows the
#: decode of a 1 MP upload).
Decoded = Image.Image | np.ndarray


def decode(image: Image.Image, data: bytes, plan: DecodePlan) -> Image.Image:
    """Decodes ``image`` (opened from ``data``) as ``plan`` says, to an 8-bit L, RGB, RGBA or
    CMYK picture in the stored orientation. Raises a typed :class:`ImageError`."""
    pixels = decode_pixels(image, data, plan)
    if isinstance(pixels, np.ndarray):
        return Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    return pixels


def decode_pixels(image: Image.Image, data: bytes, plan: DecodePlan) -> Decoded:
    """:func:`decode`, leaving a JPEG decoded by libjpeg-turbo as its array (see
    :data:`Decoded`)."""
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
    (simplejpeg): the same pixels as Pillow's decoder at the same scale, without Pillow's
    chunked, suspending reads. ``None`` when libjpeg-turbo reads another size from the header
    than Pillow did (so the caps checked stay the caps decoded) or reports anything wrong, even a
    mere warning: Pillow then decodes it and decides (it accepts what only warns, refuses a
    truncated file)."""
    width, height = plan.size
    try:
        if simplejpeg.decode_jpeg_header(data)[:2] != plan.source[::-1]:
            return None
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if image.mode == "L" else "RGB",
            min_width=width,
            min_height=height,
        )
    except ValueError:
        return None
    if pixels.shape[:2] != (height, width):
        return None
    return pixels[:, :, 0] if image.mode == "L" else pixels


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


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


#: Marks a profile whose conversion to sRGB changes no pixel by more than one grey level.
_ALREADY_SRGB = "already sRGB"


#: Profiles up to this size have their transform cached (16 of them at most): phone profiles are
#: a few KB, press (CMYK) profiles up to a few hundred; a bigger one is rare, so it is not kept.
_CACHED_PROFILE_BYTES = 1024 * 1024


def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | str | None:
    """The conversion from ``icc`` to sRGB, built once per distinct profile (phones embed the
    same few profiles in every photo, and building a transform costs more than applying it).
    ``_ALREADY_SRGB`` for an sRGB profile (converting would change nothing); ``None`` for a
    profile that cannot be used, which is then ignored (the pixels are taken as sRGB, which is
    what browsers do too)."""
    if len(icc) > _CACHED_PROFILE_BYTES:
        return _build_srgb_transform.__wrapped__(icc, mode)
    return _build_srgb_transform(icc, mode)


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
                return _ALREADY_SRGB
    return transform


@functools.cache
def _colour_probe() -> Image.Image:
    """Every grey level plus a 16-step cube of colours: enough to tell a profile that is sRGB."""
    grid = np.linspace(0, 255, 16).round().astype(np.uint8)
    cube = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1).reshape(-1, 3)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return Image.fromarray(np.concatenate([greys, cube])[None], "RGB")


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Converts with the embedded ICC profile when there is one; a broken profile is ignored."""
    if icc and image.mode in ("RGB", "CMYK", "L"):
        transform = _srgb_transform(icc, image.mode)
        if isinstance(transform, ImageCms.ImageCmsTransform):
            try:
                converted = ImageCms.applyTransform(image, transform)
                if converted is not None:
                    return converted
            except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
                pass
    return image.convert("RGB") if image.mode != "RGB" else image


_resizers = threading.local()
_CATMULL_ROM = ResizeOptions(resize_alg=ResizeAlg.convolution(FilterType.catmull_rom))


def resize(image: Decoded, size: tuple[int, int]) -> Image.Image:
    """Bicubic (Catmull-Rom, Pillow's ``BICUBIC``) resize of an 8-bit L, RGB, RGBA (alpha
    premultiplied) or CMYK image, or of a decoder's grey/RGB array, with an antialiasing support
    that widens with the shrink factor like Pillow's, by fast_image_resize's SIMD code: several
    times faster than Pillow's and within a fraction of a grey level of it. One resizer per
    thread: a resizer serializes the calls made through it, and the serving transformer
    normalizes on a thread pool."""
    resizer = getattr(_resizers, "resizer", None)
    if resizer is None:
        resizer = _resizers.resizer = Resizer()
    if isinstance(image, np.ndarray):
        mode, pixel_type = ("L", PixelType.U8) if image.ndim == 2 else ("RGB", PixelType.U8x3)
        height, width = image.shape[:2]
        if (width, height) == size:
            return Image.fromarray(image, mode)
        source = ImageData(width, height, pixel_type, image.tobytes())
        target = ImageData(size[0], size[1], pixel_type)
        resizer.resize(source, target, _CATMULL_ROM)
        return Image.frombuffer(mode, size, target.get_buffer(), "raw", mode, 0, 1)
    if image.size == size:
        return image
    resized = Image.new(image.mode, size, None)  # every pixel is written
    resizer.resize_pil(image, resized, _CATMULL_ROM)
    return resized


#: EXIF orientation -> the transposition that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (OSError, SyntaxError, ValueError, TypeError, struct.error):
        return 1  # unreadable EXIF: take the picture as stored


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Fits ``image`` (RGB) inside ``size`` x ``size`` keeping its aspect ratio, centred on white."""
    target = content_size(image.width, image.height, size)
    image = resize(image, target)
    if target == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(image, ((size - target[0]) // 2, (size - target[1]) // 2))
    return canvas


def to_canonical_image(
    data: bytes, spec: ImageSpec, before_decode: BeforeDecode | None = None
) -> Image.Image:
    """Decodes and normalizes to the ``size`` x ``size`` RGB image the canonical bytes encode.

    Everything after the decode works on the small picture: the one resize comes first (colour
    management and compositing are per-pixel), and the EXIF rotation last."""
    image = open_image(data, spec)
    plan = plan_decode(image, spec)
    if before_decode is not None:
        before_decode(image)
    working = decode_pixels(image, data, plan)
    icc = image.info.get("icc_profile")
    if (
        isinstance(working, Image.Image) and working.mode == "CMYK"
    ):  # no meaningful resize in press colours: to sRGB first
        working = _to_srgb(working, icc)
        icc = None
    rgb = _to_srgb(_flatten_alpha(resize(working, plan.content)), icc)
    transpose = _UPRIGHT.get(_exif_orientation(image))
    if transpose is not None:
        rgb = rgb.transpose(transpose)
    return letterbox(rgb, spec.size)


def encode_canonical(image: Image.Image, spec: ImageSpec) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=spec.jpeg_quality, subsampling=2, optimize=False)
    return buffer.getvalue()


def normalize_image(
    data: bytes, spec: ImageSpec | None = None, before_decode: BeforeDecode | None = None
) -> bytes:
    """Photo bytes in, canonical model-input JPEG bytes out. Raises a typed :class:`ImageError`.
    ``before_decode`` can refuse the photo once its decode size is known."""
    spec = spec or ImageSpec()
    return encode_canonical(to_canonical_image(data, spec, before_decode), spec)
