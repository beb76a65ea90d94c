"""A JPEG's header read without Pillow (snapcat.imaging.jpeg_header) says what Pillow says.

Normalization reads a JPEG's orientation and ICC profile itself, to skip Pillow's Python parse of
every marker. Each case below is a JPEG with its metadata laid out one particular way (byte
orders, field types, duplicated or cut fields, XMP, split ICC profiles); the reader must give
Pillow's answer (``Image.getexif()`` with its XMP fallback, ``info["icc_profile"]``), and the
photo must normalize to the same bytes as when Pillow reads it.
"""

from __future__ import annotations

import io
import struct
import time

import pytest
from conftest import encode, make_image, make_image_bytes
from PIL import Image

from snapcat.contract.image_spec import ImageSpec
from snapcat.imaging import jpeg_header
from snapcat.imaging import normalize as imaging
from snapcat.imaging.jpeg_header import exif_orientation, read_jpeg_header
from snapcat.imaging.normalize import CorruptImageError, DecompressionBombError, normalize_image

SPEC = ImageSpec(size=96)
# Pillow warns about the deliberately damaged EXIF blocks below; the warnings are expected.
pytestmark = pytest.mark.filterwarnings(
    "ignore:(Corrupt EXIF|Metadata Warning|Truncated File Read):UserWarning"
)


