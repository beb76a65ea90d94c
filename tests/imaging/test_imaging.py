"""Image normalization: every accepted format to the same canonical JPEG; every bad input refused
with a typed error, cheaply."""

from __future__ import annotations

import concurrent.futures
import functools
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from conftest import encode, make_image, make_image_bytes
from PIL import Image, ImageCms, ImageDraw, JpegImagePlugin

from snapcat.contract.image_spec import MIN_MODEL_SIZE, ImageSpec
from snapcat.imaging import normalize as imaging
from snapcat.imaging.jpeg_header import read_jpeg_header
from snapcat.imaging.normalize import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedFormatError,
    normalize_image,
)

SIZE = 96
SPEC = ImageSpec(size=SIZE)
RED = (220, 20, 20)


def canonical(data: bytes, spec: ImageSpec = SPEC) -> Image.Image:
    out = Image.open(io.BytesIO(normalize_image(data, spec)))
    out.load()
    return out


def pixels(data: bytes, spec: ImageSpec = SPEC) -> np.ndarray:
    return np.asarray(canonical(data, spec)).astype(int)


def close(a, b, tol=12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


def assert_canonical(out: Image.Image, size: int = SIZE) -> None:
    """The canonical form: baseline 4:2:0 RGB JPEG of size x size, without any metadata."""
    assert out.format == "JPEG"
    assert out.mode == "RGB"
    assert out.size == (size, size)
    assert not out.info.get("progressive") and not out.info.get("progression")
    assert JpegImagePlugin.get_sampling(out) == 2  # 4:2:0
    assert "exif" not in out.info and "icc_profile" not in out.info
    assert not out.getexif()


# ------------------------------------------------------------------------- accepted formats
ACCEPTED = [
    ("JPEG", "RGB", {"quality": 95}),
    ("PNG", "RGB", {}),
    ("PNG", "P", {}),
    ("PNG", "RGBA", {}),
    ("PNG", "L", {}),
    ("WEBP", "RGB", {"quality": 95}),
    ("WEBP", "RGBA", {"lossless": True}),
    ("GIF", "P", {}),
    ("BMP", "RGB", {}),
    ("TIFF", "RGB", {}),
    ("TIFF", "RGB", {"compression": "tiff_lzw"}),
    ("HEIF", "RGB", {"quality": 95}),
]


@pytest.mark.parametrize(("fmt", "mode", "kwargs"), ACCEPTED)
def test_accepted_format_becomes_canonical(fmt, mode, kwargs):
    # A flat landscape image 160x100: scaled to 96x60 and letterboxed with 18 white rows above
    # and below; its colour must survive (grey for "L").
    colour = RED if mode != "L" else (128, 128, 128)
    image = Image.new("RGB", (160, 100), colour).convert(mode)
    data = encode(image, fmt, **kwargs)
    assert Image.open(io.BytesIO(data)).format == fmt
    out = canonical(data)
    assert_canonical(out)
    arr = np.asarray(out).astype(int)
    assert close(arr[48, 48], colour)
    assert close(arr[20:76, 5].mean(axis=0), colour)
    assert (arr[:16] >= 245).all() and (arr[-16:] >= 245).all()  # letterbox bands are white


def test_default_spec_is_299_px():
    out = Image.open(io.BytesIO(normalize_image(make_image_bytes("JPEG", size=(400, 300)))))
    assert_canonical(out, 299)


def test_output_is_deterministic_and_small():
    data = make_image_bytes("JPEG", size=(640, 480), seed=3)
    first = normalize_image(data, ImageSpec())
    assert first == normalize_image(data, ImageSpec())
    assert len(first) < 60_000  # a few tens of KB at 299 px


def test_threads_normalizing_at_once_get_the_same_bytes():
    """The serving transformer normalizes on a thread pool; the decoder, resizer and colour
    transforms release the GIL, so they really run at once."""
    photos = [make_image_bytes("JPEG", size=(900, 600), seed=s) for s in range(3)]
    photos.append(make_image_bytes("PNG", size=(300, 500), mode="RGBA", seed=3))
    photos.append(make_image_bytes("JPEG", size=(500, 400), seed=4, icc_profile=_srgb_icc()))
    expected = [normalize_image(p, SPEC) for p in photos]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: normalize_image(p, SPEC), photos * 6))
    assert results == expected * 6


