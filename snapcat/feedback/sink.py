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
  category, from the app backend (:meth:`snapcat.client.SnapcatClient.report_category`). Repeating
  it is harmless; a different category later replaces the earlier one.
- ``GET /metrics``: sellers' answers and top-1/top-3 agreements per model version
  (:mod:`snapcat.live_metrics`), read by ``snapcat rollout analyze``; the same for answers
  flagged ``confident``, and a 0/1 gauge per version that is 1 when those break their top-3
  promise by more than chance allows (:mod:`snapcat.confident_promise`, also logged).

Nothing is acknowledged before it is on disk (see :mod:`~snapcat.feedback.store`), so a caller that
retries until it gets a 2xx loses nothing when the sink is briefly down.
"""

from __future__ import annotations

import logging
from typing import Any

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

from snapcat import live_metrics as m
from snapcat.confident_promise import check_promise
from snapcat.feedback.events import (
    PREDICTION_ID,
    REQUEST_TYPE,
    EventError,
    parse_event,
    request_photos,
    response_confident,
    response_predictions,
)
from snapcat.feedback.store import FeedbackStore, UnknownPrediction
from snapcat.taxonomy import Taxonomy

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 64 * 1024 * 1024  # a full batch of large phone photos, base64
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(store: FeedbackStore, taxonomy: Taxonomy | None = None) -> Starlette:
    taxonomy = taxonomy or Taxonomy.load()
    registry = CollectorRegistry()
    metrics = AgreementMetrics(registry)
    promise = ConfidentPromiseMetrics(registry)

    async def receive_event(request: Request) -> Response:
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_EVENT_BYTES:
            return _error(413, f"event of {size} bytes is over the {MAX_EVENT_BYTES} byte limit")
        body = await request.body()
        try:
            event = parse_event(request.headers, body)
            if event.type == REQUEST_TYPE:
                await run_in_threadpool(store.add_request, event.id, request_photos(event.body))
            else:
                rows = response_predictions(event.body)
                await run_in_threadpool(store.add_response, event.id, rows)
                await run_in_threadpool(store.add_confident, response_confident(event.body))
        except EventError as exc:
            log.warning("refused event: %s", exc)
            return _error(400, str(exc))
        return JSONResponse({"stored": event.id})

    async def report(request: Request) -> Response:
        prediction_id = request.path_params["prediction_id"]
        if not PREDICTION_ID.match(prediction_id):
            return _error(400, f"{prediction_id!r} is not a prediction_id (32 hex digits)")
        try:
            payload: Any = await request.json()
        except ValueError:
            return _error(400, 'the body must be JSON: {"category": "<slug>"}')
        name = payload.get("category") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip():
            return _error(400, 'the body must be {"category": "<slug>"}')
        slug = taxonomy.resolve(name.strip())
        if slug is None:
            return _error(422, f"unknown category {name!r}: use one of {', '.join(taxonomy.slugs)}")
        try:
            verdict = await run_in_threadpool(store.report, prediction_id, slug)
        except UnknownPrediction:
            return _error(
                404,
                f"no prediction {prediction_id}: it was never made, or its response was not "
                "logged (is the InferenceService's logger pointing at this sink?)",
            )
        if verdict.new:
            metrics.observe(verdict.model_version, verdict.top1, verdict.top3)
            if verdict.confident and verdict.model_version in metrics.versions:
                promise.observe(verdict.model_version, verdict.top3)
        return JSONResponse({"prediction_id": prediction_id, "category": slug,
                             "model_version": verdict.model_version, "top1": verdict.top1,
                             "top3": verdict.top3})  # fmt: skip

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus_metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/", receive_event, methods=["POST"]),
            Route("/events", receive_event, methods=["POST"]),
            Route("/v1/feedback/{prediction_id}", report, methods=["PUT"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
        ]
    )


def serve(store_dir: str, host: str, port: int, taxonomy_path: str | None = None) -> None:
    import uvicorn

    store = FeedbackStore(store_dir)
    try:
        app = create_app(store, Taxonomy.load(taxonomy_path))
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        store.close()