# ----------------------------------------------------------------------------- building blocks
def _tiff(entries: list[tuple[int, int, int, bytes]], order: str = "<", cut: int = 0) -> bytes:
    """A TIFF structure with one IFD of ``(tag, type, count, 4-byte value)`` entries; ``cut``
    bytes removed from its end (an IFD cut short)."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    body = magic + struct.pack(order + "I", 8) + struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")
    body += struct.pack(order + "I", 0)
    return body[: len(body) - cut] if cut else body


def _short(value: int, order: str = "<") -> bytes:
    return struct.pack(order + "H", value)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _with_segments(jpeg: bytes, *segments: bytes, after_frame: bytes = b"") -> bytes:
    """``jpeg`` with ``segments`` inserted right after SOI, ``after_frame`` after its SOF0."""
    out = jpeg[:2] + b"".join(segments) + jpeg[2:]
    if after_frame:
        sof = out.index(b"\xff\xc0")
        end = sof + 2 + struct.unpack(">H", out[sof + 2 : sof + 4])[0]
        out = out[:end] + after_frame + out[end:]
    return out


def _exif_segment(tiff: bytes) -> bytes:
    return _segment(0xE1, b"Exif\x00\x00" + tiff)


def _xmp_segment(orientation_markup: bytes) -> bytes:
    packet = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description ' + orientation_markup
    return _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet + b"/></x:xmpmeta>")


def _icc_segments(profile: bytes, parts: int, order: list[int] | None = None) -> list[bytes]:
    size = -(-len(profile) // parts)
    chunks = [profile[i * size : (i + 1) * size] for i in range(parts)]
    segments = [
        _segment(0xE2, b"ICC_PROFILE\x00" + bytes((n + 1, parts)) + chunk)
        for n, chunk in enumerate(chunks)
    ]
    return [segments[i] for i in (order or range(parts))]


def _plain_jpeg(size=(160, 120)) -> bytes:
    return make_image_bytes("JPEG", size=size, seed=3, quality=90)


def _pillow_exif_jpeg(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[jpeg_header.ORIENTATION_TAG] = orientation
    return encode(make_image((160, 120), seed=3), "JPEG", exif=exif)


PROFILE = bytes(range(256)) * 12  # opaque bytes: the reader joins, it does not interpret
ORIENTATION_SHORT = (jpeg_header.ORIENTATION_TAG, 3, 1)

CASES = {
    "no metadata": _plain_jpeg(),
    "pillow exif, rotated": _pillow_exif_jpeg(6),
    "little endian, mirrored": _with_segments(
        _plain_jpeg(), _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(2))]))
    ),
    "big endian, portrait": _with_segments(
        _plain_jpeg(), _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(8, ">"))], ">"))
    ),
    "other tags first": _with_segments(
        _plain_jpeg(),
        _exif_segment(
            _tiff(
                [
                    (0x010F, 2, 4, b"Cam\x00"),
                    (0x0110, 2, 2, b"X\x00"),
                    (*ORIENTATION_SHORT, _short(3)),
                ]
            )
        ),
    ),
    "orientation as a long": _with_segments(
        _plain_jpeg(), _exif_segment(_tiff([(0x0112, 4, 1, struct.pack("<I", 5))]))
    ),
    "orientation with two values": _with_segments(
        _plain_jpeg(), _exif_segment(_tiff([(0x0112, 3, 2, _short(6) + _short(3))]))
    ),
    "orientation with three values, stored apart": _with_segments(
        _plain_jpeg(),
        _exif_segment(
            _tiff([(0x0112, 3, 3, struct.pack("<I", 26))]) + _short(5) + _short(1) + _short(1)
        ),
    ),
    "orientation stored past the block": _with_segments(
        _plain_jpeg(), _exif_segment(_tiff([(0x0112, 3, 3, struct.pack("<I", 4000))]))
    ),
    "duplicated tag: the first counts": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(7)), (*ORIENTATION_SHORT, _short(3))])),
    ),
    "unreadable type, then a good one": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(0x0112, 99, 1, _short(2)), (*ORIENTATION_SHORT, _short(6))])),
    ),
    "IFD cut after the orientation": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(6)), (0x010F, 2, 4, b"Cam\x00")], cut=10)),
    ),
    "IFD cut before the orientation": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(0x010F, 2, 4, b"Cam\x00"), (*ORIENTATION_SHORT, _short(6))], cut=10)),
    ),
    "not a TIFF structure, XMP says 6": _with_segments(
        _plain_jpeg(), _exif_segment(b"garbage!" * 4), _xmp_segment(b'tiff:Orientation="6"')
    ),
    "EXIF without orientation, XMP attribute": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(0x010F, 2, 4, b"Cam\x00")])),
        _xmp_segment(b'tiff:Orientation="6"'),
    ),
    "XMP element, no EXIF": _with_segments(
        _plain_jpeg(), _xmp_segment(b"><tiff:Orientation>8</tiff:Orientation")
    ),
    "EXIF wins over XMP": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(3))])),
        _xmp_segment(b'tiff:Orientation="6"'),
    ),
    "two EXIF segments": _with_segments(
        _plain_jpeg(),
        _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(8))])),
        _exif_segment(_tiff([(*ORIENTATION_SHORT, _short(2))])),
    ),
    "empty EXIF": _with_segments(_plain_jpeg(), _segment(0xE1, b"Exif\x00\x00")),
    "ICC in one chunk": _with_segments(_plain_jpeg(), *_icc_segments(PROFILE, 1)),
    "ICC in three chunks, out of order": _with_segments(
        _plain_jpeg(), *_icc_segments(PROFILE, 3, order=[2, 0, 1])
    ),
    "ICC after the frame header": _with_segments(
        _plain_jpeg(), after_frame=b"".join(_icc_segments(PROFILE, 1))
    ),
    "fill bytes before a marker": _plain_jpeg()[:2] + b"\xff\xff" + _plain_jpeg()[2:],
    "greyscale": make_image_bytes("JPEG", size=(160, 120), mode="L", seed=3),
    "progressive": make_image_bytes("JPEG", size=(160, 120), seed=3, progressive=True),
}


def _pillow_reading(data: bytes) -> tuple[int, bytes | None]:
    image = Image.open(io.BytesIO(data))
    return imaging._exif_orientation(image), image.info.get("icc_profile")


@pytest.mark.parametrize("name", sorted(CASES))
def test_header_reads_what_pillow_reads(name):
    data = CASES[name]
    header = read_jpeg_header(data)
    assert header is not None, name
    with Image.open(io.BytesIO(data)) as image:
        assert (header.width, header.height) == image.size
        assert header.grey == (image.mode == "L")
    assert (header.orientation, header.icc_profile) == _pillow_reading(data)


def test_the_cases_cover_what_they_claim():
    """The comparison above can fail: the cases really carry the metadata they are named for."""
    readings = {name: _pillow_reading(data) for name, data in CASES.items()}
    assert readings["pillow exif, rotated"][0] == 6
    assert readings["big endian, portrait"][0] == 8
    assert readings["orientation as a long"][0] == 5
    assert readings["duplicated tag: the first counts"][0] == 7
    assert readings["IFD cut after the orientation"][0] == 6
    assert readings["XMP element, no EXIF"][0] == 8
    assert readings["EXIF wins over XMP"][0] == 3
    assert readings["orientation with two values"][0] == 6
    assert readings["orientation with three values, stored apart"][0] == 5
    assert readings["ICC in three chunks, out of order"][1] == PROFILE
    assert len({orientation for orientation, _ in readings.values()}) >= 6


#: Files libjpeg-turbo's header parse refuses (it checks ICC chunks): Pillow reads them.
LEFT_TO_PILLOW = {
    "ICC with a chunk missing": _with_segments(_plain_jpeg(), *_icc_segments(PROFILE, 3)[:2]),
}


@pytest.mark.parametrize("name", sorted(CASES | LEFT_TO_PILLOW))
def test_normalizes_to_the_bytes_of_the_pillow_path(name, monkeypatch):
    data = (CASES | LEFT_TO_PILLOW)[name]
    fast = normalize_image(data, SPEC)
    monkeypatch.setattr(imaging, "read_jpeg_header", lambda _: None)  # Pillow reads it all
    assert normalize_image(data, SPEC) == fast


@pytest.mark.parametrize("size", [(1080, 1080), (1280, 960), (960, 1280), (4000, 3000), (741, 500)])
@pytest.mark.parametrize("orientation", [1, 6])
def test_photo_sizes_normalize_to_the_bytes_of_the_pillow_path(size, orientation, monkeypatch):
    """The resize written straight into the letterbox (landscape, portrait: a region with a
    left margin, square) and the rotated copy give what Pillow's path gives."""
    data = make_image_bytes("JPEG", size=size, seed=11, orientation=orientation, quality=90)
    fast = normalize_image(data, ImageSpec())
    monkeypatch.setattr(imaging, "read_jpeg_header", lambda _: None)
    assert normalize_image(data, ImageSpec()) == fast


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        _plain_jpeg()[:40],  # cut inside the header
        encode(Image.new("CMYK", (64, 48), (255, 0, 0, 0)), "JPEG"),  # needs Pillow's CMYK handling
        _plain_jpeg()[:20] + b"\x00\x00\x00" + _plain_jpeg()[20:],  # junk between markers
        _with_segments(_plain_jpeg(), _segment(0xE2, b"ICC_PROFILE\x00\x01")),  # cut ICC header
        *LEFT_TO_PILLOW.values(),
    ],
    ids=["empty", "png", "cut-header", "cmyk", "junk", "cut-icc-chunk", *LEFT_TO_PILLOW],
)
def test_anything_unusual_is_left_to_pillow(data):
    assert read_jpeg_header(data) is None


