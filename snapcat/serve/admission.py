"""Admission: at most ``max_photos`` photos in flight per transformer process, else a fast 503.

Load shedding beats a queue nobody waits out: past the allowance a request is refused with
:class:`snapcat.serve.errors.OverloadedError` (HTTP 503 with ``Retry-After``) before its photos
are decoded; a single request larger than the whole allowance is let through when it is alone.

The slots a request takes are released once, on every exit. Inside :meth:`Admission.holding`
(the transformer wraps KServe's preprocess -> predict -> postprocess in it) they are released when
the request ends, however it ends (an error in any stage, a verb that never calls ``predict``, a
cancelled task: two ``:explain`` requests once took a 4-slot transformer down for good); outside
it the caller releases what :meth:`Admission.admit` returns.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from snapcat.serve.errors import OverloadedError

#: The photo slots the request being handled holds (see :meth:`Admission.holding`).
_HELD_PHOTOS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "snapcat_held_photos", default=None
)


class Admission:
    def __init__(self, max_photos: int):
        self.max_photos = max_photos
        self.in_flight = 0

    @property
    def saturated(self) -> bool:
        """No photo slot free: the HTTP layer refuses new requests before reading their body."""
        return self.in_flight >= self.max_photos

    def admit(self, count: int) -> int:
        """Takes ``count`` slots or raises :class:`OverloadedError`. Returns the slots the caller
        must :meth:`release`: 0 inside :meth:`holding`, which releases them itself."""
        if self.in_flight and self.in_flight + count > self.max_photos:
            raise OverloadedError(
                f"the transformer is at capacity ({self.in_flight} photos in flight, "
                f"at most {self.max_photos}); retry shortly"
            )
        self.in_flight += count
        held = _HELD_PHOTOS.get()
        if held is not None:
            held[0] += count
            return 0
        return count

    def release(self, count: int) -> None:
        self.in_flight -= count

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Releases, on exit, every slot admitted within (in this task or the ones it starts)."""
        held = [0]
        token = _HELD_PHOTOS.set(held)
        try:
            yield
        finally:
            _HELD_PHOTOS.reset(token)
            self.release(held[0])
