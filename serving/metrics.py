"""The transformer's own Prometheus metrics (KServe already exports
``request_{preprocess,predict,postprocess}_seconds`` per model).

Label values are bounded: ``model_name`` is always the served model's name (or ``unknown`` for a
request naming any other model: 20,000 requests to random names must not create 20,000 series),
``status`` an HTTP status and ``reason`` one of the transformer's fixed reason codes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

from snapcat.serve.routes import MODEL_IN_PATH

NORMALIZE_SECONDS = Histogram(
    "snapcat_normalize_seconds",
    "Per-image normalization latency (decode, EXIF, colour, resize, JPEG encode)",
    ["model_name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PREDICTOR_SECONDS = Histogram(
    "snapcat_predictor_call_seconds",
    "Latency of the HTTP call to the predictor",
    ["model_name"],
)
PREDICTOR_BYTES = Counter(
    "snapcat_predictor_request_bytes",
    "Bytes of predict request bodies sent to the predictor",
    ["model_name"],
)
PREDICTOR_IMAGES = Counter(
    "snapcat_predictor_images", "Images sent to the predictor", ["model_name"]
)
REQUEST_ERRORS = Counter(
    "snapcat_request_errors",
    "Requests refused or failed, by HTTP status and reason (every error response counts)",
    ["model_name", "status", "reason"],
)
PHOTOS_IN_FLIGHT = Gauge("snapcat_photos_in_flight", "Photos being normalized or predicted")
REQUESTS_IN_FLIGHT = Gauge(
    "snapcat_requests_in_flight", "Requests with a body admitted and being processed"
)
BODY_BYTES_IN_FLIGHT = Gauge(
    "snapcat_request_body_bytes_in_flight", "Request body bytes held (received, not yet freed)"
)
IDLE_CONNECTIONS = Gauge("snapcat_idle_connections", "Open connections with no request in progress")
DECODE_BYTES_RESERVED = Gauge(
    "snapcat_decode_bytes_reserved", "Decode memory reserved by photos being normalized"
)

#: The transformer's stages, in request order (``benchmarks/serving_bench.py`` splits the
#: transformer's CPU per photo by them): reading the request body, decoding it (JSON, base64),
#: normalizing the photos, the call to the predictor (building its body, the HTTP exchange,
#: reading its answer), shaping the response, and logging/counting the request's outcome.
STAGES = ("read_body", "decode", "normalize", "predictor_call", "response", "log")
STAGE_CPU_SECONDS = Histogram(
    "snapcat_transformer_stage_cpu_seconds",
    "CPU time the transformer spends per request stage, by the thread's CPU clock "
    "(time.thread_time). Stages that await (read_body, predictor_call) also count what the "
    "event loop runs for other requests meanwhile: exact with one request in flight",
    ["stage"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
_STAGE_CHILDREN = {stage: STAGE_CPU_SECONDS.labels(stage) for stage in STAGES}

UNKNOWN_MODEL = "unknown"


@contextmanager
def stage_cpu(stage: str) -> Iterator[None]:
    """Counts the CPU time of the block in ``stage`` (one of :data:`STAGES`)."""
    start = time.thread_time()
    try:
        yield
    finally:
        _STAGE_CHILDREN[stage].observe(time.thread_time() - start)


class ModelLabel:
    """Maps a request path to a bounded ``model_name`` label value."""

    def __init__(self, served: set[str] | frozenset[str] = frozenset()):
        self.served = set(served)

    def __call__(self, path: str) -> str:
        match = MODEL_IN_PATH.match(path or "")
        if not match:
            return ""
        return match.group(1) if match.group(1) in self.served else UNKNOWN_MODEL
