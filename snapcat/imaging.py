"""Image normalization: turns any accepted photo into the model's canonical input bytes.

Both ``snapcat prepare`` (training data) and the serving transformer call :func:`normalize_image`,
and the model decodes the result with one TensorFlow decoder in both the training input pipeline
and the exported serving signature. So the pixels the network sees at serving time are exactly
the ones it was trained on; there is no second implementation anywhere.

The policy, in order:

1. Refuse files over ``max_bytes`` before decoding anything, and images whose header claims more
   than ``max_pixels`` before their pixels are decoded (decompression bombs).
2. Decode only the allowed formats (JPEG, PNG, WebP, GIF first frame, BMP, TIFF, HEIC/HEIF); any
   other plugin Pillow has (EPS, PSD, ...) is never even tried. Large JPEGs are decoded with DCT
   scaling ("draft" mode) straight to at least the target size: a 12 MP phone photo is decoded at
   1/8 scale, which is most of the speed-up over a naive decode.
3. Apply the EXIF orientation, so a photo shot in portrait is upright.
4. Bring every mode to 8-bit: 16-bit and float images are scaled (not clipped), transparency is
   composited onto white (a transparent background is "nothing", which white shows best), an
   embedded ICC profile (Display P3 on iPhones, CMYK press profiles) is converted to sRGB.
5. Resize with the aspect ratio kept so the longer side equals ``size``, and centre it on a white
   ``size`` x ``size`` canvas (letterbox). Nothing of the item is cropped away.
6. Encode as baseline JPEG at a fixed quality and 4:2:0 subsampling, without metadata: a few tens
   of KB per image, cheap to ship to the predictor and to store in training shards.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

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


def open_image(
    data: bytes, spec: ImageSpec, before_decode: BeforeDecode | None = None
) -> Image.Image:
    """Decodes ``data`` to an upright Pillow image, at least ``spec.size`` on its shorter side when
    the source allows, enforcing every cap. Raises a typed :class:`ImageError`."""
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
    if image.format == "JPEG" or image.format == "MPO":
        # DCT scaling: decode at the smallest 1/1..1/8 scale that still covers the target.
        image.draft(None, (spec.size, spec.size))
    if before_decode is not None:
        before_decode(image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(f"image dimensions are too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise CorruptImageError(
            f"the {image.format or 'image'} file is truncated or damaged: {exc}"
        ) from exc


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


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Converts with the embedded ICC profile when there is one; a broken profile is ignored
    (the pixels are then taken as sRGB, which is what browsers do too)."""
    if icc and image.mode in ("RGB", "CMYK", "L"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return image.convert("RGB") if image.mode != "RGB" else image


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Fits ``image`` (RGB) inside ``size`` x ``size`` keeping its aspect ratio, centred on white."""
    width, height = image.size
    scale = size / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if target == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(image, ((size - target[0]) // 2, (size - target[1]) // 2))
    return canvas


def to_canonical_image(
    data: bytes, spec: ImageSpec, before_decode: BeforeDecode | None = None
) -> Image.Image:
    """Decodes and normalizes to the ``size`` x ``size`` RGB image the canonical bytes encode."""
    image = open_image(data, spec, before_decode)
    icc = image.info.get("icc_profile")
    working = _to_working_mode(image)
    # Shrink before colour management and compositing: both are per-pixel, so this is far cheaper
    # on a 12 MP photo and visually the same.
    scale = spec.size / max(working.size)
    if scale < 1 and working.mode != "CMYK":
        target = (max(1, round(working.width * scale)), max(1, round(working.height * scale)))
        working = working.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    rgb = _to_srgb(_flatten_alpha(working), icc)
    return letterbox(rgb, spec.size)


def encode_canonical(image: Image.Image, spec: ImageSpec) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=spec.jpeg_quality, subsampling=2, optimize=False)
    return buffer.getvalue()


def normalize_image(
    data: bytes, spec: ImageSpec | None = None, before_decode: BeforeDecode | None = None
) -> bytes:
    """Photo bytes in, canonical model-input JPEG bytes out. Raises a typed :class:`ImageError`."""
    spec = spec or ImageSpec()
    return encode_canonical(to_canonical_image(data, spec, before_decode), spec)
