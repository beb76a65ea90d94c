"""The transformer's HTTP layer around KServe's FastAPI app: what reaches the model, and how every
refusal is answered, counted and logged.

- :class:`RequestGuard` (ASGI middleware), in front of every route:

  - inference requests (``POST .../:predict``, ``.../infer``) beyond ``max_requests`` being
    processed, arriving while the model has no photo slot free (``saturated``), or whose bodies
    would take the request bytes held past ``max_body_bytes_in_flight``, get a fast ``503`` with ``Retry-After`` (load shedding). A body
    still arriving holds only the bytes received so far, not a processing slot, so slow uploads
    cannot starve the others;
  - a body that is not JSON (nor KServe's V2 binary extension or a CloudEvent) is ``415``;
  - a body over ``max_request_bytes`` is ``413`` (by Content-Length, or while it streams in);
  - a body that does not arrive within ``body_timeout`` seconds is ``408``;
  - a client that disconnects is logged as such (one line), not as a server error;
  - every response of 400 or more counts in ``snapcat_request_errors_total`` and logs exactly one
    line (no tracebacks for bad requests), whoever produced it: the handlers below, KServe or
    Starlette (404, 405).

- Exception handlers for :class:`~snapcat.serve.errors.ServingError`, FastAPI's validation
  errors and KServe's own exceptions: a ``{"error": ...}`` body with the right status, and the
  reason code handed to the guard through ``request.state``.
- Routes KServe registers that no client may call are answered 404 by the guard before routing:
  the model repository's ``load``/``unload`` (anyone could take the model down for good) and the
  OpenAPI schema and docs (which list them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from http import HTTPStatus

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from kserve import errors as kserve_errors
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from serving.metrics import (
    BODY_BYTES_IN_FLIGHT,
    REQUEST_ERRORS,
    REQUESTS_IN_FLIGHT,
    ModelLabel,
    stage_cpu,
)
from snapcat.errors import human_bytes
from snapcat.serve.errors import OverloadedError, ServingError
from snapcat.serve.routes import BODY_PATH

logger = logging.getLogger("snapcat.serving")
#: One line per successful request, at DEBUG (``python -m serving --verbose`` shows them).
request_logger = logging.getLogger("snapcat.serving.requests")

#: Seconds a client has to send a whole request body.
DEFAULT_BODY_TIMEOUT = 30.0
# The routes that take a request body (snapcat.serve.routes.BODY_PATH) go, every one, through
# RequestGuard._admit_body (body limits, timeouts, in-flight limits). Any other method than
# GET/HEAD on any other path (whatever a KServe upgrade registers) is 404 before its body is read.
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PROBE_PATH = re.compile(r"^(/|/v2/health/(live|ready)|/v1/models/[^/:]+|/v2/models/[^/]+/ready)$")
_JSON_TYPES = ("application/json", "application/cloudevents+json", "text/json")
#: Routes never served: state-changing management, and the API schema that would list them.
_BLOCKED_PATH = re.compile(r"^(/v2/repository/.*|/openapi\.json|/docs.*|/redoc.*)$")


def _reason_for_status(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return f"http-{status}"


def _note(request: Request, reason: str, message: str) -> None:
    """Tells :class:`RequestGuard` why a response is an error (it counts and logs it)."""
    request.state.snapcat_reason = reason
    request.state.snapcat_message = message


def _error_response(status: int, message: str, headers: dict | None = None, body=None):
    return JSONResponse(status_code=status, content=body or {"error": message}, headers=headers)


# ------------------------------------------------------------------------------------ handlers
async def serving_error_handler(request: Request, exc: ServingError) -> JSONResponse:
    _note(request, exc.reason, exc.message)
    return _error_response(exc.status, exc.message, exc.headers or None, exc.to_dict())


async def validation_error_handler(request: Request, exc: RequestValidationError):
    """FastAPI answers a malformed V2 body with 422 and its own format; we answer 400 with
    ``{"error": ...}`` like every other bad request."""
    errors = exc.errors()
    invalid_json = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid_json:
        detail = (invalid_json[0].get("ctx") or {}).get("error") or invalid_json[0].get("msg")
        message = f"invalid JSON: {detail}"
        _note(request, "invalid-json", message)
        return _error_response(400, message)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][2:]) or 'body'}: {e.get('msg')}"
        for e in errors
        # The endpoint takes InferenceRequest | bytes; the bytes alternative is noise here.
        if tuple(e.get("loc", ()))[:2] != ("body", "bytes")
    )
    message = f"invalid V2 inference request: {problems}"
    _note(request, "invalid-v2-request", message)
    return _error_response(400, message)


#: KServe's exceptions: status and reason code (KServe's own handlers log a traceback for each).
_KSERVE_ERRORS = {
    kserve_errors.InvalidInput: (400, "invalid-input"),
    kserve_errors.ModelNotFound: (404, "model-not-found"),
    kserve_errors.ModelNotReady: (503, "model-not-ready"),
    kserve_errors.ServerNotLive: (503, "not-live"),
    kserve_errors.ServerNotReady: (503, "not-ready"),
    kserve_errors.UnsupportedProtocol: (400, "unsupported-protocol"),
    kserve_errors.InferenceError: (500, "inference-error"),
    NotImplementedError: (501, "not-implemented"),
}


async def kserve_error_handler(request: Request, exc: Exception) -> JSONResponse:
    status, reason = next(
        (v for cls, v in _KSERVE_ERRORS.items() if isinstance(exc, cls)), (500, "internal")
    )
    message = str(exc)
    _note(request, reason, message)
    return _error_response(status, message)


async def client_disconnect_handler(request: Request, exc: ClientDisconnect) -> JSONResponse:
    # The client is gone; this answer goes nowhere, but the guard logs and counts one line.
    _note(request, "client-disconnected", "the client disconnected before sending its request")
    return _error_response(499, "client disconnected")


# ------------------------------------------------------------------------------------ guard
class RequestGuard:
    """See the module docstring. One instance wraps the whole app."""

    def __init__(
        self,
        app,
        *,
        max_request_bytes: int,
        max_requests: int,
        max_body_bytes_in_flight: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        model_label: ModelLabel | None = None,
        saturated: Callable[[], bool] = lambda: False,
    ):
        self.app = app
        self.saturated = saturated
        self.max_request_bytes = max_request_bytes
        self.max_requests = max_requests
        self.max_body_bytes_in_flight = max(max_body_bytes_in_flight, max_request_bytes)
        self.body_timeout = body_timeout
        self.model_label = model_label or ModelLabel()
        self.requests_in_flight = 0
        self.body_bytes_in_flight = 0
        REQUESTS_IN_FLIGHT.set_function(lambda: self.requests_in_flight)
        BODY_BYTES_IN_FLIGHT.set_function(lambda: self.body_bytes_in_flight)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        outcome = _Outcome(scope, self.model_label)

        async def observed_send(message):
            if message["type"] == "http.response.start":
                outcome.status = message["status"]
            await send(message)

        path, method = scope.get("path", ""), scope["method"]
        try:
            if _BLOCKED_PATH.match(path):
                await self._refuse(
                    scope, observed_send, outcome, 404, "not-served", "not served on this port"
                )
            elif method == "POST" and BODY_PATH.match(path):
                await self._admit_body(scope, receive, observed_send, outcome)
            elif method not in _NO_BODY_METHODS:
                # Refused before a byte of its body is read; whatever route KServe registers.
                await self._refuse(
                    scope, observed_send, outcome, 404, "not-served", "not served on this port"
                )
            elif _has_body(scope):
                await self._refuse(
                    scope,
                    observed_send,
                    outcome,
                    400,
                    "unexpected-body",
                    f"a {method} request carries no body",
                )
            else:
                await self.app(scope, receive, observed_send)
        except Exception as exc:
            outcome.status = 500
            outcome.reason = "internal"
            outcome.message = f"{type(exc).__name__}: {exc}"
            raise  # KServe's handler answers 500 and logs the traceback: a bug to fix
        finally:
            with stage_cpu("log"):
                outcome.record()

    async def _admit_body(self, scope, receive, send, outcome: _Outcome) -> None:
        """The one admission path of every route that takes a body (see :data:`snapcat.serve.routes.BODY_PATH`):
        413 by Content-Length or while it streams, 415, 503 past the in-flight limits, 408 for
        a body too slow; the slot and body bytes it holds are released on every exit (the
        ``finally`` below), the photo slots by the model's own ``__call__``."""
        headers = dict(scope.get("headers", ()))
        declared = _content_length(headers)
        if declared is not None and declared > self.max_request_bytes:
            return await self._refuse(scope, send, outcome, *self._too_large(declared))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        binary_v2 = b"inference-header-content-length" in headers
        if content_type and content_type.lower() not in _JSON_TYPES and not binary_v2:
            return await self._refuse(
                scope,
                send,
                outcome,
                415,
                "unsupported-media-type",
                f"the request body must be JSON (content-type: application/json), "
                f"got content-type '{content_type[:100]}'",
            )
        if self.requests_in_flight >= self.max_requests or self.saturated():
            # Refused before its body is read: a full server spends nothing on it.
            return await self._overloaded(scope, send, outcome)
        held = [0]  # body bytes this request holds of max_body_bytes_in_flight
        try:
            try:
                # asyncio.timeout, not wait_for: no extra task per request
                with stage_cpu("read_body"):
                    async with asyncio.timeout(self.body_timeout):
                        body = await self._read_body(receive, outcome, held)
            except TimeoutError:
                return await self._refuse(
                    scope,
                    send,
                    outcome,
                    408,
                    "body-timeout",
                    f"the request body did not arrive within {self.body_timeout:g} s",
                )
            if body is None:  # disconnected, over the cap or over the bytes in flight
                if outcome.status == 503:
                    return await self._overloaded(scope, send, outcome)
                if outcome.status == 413:
                    return await self._refuse(
                        scope, send, outcome, 413, outcome.reason, outcome.message
                    )
                return None
            # Slow uploads hold only their bytes; a processing slot is taken once the body is in.
            if self.requests_in_flight >= self.max_requests:
                return await self._overloaded(scope, send, outcome)
            self.requests_in_flight += 1
            try:
                whole = {"type": "http.request", "body": body, "more_body": False}
                await self.app(scope, _replay(whole, receive), send)
            finally:
                self.requests_in_flight -= 1
        finally:
            self.body_bytes_in_flight -= held[0]

    async def _overloaded(self, scope, send, outcome: _Outcome) -> None:
        error = OverloadedError(
            f"the transformer is at capacity ({self.requests_in_flight} requests in flight, "
            f"{human_bytes(self.body_bytes_in_flight)} of request bodies); retry shortly"
        )
        await self._refuse(
            scope, send, outcome, error.status, error.reason, error.message, error.headers
        )

    async def _read_body(self, receive, outcome: _Outcome, held: list[int]) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                outcome.status, outcome.reason = 499, "client-disconnected"
                outcome.message = "the client disconnected while sending its request"
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                outcome.status, outcome.reason, outcome.message = self._too_large(
                    size, streamed=True
                )
                return None
            if self.body_bytes_in_flight + len(chunk) > self.max_body_bytes_in_flight:
                outcome.status = 503
                return None
            self.body_bytes_in_flight += len(chunk)
            held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int, streamed: bool = False) -> tuple[int, str, str]:
        what = f"over {human_bytes(size)}" if streamed else human_bytes(size)
        return (
            413,
            "request-too-large",
            f"the request body is {what}, over the {human_bytes(self.max_request_bytes)} limit "
            "(--max_request_bytes); send fewer or smaller photos per request",
        )

    @staticmethod
    async def _refuse(scope, send, outcome, status, reason, message, headers=None) -> None:
        outcome.status, outcome.reason, outcome.message = status, reason, message
        response = _error_response(status, message, {**(headers or {}), "connection": "close"})
        await response(scope, _empty_receive, send)


