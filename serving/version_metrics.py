"""Per-model-version live metrics, as one ASGI middleware that only times and counts, around the
transformer's app, so it sees every inference request and its final response whichever
layer answered it (the model, an error handler, a guard that refused it).

For ``POST /v1/models/<name>:predict`` and ``POST /v2/models/<name>[/versions/<v>]/infer`` it
exports (names in :mod:`snapcat.contract.metric_names`, labelled by ``model_version`` only, plus a bounded
``outcome`` / ``category``):

- requests by outcome: ok, client error (4xx), overload (429/503), predictor error (a 5xx whose
  reason says the predictor failed or answered nonsense: :data:`PREDICTOR_FAILURES`), refused
  (any other 5xx: the transformer answered on its own, e.g. 501 for an unsupported version route,
  so no client can raise a model version's error rate by calling routes no model serves);
- latency from request to the response's last byte;
- the top-1 score and the top-1 category of every answered photo.

The middleware neither parses nor rewrites a body (the answer, ``prediction_id`` included, is
built once by :class:`snapcat.serve.responses.ResponseBuilder`): the transformer notes what it
answered with :func:`note_answer` in the request's state, which the middleware shares with it
through a context variable (``kserve.Model.postprocess`` is not handed the request).

Label values stay bounded: ``model_version`` is the answering version the transformer noted (at
most :data:`MAX_VERSIONS` distinct, further ones count as ``other``) or the transformer's own for
requests that never reached a model; ``category`` is one of the model's classes or ``other``.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter, Histogram

from snapcat.contract import metric_names as m
from snapcat.serve.routes import INFERENCE_PATH
from snapcat.serve.transformer_core import packaged_labels

MAX_VERSIONS = 16
OTHER = "other"

REQUESTS = Counter(m.counter_name(m.REQUESTS), "Inference requests by outcome",
                   [m.VERSION_LABEL, m.OUTCOME_LABEL])  # fmt: skip
LATENCY = Histogram(m.LATENCY, "Inference request latency, request to last response byte",
                    [m.VERSION_LABEL], buckets=m.LATENCY_BUCKETS)  # fmt: skip
TOP1_SCORE = Histogram(m.TOP1_SCORE, "Top-1 score of each answered photo", [m.VERSION_LABEL],
                       buckets=m.SCORE_BUCKETS)  # fmt: skip
PREDICTIONS = Counter(m.counter_name(m.PREDICTIONS), "Answered photos by top-1 category",
                      [m.VERSION_LABEL, m.CATEGORY_LABEL])  # fmt: skip


#: ``reason`` codes (:mod:`snapcat.serve.errors`, serving/http_layer.py) of 5xx answers that
#: are the predictor's failure: it answered an error or something unusable, or KServe's own
#: inference failed.
PREDICTOR_FAILURES = frozenset({"predictor-error", "model-mismatch", "inference-error"})


#: The request's state dict (Starlette's ``request.state``), set by the middleware for the request
#: it is handling. A dict, so a task that copies the context (a thread, a task group) notes into
#: the same one.
_STATE: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "snapcat_request_state", default=None
)
#: Keys of what the transformer noted in the request's state.
VERSION_KEY, TOPS_KEY = "snapcat_model_version", "snapcat_tops"


def note_answer(version: str, tops: Sequence[tuple[str, float]]) -> None:
    """Notes, for the live metrics, the version that answered this request and the (top-1 slug,
    top-1 score) of each photo. A no-op outside a request the middleware handles."""
    state = _STATE.get()
    if state is not None:
        state[VERSION_KEY] = str(version)
        state[TOPS_KEY] = list(tops)


def outcome_of(status: int, reason: str = "") -> str:
    """The outcome of a response by its status and, for a 5xx, the reason the error handlers
    noted (``scope["state"]["snapcat_reason"]``); a 5xx with no reason noted counts as the
    predictor's failure only for the gateway statuses (502, 504)."""
    if status < 400:
        return m.OK
    if status in (429, 503):
        return m.OVERLOAD
    if status < 500:
        return m.CLIENT_ERROR
    if reason:
        return m.PREDICTOR_ERROR if reason in PREDICTOR_FAILURES else m.REFUSED
    return m.PREDICTOR_ERROR if status in (502, 504) else m.REFUSED


class VersionMetrics:
    """``own_version()`` is the transformer's model version, ``classes()`` its model's classes
    (both read per request: the model loads after the app is built)."""

    def __init__(self, app, own_version: Callable[[], str], classes: Callable[[], Iterable[str]]):
        self.app = app
        self.own_version = own_version
        self.classes = classes
        self.versions: set[str] = set()

    def _version_label(self, version: str) -> str:
        if version not in self.versions and len(self.versions) < MAX_VERSIONS:
            self.versions.add(version)
        return version if version in self.versions else OTHER

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not INFERENCE_PATH.match(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The error handlers note why they answered an error in the request's state (the same
        # dict as Starlette's request.state); created here so it is shared when absent.
        state = scope.setdefault("state", {})
        status = 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._count(status, state, started)

        token = _STATE.set(state)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            _STATE.reset(token)

    def _count(self, status: int, state: dict, started: float) -> None:
        own = str(self.own_version() or "unknown")
        version = str(state.get(VERSION_KEY) or own) if status == 200 else own
        label = self._version_label(version)
        reason = str(state.get("snapcat_reason") or "")
        REQUESTS.labels(label, outcome_of(status, reason)).inc()
        LATENCY.labels(label).observe(time.perf_counter() - started)
        tops = state.get(TOPS_KEY) if status == 200 else None
        if tops:
            known = set(self.classes())
            for slug, score in tops:
                TOP1_SCORE.labels(label).observe(score)
                PREDICTIONS.labels(label, slug if slug in known else OTHER).inc()


def install(app, model) -> None:
    """Wraps ``app`` (outermost, so refusals by inner layers count too) for ``model``, a loaded
    :class:`serving.transformer.ListingCategoryTransformer`."""
    app.add_middleware(
        VersionMetrics,
        own_version=lambda: model.core.model_version if model.core else "unknown",
        # the packaged taxonomy's slugs and the last answer's: a bounded set of label values
        classes=lambda: (*packaged_labels(), *(model.core.classes if model.core else ())),
    )