def test_the_reused_decode_buffer_leaves_no_trace_of_the_previous_photo():
    """Each thread decodes JPEGs into one buffer it keeps: a photo normalized after others of
    other sizes and modes (a bigger one, a grey one, one decoded bigger than the buffer kept)
    gets the bytes it gets in a thread that never decoded anything."""
    photo = (make_image_bytes("JPEG", size=(640, 480), seed=5), SPEC)
    others = [
        (make_image_bytes("JPEG", size=(1280, 960), seed=6), SPEC),
        (make_image_bytes("JPEG", size=(800, 600), mode="L", seed=7), SPEC),
        # Decoded at full size for a 1200 px canvas: 2400x1800 RGBX, 17 MB, over the kept 4 MB.
        (make_image_bytes("JPEG", size=(2400, 1800), seed=8), ImageSpec(size=1200)),
    ]

    def in_a_new_thread(*photos: tuple[bytes, ImageSpec]) -> list[bytes]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: [normalize_image(d, s) for d, s in photos]).result()

    (fresh,) = in_a_new_thread(photo)
    assert in_a_new_thread(*others, photo)[-1] == fresh
    assert in_a_new_thread(photo, *others, photo)[-1] == fresh


def test_letterbox_keeps_aspect_ratio_and_centres():
    # 200x100 at 96 px: 96x48 content with 24 white rows above and below, nothing cropped.
    image = Image.new("RGB", (200, 100), (0, 0, 200))
    ImageDraw.Draw(image).rectangle([0, 0, 9, 99], fill=(0, 200, 0))  # left edge stripe
    arr = pixels(encode(image, "PNG"))
    blue_rows = [y for y in range(SIZE) if close(arr[y, 60], (0, 0, 200), 40)]
    assert abs(min(blue_rows) - 24) <= 1 and abs(max(blue_rows) - 71) <= 1
    assert close(arr[48, 1], (0, 200, 0), 40)  # the stripe at the very left edge survived
    portrait = pixels(encode(image.rotate(90, expand=True), "PNG"))
    blue_cols = [x for x in range(SIZE) if close(portrait[60, x], (0, 0, 200), 40)]
    assert abs(min(blue_cols) - 24) <= 1 and abs(max(blue_cols) - 71) <= 1


def test_small_image_is_upscaled_to_size():
    out = canonical(make_image_bytes("PNG", size=(40, 40), color=RED))
    assert_canonical(out)
    assert close(np.asarray(out)[2, 2], RED)  # square: no letterbox band at all


def test_large_jpeg_uses_draft_and_stays_correct():
    image = Image.new("RGB", (3000, 2000), RED)
    ImageDraw.Draw(image).rectangle([0, 0, 749, 499], fill=(0, 0, 220))  # top-left quarter
    arr = pixels(encode(image, "JPEG", quality=92))
    # 96x64 content in rows 16..79: top-left quarter is 24x16.
    assert close(arr[16 + 4, 4], (0, 0, 220), 20)
    assert close(arr[79 - 4, 95 - 4], RED, 20)


