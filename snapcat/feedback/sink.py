"""The feedback sink: a small HTTP service beside the InferenceService (Starlette under uvicorn,
the toolkit under KServe's own model server; FastAPI's request models would add nothing to four
routes, and its start-up cost).

Why a separate service and not an endpoint of the transformer: the transformer is scaled, canaried
and rolled back with every model, while feedback must outlive model versions and needs one durable
volume; KServe's payload logger already delivers each request and response to a sink URL, so the
transformer's hot path stays free of storage writes.

- ``POST /``: CloudEvents from KServe's logger (``spec.transformer.logger.url``): request events
  store the photos, response events the suggestions and their ``prediction_id``.
- ``PUT /v1/feedback/{prediction_id}`` ``{"category": "<slug or name>"}``: the seller's final
  category, from the app backend (:meth:`snapcat.serve.client.SnapcatClient.report_category`), with
  the bearer token. Repeating it is harmless; a different category later is recorded as a
  correction and the first one kept.
- ``GET /healthz`` (liveness) and ``GET /readyz`` (503 while the store is full).

Issue 25, only the product writes: writes need the bearer token, except KServe's logger events on
the logger port (:mod:`snapcat.feedback.access`); a response is stored only when each
``prediction_id`` is signed by the transformer for exactly that answer, and only stored
predictions take a category, so model-version labels come from real answers only. Not an image:
400; past a quota or on a full volume: 507 and readiness fails, with nothing stored lost.
- ``GET /metrics``: sellers' answers and top-1/top-3 agreements per model version
  (:mod:`snapcat.contract.metric_names`), read by ``snapcat rollout analyze``; the same for answers
  flagged ``confident``, and a 0/1 gauge per version that is 1 when those break their top-3
  promise by more than chance allows (:mod:`snapcat.feedback.promise`, also logged).

Nothing is acknowledged before it is on disk (see :mod:`~snapcat.feedback.store`), so a caller that
retries until it gets a 2xx loses nothing when the sink is briefly down.

Bodies are read as a stream, chunked ones included, and bounded while they arrive: an event over
``MAX_EVENT_BYTES`` is 413 (a 300 MiB chunked event used to be stored whole), a body that does not
arrive within ``BODY_TIMEOUT`` seconds 408, and the bodies being read at once hold at most
``MAX_BODY_BYTES_IN_FLIGHT`` (past it 503 + ``Retry-After``; six concurrent 60 MiB events took the
sink to 968 MiB). Every malformed event is a 400 with a short message that quotes nothing of the
body at length; nothing a client sends is a 500.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from snapcat.contract import metric_names as m
from snapcat.contract.prediction_signing import KeyRing
from snapcat.contract.taxonomy import Taxonomy
from snapcat.feedback.access import BURST, FORWARDED_ALLOW_IPS, RATE, BearerAuth, RateLimiter
from snapcat.feedback.events import (
    PREDICTION_ID,
    REQUEST_TYPE,
    EventError,
    parse_event,
    request_photos,
    response_confident,
    response_predictions,
)
from snapcat.feedback.promise import check_promise
from snapcat.feedback.store import FeedbackStore, NotAnImage, StoreFull, UnknownPrediction

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 64 * 1024 * 1024  # a full batch of large phone photos, base64
MAX_REPORT_BYTES = 16 * 1024  # {"category": "<slug or name>"}
MAX_BODY_BYTES_IN_FLIGHT = 128 * 1024 * 1024  # all bodies being read at once
BODY_TIMEOUT = 30.0  # seconds a client has to send a whole body
MAX_VERSIONS = 32  # model_version label values kept; more are counted as "other"


class AgreementMetrics:
    def __init__(self, registry: CollectorRegistry):
        label = [m.VERSION_LABEL]
        self.answers = Counter(m.counter_name(m.FEEDBACK), "Sellers' final categories received",
                               label, registry=registry)  # fmt: skip
        self.top1 = Counter(m.counter_name(m.FEEDBACK_TOP1), "Final category was the top-1 "
                            "suggestion", label, registry=registry)  # fmt: skip
        self.top3 = Counter(m.counter_name(m.FEEDBACK_TOP3), "Final category was among the "
                            "top-3 suggestions", label, registry=registry)  # fmt: skip
        self.versions: set[str] = set()

    def observe(self, version: str, top1: bool, top3: bool) -> None:
        if version not in self.versions and len(self.versions) < MAX_VERSIONS:
            self.versions.add(version)
        value = version if version in self.versions else "other"
        self.answers.labels(value).inc()
        # All three series exist from a version's first answer (at 0 if none agreed yet), so
        # Prometheus sees "0 of N agreed" rather than no data.
        self.top1.labels(value).inc(1 if top1 else 0)
        self.top3.labels(value).inc(1 if top3 else 0)


class ConfidentPromiseMetrics:
    """Confident answers with sellers' feedback per version, their top-3 agreements, and whether
    the promise is broken (checked on every new answer; logged when it first breaks)."""

    def __init__(self, registry: CollectorRegistry):
        label = [m.VERSION_LABEL]
        self.answers = Counter(m.counter_name(m.FEEDBACK_CONFIDENT), "Sellers' final categories "
                               "for answers flagged confident", label, registry=registry)  # fmt: skip
        self.top3 = Counter(m.counter_name(m.FEEDBACK_CONFIDENT_TOP3), "Of those, final category "
                            "among the top-3 suggestions", label, registry=registry)  # fmt: skip
        self.broken = Gauge(m.CONFIDENT_PROMISE_BROKEN, "1 when confident answers keep their "
                            "top-3 promise less often than chance allows", label,
                            registry=registry)  # fmt: skip
        self.tally: dict[str, list[int]] = {}
        self.broken_versions: set[str] = set()

    def observe(self, version: str, top3: bool) -> None:
        answers_agreed = self.tally.setdefault(version, [0, 0])
        answers_agreed[0] += 1
        answers_agreed[1] += int(top3)
        self.answers.labels(version).inc()
        self.top3.labels(version).inc(1 if top3 else 0)
        result = check_promise(*answers_agreed)
        self.broken.labels(version).set(1 if result.broken else 0)
        if result.broken and version not in self.broken_versions:
            log.warning("model version %s: %s", version, result.detail)
        if result.broken:
            self.broken_versions.add(version)
        else:
            self.broken_versions.discard(version)


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _quote(value: Any, limit: int = 64) -> str:
    """``value`` for an error message: never more than ``limit`` characters of it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BodyRefused(Exception):
    def __init__(self, response: JSONResponse):
        self.response = response