class _Outcome:
    """One request's result as the guard saw it; :meth:`record` counts and logs errors."""

    def __init__(self, scope, model_label: ModelLabel):
        self.scope = scope
        self.model_label = model_label
        self.status = 0
        self.reason = ""
        self.message = ""
        self.started = time.monotonic()

    def record(self) -> None:
        if self.status < 400:
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "%s %s: HTTP %d in %.1f ms",
                    self.scope.get("method"),
                    self.scope.get("path", "")[:200],
                    self.status,
                    (time.monotonic() - self.started) * 1000,
                )
            return
        scope = self.scope
        state = scope.get("state") or {}
        reason = self.reason or state.get("snapcat_reason") or _reason_for_status(self.status)
        message = self.message or state.get("snapcat_message") or ""
        path = scope.get("path", "")
        if scope.get("method") == "GET" and _PROBE_PATH.match(path):
            # A failing probe is the server's state, not a request error; the change is logged
            # once by the model (``predictor ...: not ready``).
            logger.debug("GET %s: HTTP %d: %s", path, self.status, message)
            return
        REQUEST_ERRORS.labels(self.model_label(path), str(self.status), reason).inc()
        level = logging.ERROR if self.status >= 500 and self.status != 503 else logging.INFO
        if self.status == 503:
            level = logging.WARNING
        client = scope.get("client")
        logger.log(
            level,
            "%s %s%s: HTTP %d %s: %s",
            scope.get("method"),
            path[:200],
            f" from {client[0]}" if client else "",
            self.status,
            reason,
            message[:500],
        )


def _has_body(scope) -> bool:
    for name, value in scope.get("headers", ()):
        if (name == b"content-length" and value.strip() not in (b"0", b"")) or (
            name == b"transfer-encoding"
        ):
            return True
    return False


def _content_length(headers: dict) -> int | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _replay(first: dict, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


async def _empty_receive():
    return {"type": "http.disconnect"}


# ------------------------------------------------------------------------------------ app
def install_exception_handlers(app: FastAPI) -> None:
    """Our handlers for ServingError, validation errors, client disconnects and KServe's own
    exceptions (replacing KServe's, which log a traceback for every bad request)."""
    app.add_exception_handler(ServingError, serving_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(ClientDisconnect, client_disconnect_handler)
    for exc_class in _KSERVE_ERRORS:
        app.add_exception_handler(exc_class, kserve_error_handler)