@pytest.mark.parametrize(
    ("source", "decoded"),
    [
        ((4000, 3000), (500, 375)),  # 1/8 scale still covers the 299x224 content
        ((1920, 1080), (480, 270)),  # 16:9: 299x168 content, so 1/4 although 1080/4 < 299
        ((1080, 1080), (540, 540)),  # 1/4 would be 270 px: 1/2
        ((1280, 960), (640, 480)),  # 1/4 (320x240) would leave too little for the resize
        ((3000, 1000), (750, 250)),  # a panorama's 299x100 content
        ((700, 500), (700, 500)),  # 1/2 (350x250) would leave too little for the resize
    ],
)
def test_jpeg_decodes_at_the_smallest_scale_leaving_a_margin_over_the_content(source, decoded):
    data = encode(Image.new("RGB", source, RED), "JPEG", quality=80)
    spec = ImageSpec()
    image = imaging.open_image(data, spec)
    assert image.size == source  # opening reads the header only
    plan = imaging.plan_decode(image, spec)
    assert plan.size == decoded
    content = imaging.content_size(*source, spec.size)
    assert plan.content == content
    assert decoded[0] * 3 >= content[0] * 4 and decoded[1] * 3 >= content[1] * 4
    assert imaging.decode(image, data, plan).size == decoded


def test_other_formats_are_decoded_at_full_size():
    data = encode(Image.new("RGB", (1200, 900), RED), "PNG")
    spec = ImageSpec()
    image = imaging.open_image(data, spec)
    plan = imaging.plan_decode(image, spec)
    assert (plan.scale, plan.size) == (1, (1200, 900))
    assert imaging.decode(image, data, plan).size == (1200, 900)


# ------------------------------------------------------------------------- transparency
def test_rgba_transparency_is_composited_onto_white():
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # transparent *black*
    ImageDraw.Draw(image).rectangle([0, 0, 49, 99], fill=(*RED, 255))
    ImageDraw.Draw(image).rectangle([50, 0, 99, 49], fill=(0, 0, 0, 128))  # half-transparent
    for fmt, kwargs in (("PNG", {}), ("WEBP", {"lossless": True})):
        arr = pixels(encode(image, fmt, **kwargs))
        assert close(arr[48, 20], RED)
        assert close(arr[80, 80], (255, 255, 255), 3), fmt  # white, not the stored black
        assert close(arr[20, 80], (127, 127, 127), 6), fmt  # 50% black over white


def test_palette_png_with_transparent_index_composited_onto_white():
    image = Image.new("P", (100, 100), 0)
    image.putpalette([0, 0, 0, *RED] + [0] * 762)
    ImageDraw.Draw(image).rectangle([0, 0, 49, 99], fill=1)
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    arr = pixels(data)
    assert close(arr[48, 20], RED)
    assert close(arr[48, 80], (255, 255, 255), 3)


def test_gray_alpha_composited_onto_white():
    image = Image.new("LA", (100, 100), (0, 0))
    ImageDraw.Draw(image).rectangle([0, 0, 49, 99], fill=(60, 255))
    arr = pixels(encode(image, "PNG"))
    assert close(arr[48, 20], (60, 60, 60))
    assert close(arr[48, 80], (255, 255, 255), 3)


def test_gif_uses_first_frame():
    first = Image.new("RGB", (100, 80), (255, 0, 0))
    second = Image.new("RGB", (100, 80), (0, 0, 255))
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close(pixels(data)[48, 48], (255, 0, 0))


# ------------------------------------------------------------------------- EXIF orientation
# A landscape 160x100 photo whose stored top-left corner holds a red marker. After applying the
# EXIF orientation the marker must sit where a viewer sees it: (vertical, horizontal) half of
# the output, and the displayed shape (portrait shots have white bands left and right).
ORIENTATIONS = {
    1: ("top", "left", "landscape"),
    2: ("top", "right", "landscape"),  # mirrored horizontally
    3: ("bottom", "right", "landscape"),  # rotated 180
    4: ("bottom", "left", "landscape"),  # mirrored vertically
    5: ("top", "left", "portrait"),  # transposed
    6: ("top", "right", "portrait"),  # the camera was turned clockwise: rotate 90 CW
    7: ("bottom", "right", "portrait"),  # transversed
    8: ("bottom", "left", "portrait"),  # rotate 90 CCW
}


