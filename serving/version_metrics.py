"""Per-model-version live metrics and the ``prediction_id`` of every answer, as one ASGI middleware
around the transformer's app, so it sees every inference request and its final response whichever
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

A successful response gets a ``prediction_id`` per photo (V1: a field of each prediction; V2: a
``prediction_id`` BYTES output of shape [N]): the id the app backend reports the seller's final
category with, and the feedback sink joins on (docs/deploy.md, feedback loop).

Label values stay bounded: ``model_version`` is the answering version from the response (at most
:data:`MAX_VERSIONS` distinct, further ones count as ``other``) or the transformer's own for
requests that never reached a model; ``category`` is one of the model's classes or ``other``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable

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
        start_message: dict = {}
        chunks: list[bytes] = []

        async def held_send(message):
            if message["type"] == "http.response.start":
                start_message.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status = start_message.get("status", 500)
            body = b"".join(chunks)
            version, body = self._answer(status, body)
            headers = [(k, v) for k, v in start_message.get("headers", [])
                       if k.lower() != b"content-length"]  # fmt: skip
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start_message, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            label = self._version_label(version)
            reason = str(state.get("snapcat_reason") or "")
            REQUESTS.labels(label, outcome_of(status, reason)).inc()
            LATENCY.labels(label).observe(time.perf_counter() - started)

        await self.app(scope, receive, held_send)

    def _answer(self, status: int, body: bytes) -> tuple[str, bytes]:
        """(answering version, response body with prediction ids) of one response."""
        own = str(self.own_version() or "unknown")
        if status != 200:
            return own, body
        try:
            answer = json.loads(body)
        except ValueError:
            return own, body
        if not isinstance(answer, dict):
            return own, body
        version = str(answer.get("model_version") or own)
        tops = self._tops(answer)
        if tops is None:
            return version, body
        label, known = self._version_label(version), set(self.classes())
        for slug, score in tops:
            TOP1_SCORE.labels(label).observe(score)
            PREDICTIONS.labels(label, slug if slug in known else OTHER).inc()
        ids = [uuid.uuid4().hex for _ in tops]
        if isinstance(answer.get("predictions"), list):
            for prediction, pid in zip(answer["predictions"], ids, strict=True):
                prediction["prediction_id"] = pid
        else:
            answer["outputs"].append(
                {"name": "prediction_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}
            )
        return version, json.dumps(answer, ensure_ascii=False).encode("utf-8")

    @staticmethod
    def _tops(answer: dict) -> list[tuple[str, float]] | None:
        """(top-1 slug, top-1 score) per photo, or None for a body this transformer never sends."""
        try:
            if isinstance(answer.get("predictions"), list):
                return [
                    (str(p["categories"][0]["slug"]), float(p["categories"][0]["score"]))
                    for p in answer["predictions"]
                ]
            outputs = {o["name"]: o for o in answer["outputs"]}
            k = int(outputs["score"]["shape"][-1])
            scores, slugs = outputs["score"]["data"], outputs["slug"]["data"]
            return [(str(slugs[i]), float(scores[i])) for i in range(0, len(scores), k)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None


def install(app, model) -> None:
    """Wraps ``app`` (outermost, so refusals by inner layers count too) for ``model``, a loaded
    :class:`serving.transformer.ListingCategoryTransformer`."""
    app.add_middleware(
        VersionMetrics,
        own_version=lambda: model.core.model_version if model.core else "unknown",
        # the packaged taxonomy's slugs and the last answer's: a bounded set of label values
        classes=lambda: (*packaged_labels(), *(model.core.classes if model.core else ())),
    )
