"""A memory budget for decoding photos, checked before any pixel is decoded.

A few KB of lossless WebP can describe 100 MP of pixels: the file-size cap says nothing about what
decoding costs. So just before decoding (after the decoder has picked its scale: JPEG's DCT
scaling shrinks a 12 MP photo 8x per side, other formats decode at full size) the photo's header
gives the pixels that will be decoded, and :func:`estimate_decode_bytes` turns them into the peak
memory normalization will need (decoded pixels plus the working copies: mode conversion,
transparency compositing, EXIF rotation, resize), plus what the decoder holds whatever the scale:
a progressive or multi-scan JPEG's full-image DCT coefficients, 2 bytes a sample (a 574 KB
progressive 10000 x 10000 file holds 579 MiB; :func:`snapcat.imaging.normalize.jpeg_held_bytes`). Neither
libjpeg-turbo through simplejpeg nor Pillow offers a memory cap of its own (libjpeg's
``max_memory_to_use`` / TurboJPEG's ``TJPARAM_MAXMEMORY`` are not exposed), so this estimate,
checked before decoding, is the cap.

:class:`DecodeBudget` then enforces two limits:

- **per photo**: a photo over ``per_photo_bytes`` is refused with
  :class:`DecodeBudgetExceededError` (HTTP 413, reason ``over-decode-budget``) before decoding;
- **process-wide**: the estimates of all photos being normalized at once never add up past
  ``total_bytes``; a photo that does not fit waits for others to finish until its deadline, then
  is refused with :class:`DecodeBudgetBusyError` (HTTP 503: the server is busy, not the photo bad).

Each photo also has a deadline: one that waited past it is refused before decoding starts.

``snapcat prepare`` passes no budget (a batch job on its own machine); the serving transformer
passes one per process (``--decode_budget_bytes`` / ``--max_decode_bytes``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from snapcat.errors import human_bytes
from snapcat.imaging.normalize import DecodeTarget, ImageError

#: Peak bytes per decoded pixel of normalization, by the mode the decoder produces: the decoded
#: buffer (Pillow keeps RGB as 4 bytes a pixel) plus the working copies made before the resize
#: shrinks it. Measured as RSS peak over pixel count at 12 MP (PNG RGB 8.0, PNG RGBA 8.1, PNG L
#: 2.0, GIF 5.1, HEIC 8.4), rounded up.
PEAK_BYTES_PER_PIXEL = {
    "1": 3,
    "L": 3,
    "P": 6,
    "RGB": 9,
    "RGBA": 10,
    "RGBX": 10,
    "CMYK": 12,
    "YCbCr": 9,
    "LA": 12,
    "PA": 12,
    "I;16": 24,
    "I;16B": 24,
    "I;16L": 24,
    "I": 24,
    "F": 24,
}
#: Formats whose decoder needs more than their mode says: libwebp decodes into its own buffer
#: which Pillow then copies (measured 16.0 bytes a pixel for RGB and RGBA).
PEAK_BYTES_PER_PIXEL_BY_FORMAT = {"WEBP": 17, "HEIF": 10}
#: Modes not in the table (rare): assume the worst listed.
DEFAULT_PEAK_BYTES_PER_PIXEL = 24
#: Fixed overhead per photo (decoder state, the small canonical image and its JPEG).
PER_PHOTO_OVERHEAD = 2 * 1024 * 1024


class DecodeBudgetExceededError(ImageError):
    """The photo alone would need more memory to decode than one photo may use."""

    reason = "over-decode-budget"
    status = 413


class DecodeBudgetBusyError(ImageError):
    """The photo fits its own budget but not, before its deadline, what the process has left."""

    reason = "server-busy"
    status = 503


class DecodeDeadlineError(ImageError):
    """The photo waited past its deadline before decoding could start."""

    reason = "deadline-exceeded"
    status = 503


def estimate_decode_bytes(image: DecodeTarget) -> int:
    """Peak memory to normalize ``image``, from its header only (``image.size`` and ``mode`` are
    the decode scale's: a JPEG's DCT-scaled size)."""
    width, height = image.size
    per_pixel = max(
        PEAK_BYTES_PER_PIXEL.get(image.mode, DEFAULT_PEAK_BYTES_PER_PIXEL),
        PEAK_BYTES_PER_PIXEL_BY_FORMAT.get(image.format or "", 0),
    )
    held = getattr(image, "held_bytes", 0)  # a multi-scan JPEG's coefficients (any scale)
    return width * height * per_pixel + held + PER_PHOTO_OVERHEAD


class DecodeBudget:
    """Process-wide decode memory accounting; thread-safe (normalization runs in a pool)."""

    def __init__(self, total_bytes: int, per_photo_bytes: int, deadline_seconds: float = 10.0):
        if total_bytes < 1 or per_photo_bytes < 1 or not deadline_seconds > 0:
            raise ValueError("decode budgets and the deadline must be positive")
        self.total_bytes = total_bytes
        self.per_photo_bytes = min(per_photo_bytes, total_bytes)
        self.deadline_seconds = deadline_seconds
        self._in_use = 0
        self._free = threading.Condition()

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextlib.contextmanager
    def photo(self, deadline: float | None = None) -> Iterator[PhotoReservation]:
        """One photo's normalization: ``reservation.admit`` is the hook :func:`snapcat.imaging.normalize.
        normalize_image` calls before decoding; whatever it reserved is released on exit.
        ``deadline`` is a ``time.monotonic()`` instant (default: now + ``deadline_seconds``)."""
        reservation = PhotoReservation(
            self, deadline if deadline is not None else time.monotonic() + self.deadline_seconds
        )
        try:
            yield reservation
        finally:
            reservation.release()

    def _reserve(self, needed: int, deadline: float) -> None:
        if needed > self.per_photo_bytes:
            raise DecodeBudgetExceededError(
                f"decoding this image would need about {human_bytes(needed)} of memory, over the "
                f"{human_bytes(self.per_photo_bytes)} per-photo decode budget; send a smaller image "
                "(fewer pixels) or a JPEG"
            )
        with self._free:
            while self._in_use + needed > self.total_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DecodeBudgetBusyError(
                        f"the server is decoding other photos ({human_bytes(self._in_use)} of its "
                        f"{human_bytes(self.total_bytes)} decode budget in use); retry shortly"
                    )
                self._free.wait(remaining)
            self._in_use += needed

    def _release(self, amount: int) -> None:
        if amount:
            with self._free:
                self._in_use -= amount
                self._free.notify_all()


class PhotoReservation:
    """The budget held by one photo being normalized."""

    def __init__(self, budget: DecodeBudget, deadline: float):
        self.budget = budget
        self.deadline = deadline
        self.reserved = 0

    def admit(self, image: DecodeTarget) -> None:
        """Called with the photo about to be decoded: refuses it or reserves its memory."""
        if time.monotonic() > self.deadline:
            raise DecodeDeadlineError(
                f"the photo waited over {self.budget.deadline_seconds:g} s before decoding "
                "could start; the server is busy, retry shortly"
            )
        needed = estimate_decode_bytes(image)
        self.budget._reserve(needed, self.deadline)
        self.reserved += needed

    def release(self) -> None:
        self.budget._release(self.reserved)
        self.reserved = 0