def _marker_photo(size=(160, 100)) -> Image.Image:
    image = Image.new("RGB", size, (40, 120, 40))
    w, h = size
    ImageDraw.Draw(image).rectangle([0, 0, w // 4 - 1, h // 4 - 1], fill=(230, 20, 20))
    return image


def _where_is_marker(arr: np.ndarray) -> tuple[str, str, str]:
    red = (arr[..., 0] > 170) & (arr[..., 1] < 90) & (arr[..., 2] < 90)
    ys, xs = np.nonzero(red)
    assert len(ys) > 50, "marker not found"
    white = (arr >= 245).all(axis=-1)
    white_cols = int(white.all(axis=0).sum())
    white_rows = int(white.all(axis=1).sum())
    shape = "portrait" if white_cols > white_rows else "landscape"
    return (
        "top" if ys.mean() < SIZE / 2 else "bottom",
        "left" if xs.mean() < SIZE / 2 else "right",
        shape,
    )


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(orientation):
    data = encode(_marker_photo(), "JPEG", quality=95, exif=_exif(orientation))
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == orientation
    out = canonical(data)
    assert_canonical(out)  # the orientation tag is gone, the pixels are upright
    assert _where_is_marker(np.asarray(out).astype(int)) == ORIENTATIONS[orientation]


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_on_large_jpeg_decoded_in_draft_mode(orientation):
    photo = _marker_photo((1600, 1000))
    data = encode(photo, "JPEG", quality=90, exif=_exif(orientation))
    assert _where_is_marker(pixels(data)) == ORIENTATIONS[orientation]


def test_exif_orientation_applies_to_other_formats():
    data = encode(_marker_photo(), "PNG", exif=_exif(6))
    assert _where_is_marker(pixels(data)) == ORIENTATIONS[6]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# ------------------------------------------------------------------------- modes and depth
def test_cmyk_jpeg_is_converted_to_rgb():
    cyan = encode(Image.new("CMYK", (120, 80), (255, 0, 0, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cyan)).mode == "CMYK"
    assert close(pixels(cyan)[48, 48], (0, 255, 255))
    # A large CMYK photo takes the other path (no shrink before colour conversion).
    magenta = encode(Image.new("CMYK", (1200, 800), (0, 255, 0, 0)), "JPEG", quality=95)
    assert close(pixels(magenta)[48, 48], (255, 0, 255))
    tiff = encode(Image.new("CMYK", (120, 80), (0, 0, 255, 0)), "TIFF")
    assert close(pixels(tiff)[48, 48], (255, 255, 0))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_gray_is_scaled_not_clipped(fmt):
    array = np.zeros((60, 60), np.uint16)
    array[:, :30] = 16000  # 16000 / 65535 * 255 = 62.3
    array[:, 30:] = 48000  # 186.8
    data = encode(Image.fromarray(array), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    arr = pixels(data)
    # Clipping would make both halves white (255); scaling keeps them distinct greys.
    assert close(arr[48, 20], (62, 62, 62), 4)
    assert close(arr[48, 75], (187, 187, 187), 4)


def test_float_image_in_unit_range_is_scaled():
    array = np.zeros((60, 60), np.float32)
    array[:, :30] = 0.25
    array[:, 30:] = 0.75
    data = encode(Image.fromarray(array), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    arr = pixels(data)
    assert close(arr[48, 20], (64, 64, 64), 4)
    assert close(arr[48, 75], (191, 191, 191), 4)


def test_gray_and_bilevel_become_rgb():
    arr = pixels(make_image_bytes("PNG", size=(80, 80), mode="L", color=90))
    assert close(arr[40, 40], (90, 90, 90), 3)
    bilevel = Image.new("1", (80, 80), 0)
    ImageDraw.Draw(bilevel).rectangle([40, 0, 79, 79], fill=1)
    arr = pixels(encode(bilevel, "BMP"))
    assert close(arr[40, 10], (0, 0, 0)) and close(arr[40, 85], (255, 255, 255))


def test_greyscale_jpeg_takes_the_fast_decoder():
    data = make_image_bytes("JPEG", size=(800, 600), mode="L", color=90)
    header = read_jpeg_header(data)
    decoded = imaging.decode_jpeg_turbo(data, header, _planned(data, ImageSpec()))
    assert (header.grey, decoded.ndim, decoded.shape) == (True, 2, (300, 400))
    assert close(pixels(data)[48, 48], (90, 90, 90), 3)


def test_jpeg_with_a_decoder_warning_is_still_accepted():
    """libjpeg-turbo warns about junk between markers (some cameras write it); the strict fast
    decoder gives up and Pillow, which accepts it as it always did, decodes the photo."""
    clean = make_image_bytes("JPEG", size=(640, 480), seed=8)
    tables = clean.index(b"\xff\xdb")
    junk = clean[:tables] + b"\x00\x00\x00" + clean[tables:]
    assert imaging.decode_jpeg_turbo(junk, read_jpeg_header(clean), _planned(junk, SPEC)) is None
    assert read_jpeg_header(junk) is None  # nor does the header reader take it
    assert normalize_image(junk, SPEC) == normalize_image(clean, SPEC)


def _planned(data: bytes, spec: ImageSpec) -> imaging.DecodePlan:
    return imaging.plan_decode(imaging.open_image(data, spec), spec)


# ------------------------------------------------------------------------- ICC profiles
@functools.cache
def _srgb_icc() -> bytes:
    """Built once: a new profile carries its creation time, so two built a second apart differ."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _swapped_primaries_icc() -> bytes:
    """An RGB profile whose red and blue primaries are exchanged (a valid, very non-sRGB space):
    a pixel stored as pure red means sRGB blue under it, so its effect is unmistakable."""
    profile = bytearray(_srgb_icc())
    (count,) = struct.unpack_from(">I", profile, 128)
    entries = {}
    for i in range(count):
        signature, offset, size = struct.unpack_from(">4sII", profile, 132 + 12 * i)
        entries[signature] = (132 + 12 * i, offset, size)
    (r_at, r_off, r_size), (b_at, b_off, b_size) = entries[b"rXYZ"], entries[b"bXYZ"]
    struct.pack_into(">4sII", profile, r_at, b"rXYZ", b_off, b_size)
    struct.pack_into(">4sII", profile, b_at, b"bXYZ", r_off, r_size)
    return bytes(profile)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_embedded_icc_profile_is_converted_to_srgb(fmt):
    image = Image.new("RGB", (120, 90), RED)
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    plain = encode(image, fmt, **kwargs)
    tagged = encode(image, fmt, icc_profile=_swapped_primaries_icc(), **kwargs)
    assert Image.open(io.BytesIO(tagged)).info["icc_profile"] == _swapped_primaries_icc()
    assert close(pixels(plain)[48, 48], RED)
    converted = pixels(tagged)[48, 48]
    assert close(converted, RED[::-1], 16), converted  # red under this profile is sRGB blue
    # An sRGB profile changes nothing.
    srgb = encode(image, fmt, icc_profile=_srgb_icc(), **kwargs)
    assert close(pixels(srgb)[48, 48], RED, 3)


def test_icc_profile_applied_on_shrink_path():
    data = encode(Image.new("RGB", (1200, 900), RED), "JPEG", icc_profile=_swapped_primaries_icc())
    assert close(pixels(data)[48, 48], RED[::-1], 16)


@pytest.mark.parametrize(
    "icc",
    [
        b"not an icc profile at all" * 8,
        _srgb_icc()[:100],  # truncated
        bytes(200),
    ],
)
def test_corrupt_icc_profile_is_ignored(icc):
    image = make_image((120, 90), seed=5)
    plain = encode(image, "JPEG", quality=95)
    tagged = encode(image, "JPEG", quality=95, icc_profile=icc)
    assert Image.open(io.BytesIO(tagged)).info["icc_profile"] == icc
    # Same pixel data, profile ignored: the very same canonical bytes.
    assert normalize_image(tagged, SPEC) == normalize_image(plain, SPEC)


@pytest.mark.parametrize("kind", ["XYZ", "LAB"])
def test_icc_profile_of_other_colour_space_does_not_crash(kind):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile(kind)).tobytes()
    data = encode(Image.new("RGB", (120, 90), RED), "PNG", icc_profile=icc)
    assert_canonical(canonical(data))


# ------------------------------------------------------------------------- refused inputs
def test_error_types_and_reasons():
    reasons = {
        EmptyImageError: "empty",
        ImageTooLargeError: "too-large",
        DecompressionBombError: "decompression-bomb",
        UnsupportedFormatError: "unsupported-format",
        CorruptImageError: "corrupt",
        ImageTooSmallError: "too-small",
    }
    for cls, reason in reasons.items():
        assert issubclass(cls, ImageError) and issubclass(cls, ValueError)
        assert cls.reason == reason
        assert cls("x").reason == reason


def test_empty_file():
    with pytest.raises(EmptyImageError) as info:
        normalize_image(b"", SPEC)
    assert info.value.reason == "empty"


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is a text file\n" * 10,
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 200,
        b"\x00" * 500,
        b"PK\x03\x04" + bytes(300),  # a zip
    ],
)
def test_non_image_is_unsupported(data):
    with pytest.raises(UnsupportedFormatError) as info:
        normalize_image(data, SPEC)
    assert info.value.reason == "unsupported-format"
    assert "JPEG" in str(info.value)  # says what is supported


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "HEIF"])
def test_truncated_file_is_corrupt(fmt):
    data = make_image_bytes(fmt, size=(200, 150), seed=7)
    with pytest.raises(CorruptImageError) as info:
        normalize_image(data[: len(data) // 2], SPEC)
    assert info.value.reason == "corrupt"


@pytest.mark.parametrize("keep", [4, 20, 100])
def test_jpeg_cut_inside_its_header_is_corrupt_not_unsupported(keep):
    data = make_image_bytes("JPEG", size=(200, 150), seed=7)
    with pytest.raises(CorruptImageError, match="JPEG"):
        normalize_image(data[:keep], SPEC)


@pytest.mark.parametrize("keep", [12, 30])
def test_png_cut_inside_its_header_is_corrupt(keep):
    data = make_image_bytes("PNG", size=(200, 150), seed=7)
    with pytest.raises(CorruptImageError):
        normalize_image(data[:keep], SPEC)


def test_damaged_png_data_is_corrupt():
    data = bytearray(make_image_bytes("PNG", size=(200, 150), seed=7))
    idat = data.find(b"IDAT")
    data[idat + 40 : idat + 240] = bytes(200)  # zeroed compressed stream, CRC now wrong
    with pytest.raises(CorruptImageError):
        normalize_image(bytes(data), SPEC)


def test_too_small_image():
    with pytest.raises(ImageTooSmallError) as info:
        normalize_image(make_image_bytes("PNG", size=(200, 10)), SPEC)
    assert "200x10" in str(info.value)
    # The cap is part of the spec: 16 px is the documented default and is accepted.
    assert_canonical(canonical(make_image_bytes("PNG", size=(16, 16))))


def test_file_over_byte_cap_refused_before_decoding():
    data = make_image_bytes("PNG", size=(200, 150), seed=1)
    spec = ImageSpec(size=SIZE, max_bytes=len(data) - 1)
    with pytest.raises(ImageTooLargeError) as info:
        normalize_image(data, spec)
    assert info.value.reason == "too-large"
    assert normalize_image(data, ImageSpec(size=SIZE, max_bytes=len(data)))  # at the cap: fine
    # Refused by size alone, whatever the bytes are (nothing was decoded).
    with pytest.raises(ImageTooLargeError):
        normalize_image(b"\x00" * 2048, ImageSpec(size=SIZE, max_bytes=1024))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(make_image_bytes("JPEG", size=(100, 80), color=RED))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        _png_claiming(100_000, 100_000),  # 10 GP: also over Pillow's own limit
        _png_claiming(12_000, 10_000),  # 120 MP: under Pillow's limit, over the spec's
        _jpeg_claiming(65_000, 65_000),
        _jpeg_claiming(12_000, 9_000),
    ],
    ids=["png-10gp", "png-120mp", "jpeg-4gp", "jpeg-108mp"],
)
def test_decompression_bomb_refused_cheaply(data, monkeypatch):
    assert len(data) < 2000
    normalize_image(make_image_bytes("PNG"), SPEC)  # warm up plugin registration
    # Pillow allocates a decoded image's pixel buffer with Image.core.new (in C, so invisible to
    # tracemalloc): record every allocation to prove none is made for the claimed size.
    allocations = []
    real_new = Image.core.new

    def spy_new(mode, size, *args):
        allocations.append(size)
        return real_new(mode, size, *args)

    monkeypatch.setattr(Image.core, "new", spy_new)
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBombError) as info:
            normalize_image(data, SPEC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "decompression-bomb"
    assert allocations == []  # refused from the header alone: no pixel buffer at all
    # Decoding even the 108 MP one would take ~300 MB: refused before any pixel exists.
    assert peak < 16 * 1024 * 1024, peak


def test_pixel_cap_follows_the_spec():
    data = make_image_bytes("PNG", size=(200, 150))
    with pytest.raises(DecompressionBombError):
        normalize_image(data, ImageSpec(size=SIZE, max_pixels=200 * 150 - 1))
    assert normalize_image(data, ImageSpec(size=SIZE, max_pixels=200 * 150))


def _psd(width: int = 40, height: int = 30) -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    sections = struct.pack(">IIIH", 0, 0, 0, 0)  # no colour data, resources, layers; raw data
    return header + sections + bytes([200]) * (width * height) + bytes(2 * width * height)


def _pillow_save(fmt: str, mode: str = "RGB") -> bytes:
    return encode(Image.new("RGB", (64, 64), RED).convert(mode), fmt)


HOSTILE = {
    "EPS": lambda: _pillow_save("EPS"),
    "PSD": _psd,
    "ICO": lambda: _pillow_save("ICO"),
    "PCX": lambda: _pillow_save("PCX"),
    "TGA": lambda: _pillow_save("TGA"),
    "PPM": lambda: _pillow_save("PPM"),
    "SGI": lambda: _pillow_save("SGI"),
    "DDS": lambda: _pillow_save("DDS"),
    "JPEG2000": lambda: _pillow_save("JPEG2000"),
    "ICNS": lambda: _pillow_save("ICNS"),
    "QOI": lambda: _pillow_save("QOI"),
    "XBM": lambda: _pillow_save("XBM", "1"),
}


@pytest.mark.parametrize("fmt", sorted(HOSTILE))
def test_formats_pillow_could_open_are_refused(fmt):
    data = HOSTILE[fmt]()
    # The test is only meaningful because Pillow itself would open it...
    assert Image.open(io.BytesIO(data)).format == fmt
    # ...but we never hand it to those plugins.
    with pytest.raises(UnsupportedFormatError):
        normalize_image(data, SPEC)


def test_image_spec_validation():
    with pytest.raises(ValueError, match="minimum"):
        ImageSpec(size=MIN_MODEL_SIZE - 1)
    assert ImageSpec(size=MIN_MODEL_SIZE).size == 71
    with pytest.raises(ValueError):
        ImageSpec(jpeg_quality=0)
    with pytest.raises(ValueError):
        ImageSpec(jpeg_quality=101)
