"""Every way the serving transformer refuses or fails a request, as exceptions carrying their HTTP
status, a stable ``reason`` code (the ``reason`` label of ``snapcat_request_errors_total``) and the
response body. Per-photo problems are :class:`InstanceError` values naming the photo's index, so
one response lists every bad photo of a batch, e.g. ``instance 2: corrupt: the JPEG file is
truncated or damaged``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: How many instance errors one message lists (the ``errors`` list carries all of them).
_MAX_LISTED_ERRORS = 5


class ServingError(Exception):
    """A request the transformer refuses or cannot serve; ``status`` is the HTTP status."""

    status = 500
    reason = "internal"
    #: Extra response headers (``Retry-After`` on 503s).
    headers: dict[str, str] = {}

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        errors: Sequence[InstanceError] = (),
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        #: Machine-readable fields of the body beside ``error`` (e.g. the ``max_batch`` a
        #: client should split to), so clients act on numbers, not on the message's wording.
        self.details = dict(details or {})
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        if headers is not None:
            self.headers = headers
        self.errors = list(errors)

    def to_dict(self) -> dict[str, Any]:
        """The response body: KServe's and TF Serving's ``{"error": ...}`` plus, for per-instance
        problems, ``errors`` with one ``{"instance", "reason", "message"}`` entry each."""
        body: dict[str, Any] = {"error": self.message, **self.details}
        if self.errors:
            body["errors"] = [e.to_dict() for e in self.errors]
        return body


class BadRequestError(ServingError):
    """HTTP 400: malformed request, bad base64, unusable image, too many instances."""

    status = 400
    reason = "bad-request"


class PayloadTooLargeError(BadRequestError):
    """HTTP 413: an image over ``--max_image_bytes`` or a body over ``--max_request_bytes``."""

    status = 413
    reason = "too-large"


class UnsupportedMediaTypeError(BadRequestError):
    """HTTP 415: a body that is not JSON (nor the V2 binary extension)."""

    status = 415
    reason = "unsupported-media-type"


class NotServedError(ServingError):
    """A KServe verb this model does not implement (``:explain``): 501, nothing decoded."""

    status = 501
    reason = "not-implemented"


class OverloadedError(ServingError):
    """HTTP 503 with ``Retry-After``: more photos in flight than this replica serves in time."""

    status = 503
    reason = "overloaded"
    headers = {"Retry-After": "1"}


class PredictorUnavailableError(ServingError):
    """HTTP 503: the predictor refused the connection, timed out or does not serve the model."""

    status = 503
    reason = "predictor-unavailable"
    headers = {"Retry-After": "1"}


class PredictorResponseError(ServingError):
    """HTTP 502 (or 500): the predictor answered with an error or with something unusable."""

    status = 502
    reason = "predictor-error"


@dataclass(frozen=True)
class InstanceError:
    index: int
    reason: str
    message: str
    status: int = 400

    def __str__(self) -> str:
        return f"instance {self.index}: {self.reason}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.index, "reason": self.reason, "message": self.message}


def instance_errors(errors: Sequence[InstanceError]) -> ServingError:
    """One exception for all the bad instances of a request: 413 when every one of them is over
    a size cap, 503 when any could not be served because the server is busy, 400 otherwise."""
    listed = "; ".join(str(e) for e in errors[:_MAX_LISTED_ERRORS])
    if len(errors) > _MAX_LISTED_ERRORS:
        listed += f"; and {len(errors) - _MAX_LISTED_ERRORS} more"
    busy = [e for e in errors if e.status == 503]
    if busy:
        return OverloadedError(listed, reason=busy[0].reason, errors=errors)
    if all(e.status == 413 for e in errors):
        return PayloadTooLargeError(listed, reason=errors[0].reason, errors=errors)
    return BadRequestError(listed, reason=errors[0].reason, errors=errors)