class BodyReader:
    """Reads request bodies as they stream in, within a size cap per body and a cap on the bytes
    of all bodies being read at once (one event loop: no lock needed)."""

    def __init__(
        self, in_flight_cap: int = MAX_BODY_BYTES_IN_FLIGHT, timeout: float = BODY_TIMEOUT
    ):
        self.in_flight_cap = in_flight_cap
        self.timeout = timeout
        self.in_flight = 0

    async def read(self, request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyRefused(_error(413, f"the body is over the {limit} byte limit"))
        held = 0
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout):
                async for chunk in request.stream():
                    held += len(chunk)
                    if held > limit:
                        raise BodyRefused(_error(413, f"the body is over the {limit} byte limit"))
                    if self.in_flight + len(chunk) > self.in_flight_cap:
                        raise BodyRefused(
                            _error(503, "the sink is busy; retry shortly", {"retry-after": "1"})
                        )
                    self.in_flight += len(chunk)
                    chunks.append(chunk)
            return b"".join(chunks)
        except TimeoutError:
            raise BodyRefused(
                _error(408, f"the body did not arrive within {self.timeout:g} s")
            ) from None
        finally:
            self.in_flight -= sum(len(c) for c in chunks)


@dataclass
class SinkAccess:
    """Who may write (see :mod:`snapcat.feedback.access`): the bearer token, the port KServe's
    logger posts to without one (None: every write needs the token), the transformer's keys and
    the per-caller rate limit."""

    keys: KeyRing
    auth: BearerAuth
    logger_port: int | None = None
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(RATE, BURST))