def test_a_plain_jpeg_is_normalized_without_opening_it_in_pillow(monkeypatch):
    data = _plain_jpeg((1280, 960))
    expected = normalize_image(data, SPEC)

    def refuse(*args, **kwargs):
        raise AssertionError("Pillow opened the photo")

    monkeypatch.setattr(Image, "open", refuse)
    assert normalize_image(data, SPEC) == expected


def test_the_decode_hook_sees_the_jpeg_once_at_its_decode_size():
    seen = []
    normalize_image(_plain_jpeg((1280, 960)), ImageSpec(), before_decode=seen.append)
    assert [(t.format, t.mode, t.size) for t in seen] == [("JPEG", "RGB", (640, 480))]
    # A JPEG the fast decoder gives up on (a decoder warning) is admitted once, not twice.
    clean = _plain_jpeg((640, 480))
    tables = clean.index(b"\xff\xdb")
    warned = clean[:tables] + b"\x00\x00\x00" + clean[tables:]
    seen.clear()
    normalize_image(warned, ImageSpec(), before_decode=seen.append)
    assert len(seen) == 1 and seen[0].size == (640, 480)


def test_a_jpeg_bomb_is_refused_from_libjpeg_turbos_header(monkeypatch):
    data = bytearray(_plain_jpeg((100, 80)))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 60_000, 60_000)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow opened the bomb"))
    with pytest.raises(DecompressionBombError, match="60000x60000"):
        normalize_image(bytes(data), SPEC)


def test_exif_orientation_reader_on_bare_blocks():
    assert exif_orientation(b"Exif\x00\x00") is None
    assert exif_orientation(b"Exif\x00\x00" + _tiff([])) is None
    assert (
        exif_orientation(b"Exif\x00\x00Exif\x00\x00" + _tiff([(*ORIENTATION_SHORT, _short(4))]))
        == 4
    )
    assert exif_orientation(b"Exif\x00\x00" + b"II*\x00") == 1  # too short to hold an IFD offset
    assert exif_orientation(b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 4000)) is None
    assert all(exif_orientation(_tiff([(*ORIENTATION_SHORT, _short(o))])) == o for o in range(1, 9))


@pytest.mark.parametrize(
    "padding",
    [b"\xff\xfe\x00\x02" * 250_000, b"\xff" * 1_000_000, b"\xff\xd0" * 500_000, bytes(1_000_000)],
    ids=["empty-comment-segments", "fill-bytes", "restart-markers", "stray-bytes"],
)
def test_a_jpeg_of_padding_before_its_image_is_refused_cheaply(padding, monkeypatch):
    """A megabyte of empty segments or padding costs nothing to send; walked in Python (ours or
    Pillow's parser) it cost a quarter to half a second, 30 MB some seconds. It is refused after
    a few thousand steps, before Pillow or libjpeg-turbo see it."""
    data = _plain_jpeg()[:2] + padding + _plain_jpeg()[2:]
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow opened the file"))
    started = time.process_time()
    with pytest.raises(CorruptImageError, match="segments or padding") as info:
        normalize_image(data, SPEC)
    assert time.process_time() - started < 0.05
    assert info.value.reason == "corrupt"


def test_a_few_stray_bytes_or_comments_are_still_a_photo():
    clean = _plain_jpeg()
    padded = clean[:2] + b"\xff\xfe\x00\x02" * 100 + clean[2:]  # a hundred empty comments
    assert normalize_image(padded, SPEC) == normalize_image(clean, SPEC)
    assert read_jpeg_header(padded) is not None
    tables = clean.index(b"\xff\xdb")
    stray = clean[:tables] + b"\x00" * 100 + clean[tables:]  # Pillow decides: it skips them
    assert read_jpeg_header(stray) is None
    assert normalize_image(stray, SPEC) == normalize_image(clean, SPEC)
