"""What normalization must know of a JPEG before decoding it, read without Pillow.

Pillow's JPEG plugin parses every marker in Python (quantization tables, EXIF, Photoshop blocks),
which on a typical ~1 MP upload costs about a twelfth of decoding the photo. libjpeg-turbo's own
header parse (:func:`simplejpeg.decode_jpeg_header`, in C) gives the size and colour space; this
module walks the segments before the first scan for the only two other things that change the
picture: the EXIF orientation and the embedded ICC profile. Both are read as Pillow reads them
(``Image.getexif()`` with its XMP fallback, ``info["icc_profile"]``), so that a photo normalizes
to the same bytes whichever path reads it; ``tests/imaging/test_jpeg_header.py`` compares the two on
crafted files. Anything unusual between the markers makes :func:`read_jpeg_header` answer
``None``, and Pillow reads the photo as before.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import simplejpeg

#: The EXIF orientation tag, and the XMP property Pillow falls back to when EXIF has none.
ORIENTATION_TAG = 0x0112
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')
_EXIF_PREFIX = re.compile(rb"^(Exif\x00\x00){1,2}")
_XMP_SIGNATURE = b"http://ns.adobe.com/xap/1.0/\x00"
_ICC_SIGNATURE = b"ICC_PROFILE\x00"
#: TIFF field types that are one integer when their count is 1: their struct codes.
_INTEGER_TYPES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i"}
#: The field types Pillow reads at all (others are skipped, as if the tag were absent).
_READABLE_TYPES = frozenset(range(1, 14)) | {16}
#: Start-of-frame markers (every SOFn but DHT 0xC4, JPG 0xC8 and DAC 0xCC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_START_OF_SCAN = 0xDA
#: The segments, fill bytes and stray bytes walked before the first scan, at most. A camera or
#: app writes a few dozen segments (a long XMP packet or ICC profile takes one per 64 KB); a file
#: of millions of empty ones costs nothing to send and seconds of Python to walk (Pillow's parser
#: too), so past this many it is refused instead (~2 ms).
MAX_STEPS = 4096


class TooManySegmentsError(ValueError):
    """Over :data:`MAX_STEPS` segments or padding bytes before the image data: no photo."""


@dataclass(frozen=True)
class JpegHeader:
    """A JPEG that libjpeg-turbo decodes to grey or RGB, as far as normalization needs it."""

    width: int
    height: int
    grey: bool
    orientation: int  # the EXIF orientation, 1 when there is none or it is unusable
    icc_profile: bytes | None


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The header of ``data``; ``None`` when it is not a JPEG whose header libjpeg-turbo reads,
    when it is CMYK (which needs Pillow's colour handling), or when its markers are anything but
    well-formed, so that Pillow reads it and decides.

    Raises :class:`TooManySegmentsError` for a file that is mostly segments or padding before
    its image data, before libjpeg-turbo or Pillow spend time on it."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segments = _segments_before_scan(data)  # first: it bounds the work on a hostile file
    if segments is None:
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, KeyError):  # KeyError: a colour space or sampling simplejpeg cannot name
        return None
    if colourspace not in ("YCbCr", "RGB", "Gray"):
        return None
    orientation, icc = _metadata(segments)
    return JpegHeader(width, height, colourspace == "Gray", orientation, icc)


def _segments_before_scan(data: bytes) -> list[tuple[int, bytes]] | None:
    """``(marker, payload)`` of the segments from SOI to the first SOS that carry metadata (APP1,
    APP2, the frame header); ``None`` when the bytes between them are not a plain sequence of
    segments (stray bytes, standalone markers, a cut file or a cut ICC chunk header, which
    Pillow refuses). Stray bytes and standalone markers are walked past, as Pillow does, so that
    the steps Pillow would take are bounded too."""
    kept = []
    position, end, unusual = 2, len(data), False
    for _ in range(MAX_STEPS):
        if position + 4 > end:
            return None
        if data[position] != 0xFF:  # a stray byte
            position, unusual = position + 1, True
            continue
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte before the marker
            position += 1
            continue
        if marker == _START_OF_SCAN:
            return None if unusual else kept
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # TEM, RSTn, SOI, EOI: no segment follows
            position, unusual = position + 2, True
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        if length < 2 or position + 2 + length > end:
            return None
        if marker in (0xE1, 0xE2) or marker in _SOF_MARKERS:
            payload = data[position + 4 : position + 2 + length]
            if marker == 0xE2 and payload.startswith(_ICC_SIGNATURE) and len(payload) < 14:
                return None  # no room for the chunk's sequence number and count
            kept.append((marker, payload))
        position += 2 + length
    raise TooManySegmentsError(f"over {MAX_STEPS} segments or padding bytes before its image data")


def _metadata(segments: list[tuple[int, bytes]]) -> tuple[int, bytes | None]:
    """The orientation and ICC profile, combined from the segments as Pillow's JPEG plugin does:
    EXIF segments after the first are appended to it, the last XMP packet counts, and ICC chunks
    are those before the frame header, joined in sequence-number order if all are there."""
    exif = xmp = None
    icc_chunks: list[bytes] = []
    icc: bytes | None = None
    for marker, payload in segments:
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            exif = payload if exif is None else exif + payload[6:]
        elif marker == 0xE1 and payload.startswith(_XMP_SIGNATURE):
            xmp = payload.split(b"\x00", 1)[1]
        elif marker == 0xE2 and payload.startswith(_ICC_SIGNATURE):
            icc_chunks.append(payload)
        elif marker in _SOF_MARKERS and icc_chunks:
            icc_chunks.sort()  # by sequence number, the byte after the signature
            complete = icc_chunks[0][13] == len(icc_chunks)  # the chunk count, the byte after
            icc = b"".join(chunk[14:] for chunk in icc_chunks) if complete else None
            icc_chunks = []
    orientation = exif_orientation(exif) if exif is not None else None
    if orientation is None and xmp is not None:
        match = _XMP_ORIENTATION.search(xmp)
        orientation = int(match[2]) if match else None
    return orientation or 1, icc


def exif_orientation(exif: bytes) -> int | None:
    """The orientation in the first IFD of an EXIF block (an APP1 payload); ``None`` when the
    block has no orientation tag, 1 when the block or the tag cannot be used.

    A hand-written read of one tag, because parsing the whole IFD with Pillow (what
    ``Image.getexif()`` does) costs ~80 us a photo, a fiftieth of decoding it. It follows
    Pillow's reading: the first of two equal tags counts, an IFD cut short keeps the entries
    before the cut, of several values the first counts, a value that is no integer is
    unusable."""
    tiff = _EXIF_PREFIX.sub(b"", exif)
    if not tiff:
        return None
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1  # not a TIFF structure: Pillow fails to read it, so it is ignored
    if len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, values = struct.unpack_from(order + "HHI", tiff, entry)
        if tag != ORIENTATION_TAG or kind not in _READABLE_TYPES or values == 0:
            continue  # Pillow skips an unreadable or empty field: the next equal tag may count
        code = _INTEGER_TYPES.get(kind)
        if code is None:
            return 1  # text, a fraction, ...: not an orientation
        where = entry + 8  # values that fit in 4 bytes are stored in the entry itself
        if values * struct.calcsize(code) > 4:
            (where,) = struct.unpack_from(order + "I", tiff, entry + 8)
            if where + values * struct.calcsize(code) > len(tiff):
                continue  # points past the block: Pillow skips the field
        return int(struct.unpack_from(order + code, tiff, where)[0])  # several: the first
    return None


# ------------------------------------------------------------------------ decoder cost
#: Progressive start-of-frame markers (Huffman and arithmetic, sequential-DCT-free).
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
#: Scans a JPEG may have. libjpeg-turbo can limit them itself (TurboJPEG's ``TJPARAM_SCANLIMIT``,
#: default no limit; its fuzz targets use 500) but neither simplejpeg nor Pillow exposes it, so
#: the start-of-scan markers are counted here, before decoding. A camera or an encoder writes 1
#: (baseline) or about 10 (libjpeg's and mozjpeg's progressive scripts; Photoshop 3 to 5).
MAX_SCANS = 500
#: Bytes of one DCT coefficient block as libjpeg holds it (64 JCOEF of 2 bytes).
_BLOCK_BYTES = 128


@dataclass(frozen=True)
class JpegFrame:
    """What decoding a JPEG costs, from its frame header and its start-of-scan markers."""

    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]  # (h, v) of each component
    progressive: bool
    scans: int

    @property
    def multi_scan(self) -> bool:
        """libjpeg keeps the whole image's coefficients when the file is progressive or has
        several scans (``jdcoefct.c``'s full-image buffer), whatever the output scale."""
        return self.progressive or self.scans > 1

    @property
    def coefficient_bytes(self) -> int:
        """The full-image coefficient buffer a multi-scan decode holds: every component's
        blocks at full resolution (padded to its sampling factors), 2 bytes a coefficient."""
        if not self.multi_scan or not self.sampling:
            return 0
        hmax = max(h for h, _ in self.sampling)
        vmax = max(v for _, v in self.sampling)
        total = 0
        for h, v in self.sampling:
            wide = _ceil_div(_ceil_div(self.width * h, hmax), 8)  # blocks, as jdinput.c
            high = _ceil_div(_ceil_div(self.height * v, vmax), 8)
            total += _ceil_div(wide, h) * h * _ceil_div(high, v) * v  # padded to the MCU
        return total * _BLOCK_BYTES

    @property
    def samples(self) -> int:
        """Coefficients in the whole image (all components): what one scan walks at most."""
        return self.coefficient_bytes // 2 if self.multi_scan else 0


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def read_frame(data: bytes) -> JpegFrame | None:
    """The :class:`JpegFrame` of ``data``; ``None`` when no frame header and first scan are
    found within :data:`MAX_STEPS` segments (the decoder then refuses the file, or Pillow reads
    it and the budget counts it as one scan).

    A sequential file whose first scan holds every component is decoded in one pass (libjpeg
    skips any further scan's data), so its scans are not counted: that costs nothing per photo.
    Otherwise they are counted as ``FF DA`` byte pairs after the frame header (~1 ms per MB): in
    entropy-coded data an ``FF`` byte is always followed by ``00`` or a restart marker, so only
    a table segment between scans could add a false one (counting high)."""
    position, end = 2, len(data)
    frame: tuple[int, int, tuple[tuple[int, int], ...], bool] | None = None
    for _ in range(MAX_STEPS):
        if position + 5 > end:
            return None
        if data[position] != 0xFF:
            position += 1
            continue
        marker = data[position + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD9:
            position += 1 if marker == 0xFF else 2
            continue
        length = (data[position + 2] << 8) | data[position + 3]
        if marker == _START_OF_SCAN:
            if frame is None:
                return None
            width, height, sampling, progressive = frame
            in_first_scan = data[position + 4]
            if progressive or in_first_scan < len(sampling):
                scans = data.count(b"\xff\xda", position)
            else:
                scans = 1
            return JpegFrame(width, height, sampling, progressive, scans)
        if marker in _SOF_MARKERS and frame is None:
            payload = data[position + 4 : position + 2 + length]
            if len(payload) < 6:
                return None
            height, width, count = struct.unpack_from(">HHB", payload, 1)
            if len(payload) < 6 + 3 * count:
                return None
            sampling = tuple(
                (max(1, payload[7 + 3 * i] >> 4), max(1, payload[7 + 3 * i] & 0x0F))
                for i in range(count)
            )
            frame = (width, height, sampling, marker in _PROGRESSIVE_SOF)
        if length < 2:
            return None
        position += 2 + length
    return None