def _local_port(request: Request) -> int | None:
    server = request.scope.get("server")
    return server[1] if server else None


def create_app(
    store: FeedbackStore,
    access: SinkAccess,
    taxonomy: Taxonomy | None = None,
    reader: BodyReader | None = None,
) -> Starlette:
    taxonomy = taxonomy or Taxonomy.load()
    registry = CollectorRegistry()
    metrics = AgreementMetrics(registry)
    reader = reader or BodyReader()
    promise = ConfidentPromiseMetrics(registry)

    def refused_caller(request: Request, *, logger_allowed: bool) -> Response | None:
        """401 / 403 / 429 for a caller that may not write now; None when it may."""
        on_logger_port = (
            access.logger_port is not None and _local_port(request) == access.logger_port
        )
        if on_logger_port and not logger_allowed:
            return _error(403, "the logger port takes KServe's logger events only")
        if not on_logger_port and not access.auth.allows(request.headers.get("authorization")):
            return _error(
                401,
                "authentication required: send 'Authorization: Bearer <token>' (the sink's "
                "feedback token)",
                {"www-authenticate": 'Bearer realm="snapcat-feedback"'},
            )
        caller = request.client.host if request.client else "unknown"
        if not access.limiter.allow(caller):
            return _error(429, "too many requests from this caller; retry shortly",
                          {"retry-after": "1"})  # fmt: skip
        return None

    async def receive_event(request: Request) -> Response:
        if (refused := refused_caller(request, logger_allowed=True)) is not None:
            return refused
        try:
            body = await reader.read(request, MAX_EVENT_BYTES)
        except BodyRefused as refused:
            return refused.response
        try:
            event = parse_event(request.headers, body)
            event_id = event.id
            if event.type == REQUEST_TYPE:
                photos = request_photos(event.body)
                del body, event  # the photos are what is kept; not the JSON and bytes as well
                await run_in_threadpool(store.add_request, event_id, photos)
            else:
                rows = response_predictions(event.body)
                confident = response_confident(event.body)
                forged = [
                    pid for pid, version, top in rows
                    if not access.keys.verify(pid, version, top, pid in confident)
                ]  # fmt: skip
                if forged:
                    log.warning("refused a response with %d unsigned prediction ids", len(forged))
                    return _error(
                        403,
                        f"{len(forged)} of {len(rows)} prediction_ids are not signed by the "
                        f"transformer for this answer (first: {_quote(forged[0])})",
                    )
                await run_in_threadpool(store.add_response, event_id, rows)
                await run_in_threadpool(store.add_confident, confident)
        except EventError as exc:
            log.warning("refused event: %s", str(exc)[:200])
            return _error(400, str(exc)[:300])
        except NotAnImage as exc:
            log.warning("refused a request event: %s", str(exc)[:200])
            return _error(400, f"not a photo: {str(exc)[:200]}")
        except StoreFull as exc:
            log.error("feedback store full: %s", exc)
            return _error(507, f"the feedback store is full: {exc}", {"retry-after": "60"})
        except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
            # A shape events.py does not check for yet: still the client's mistake, not ours.
            log.warning("refused malformed event (%s)", type(exc).__name__)
            return _error(400, f"the event is not in KServe's logger format ({type(exc).__name__})")
        return JSONResponse({"stored": event_id})

    async def report(request: Request) -> Response:
        if (refused := refused_caller(request, logger_allowed=False)) is not None:
            return refused
        prediction_id = request.path_params["prediction_id"]
        if not PREDICTION_ID.match(prediction_id):
            return _error(400, f"{_quote(prediction_id)} is not a prediction_id (a signed id "
                          "as the transformer answers it)")  # fmt: skip
        if access.keys.key_for(prediction_id.split(".", 1)[0]) is None:
            return _error(403, "the prediction_id is not signed with a key the sink accepts")
        try:
            payload: Any = orjson.loads(await reader.read(request, MAX_REPORT_BYTES))
        except BodyRefused as refused:
            return refused.response
        except orjson.JSONDecodeError:
            return _error(400, 'the body must be JSON: {"category": "<slug>"}')
        name = payload.get("category") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip():
            return _error(400, 'the body must be {"category": "<slug>"}')
        slug = taxonomy.resolve(name.strip())
        if slug is None:
            return _error(
                422, f"unknown category {_quote(name)}: use one of {', '.join(taxonomy.slugs)}"
            )
        stored = await run_in_threadpool(store.prediction, prediction_id)
        if stored is None:
            return _error(
                404,
                f"no prediction {prediction_id}: it was never made, or its response was not "
                "logged (is the InferenceService's logger pointing at this sink?)",
            )
        if not access.keys.verify(prediction_id, *stored):
            return _error(403, "the prediction_id's signature does not verify (forged, or its key "
                          "is past its grace period)")  # fmt: skip
        try:
            verdict = await run_in_threadpool(store.report, prediction_id, slug)
        except UnknownPrediction:
            return _error(404, f"no prediction {prediction_id}")
        except StoreFull as exc:
            return _error(507, f"the feedback store is full: {exc}", {"retry-after": "60"})
        if verdict.new:
            metrics.observe(verdict.model_version, verdict.top1, verdict.top3)
            if verdict.confident and verdict.model_version in metrics.versions:
                promise.observe(verdict.model_version, verdict.top3)
        answer = {"prediction_id": prediction_id, "category": verdict.category,
                  "model_version": verdict.model_version, "top1": verdict.top1,
                  "top3": verdict.top3}  # fmt: skip
        if verdict.correction:
            answer["correction"] = verdict.correction
            answer["note"] = "a category was already given: it is kept, this one is recorded"
        return JSONResponse(answer)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Ready while the store takes photos: a full store is taken out of the Service (the
        logger and the backend retry elsewhere or later) instead of failing every write."""
        reason = await run_in_threadpool(store.fullness)
        if reason:
            return _error(503, f"not ready: {reason}")
        return JSONResponse({"status": "ready"})

    async def prometheus_metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal error in the feedback sink (logged)")

    return Starlette(
        routes=[
            Route("/", receive_event, methods=["POST"]),
            Route("/events", receive_event, methods=["POST"]),
            Route("/v1/feedback/{prediction_id}", report, methods=["PUT"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
        ],
        exception_handlers={Exception: server_error},
    )


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(
    store_dir: str,
    host: str,
    port: int,
    taxonomy_path: str | None = None,
    *,
    keys: KeyRing,
    token: str,
    logger_port: int | None = None,
    store_options: dict | None = None,
    rate: float = RATE,
    burst: float = BURST,
    forwarded_allow_ips: str = FORWARDED_ALLOW_IPS,
) -> None:
    """Serves the API port and, when given, the logger port from one process and one store.
    ``forwarded_allow_ips``: the proxies whose ``X-Forwarded-For`` names the caller the rate
    limit counts (:mod:`snapcat.feedback.access`)."""
    import uvicorn

    store = FeedbackStore(store_dir, **(store_options or {}))
    try:
        access = SinkAccess(keys, BearerAuth(token), logger_port, RateLimiter(rate, burst))
        app = create_app(store, access, Taxonomy.load(taxonomy_path))
        sockets = [_listen(host, port)]
        if logger_port is not None:
            sockets.append(_listen(host, logger_port))
        config = uvicorn.Config(
            app, log_level="info", proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips
        )
        server = uvicorn.Server(config)
        server.run(sockets=sockets)
    finally:
        store.close()
