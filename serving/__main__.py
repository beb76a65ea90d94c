"""``python -m serving``: the transformer container's entrypoint.

Takes KServe's standard model-server flags that apply to it (``--model_name``,
``--predictor_host``, ``--predictor_protocol``, ``--http_port``, ...; KServe's controller injects
the first, second and fourth) plus its own::

    python -m serving --model_name listing-category --predictor_host 127.0.0.1:8501 \\
        --http_port 8080 --top_k 3

The transformer reads no model files: labels, confidence threshold, version and image spec come
with the predictor's answers (:mod:`snapcat.serve.transformer_core`), so its pod needs no
``STORAGE_URI``, no storage initializer and no storage credentials. ``--model_dir`` (what it
took before) is still accepted and ignored with a log line, so an older manifest keeps working.
The predictor must be TF Serving's REST API (``--predictor_protocol v1``).

KServe flags that would do nothing here are not offered (and are ignored with a warning if
given): gRPC (``--enable_grpc``, ``--grpc_port``, ...: the transformer serves HTTP only),
``--workers`` (one process per pod; scale with replicas), ``--enable_docs_url``, and the
predictor client settings ``--predictor_request_timeout_seconds``,
``--predictor_request_retries`` and ``--enable_predictor_health_check`` (this transformer calls
TF Serving itself: ``--predictor_timeout``; readiness always follows the predictor).
"""

from __future__ import annotations

import argparse
import logging
import sys

from kserve import logging as kserve_logging
from kserve.predictor_config import PredictorConfig

from serving import kserve_adapter
from serving.capacity import plan_capacity
from serving.connection import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_IDLE_CONNECTIONS,
)
from serving.http_layer import DEFAULT_BODY_TIMEOUT
from serving.server import DEFAULT_MAX_CONNECTIONS, HttpLimits, TransformerServer
from serving.transformer import ListingCategoryTransformer
from snapcat.serve.container_limits import read_container_limits
from snapcat.serve.transformer_core import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PHOTO_DEADLINE,
    DEFAULT_PREDICTOR_TIMEOUT,
    DEFAULT_TOP_K,
    TransformerConfig,
)

logger = logging.getLogger("snapcat.serving")

#: KServe model-server flags this transformer does not offer (see the module docstring).
UNSUPPORTED_KSERVE_FLAGS = frozenset(
    {
        "grpc_port",
        "enable_grpc",
        "max_threads",
        "grpc_max_send_message_length",
        "grpc_max_receive_message_length",
        "workers",
        "enable_docs_url",
        "predictor_request_timeout_seconds",
        "predictor_request_retries",
        "enable_predictor_health_check",
    }
)


def _kserve_flags() -> argparse.ArgumentParser:
    """KServe's model-server parser without the flags in :data:`UNSUPPORTED_KSERVE_FLAGS`."""
    return kserve_adapter.kserve_flag_actions(
        lambda action: action.dest not in UNSUPPORTED_KSERVE_FLAGS and action.dest != "help"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Listing-photo category transformer: photo in, top-k categories out; "
        "normalizes photos and calls TF Serving's REST API.",
        parents=[_kserve_flags()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    group = parser.add_argument_group("snapcat transformer")
    # Before the answers described the model, the labels were read from here; now ignored.
    group.add_argument("--model_dir", help=argparse.SUPPRESS)
    group.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help="categories per photo")
    group.add_argument(
        "--predictor_timeout",
        type=float,
        default=DEFAULT_PREDICTOR_TIMEOUT,
        help="seconds to wait for the predictor before answering HTTP 503",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every request: uvicorn's access line, KServe's timing lines (kserve.trace) "
        "and snapcat's one line per successful request (by default only refusals and errors "
        "are logged, one line each)",
    )
    limits = parser.add_argument_group("request limits")
    limits.add_argument(
        "--host", default="0.0.0.0", help="address to bind (127.0.0.1: this machine only)"
    )
    limits.add_argument(
        "--max_image_bytes",
        type=int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help="largest photo file accepted (HTTP 413 above)",
    )
    limits.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body accepted (HTTP 413 above)",
    )
    limits.add_argument(
        "--max_batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help="most photos in one request (HTTP 400 above)",
    )
    limits.add_argument(
        "--max_decode_bytes",
        type=int,
        default=DEFAULT_MAX_DECODE_BYTES,
        help="most memory decoding one photo may need, estimated from its header before "
        "decoding (HTTP 413 above)",
    )
    limits.add_argument(
        "--decode_budget_bytes",
        type=int,
        default=0,
        help="decode memory of all photos at once (0: from the container's memory limit)",
    )
    limits.add_argument(
        "--max_photos_in_flight",
        type=int,
        default=0,
        help="photos admitted at once, more get HTTP 503 + Retry-After (0: from the "
        "container's CPU limit)",
    )
    limits.add_argument(
        "--photo_deadline",
        type=float,
        default=DEFAULT_PHOTO_DEADLINE,
        help="seconds a photo may wait for decoding to start (HTTP 503 after)",
    )
    limits.add_argument(
        "--max_header_bytes",
        type=int,
        default=DEFAULT_MAX_HEADER_BYTES,
        help="largest request head (HTTP 431 above)",
    )
    limits.add_argument(
        "--header_timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a client has to send the request head (HTTP 408 after)",
    )
    limits.add_argument(
        "--body_timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        help="seconds a client has to send the request body (HTTP 408 after)",
    )
    limits.add_argument(
        "--max_connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections whose request is being handled at once (HTTP 503 above)",
    )
    limits.add_argument(
        "--max_idle_connections",
        type=int,
        default=DEFAULT_MAX_IDLE_CONNECTIONS,
        help="connections with no request in progress kept open; past it the longest idle "
        "one is closed",
    )
    return parser


def raise_open_files_limit(wanted: int) -> int:
    """Raises this process's soft limit on open files towards ``wanted`` (at most the hard
    limit): the default soft limit (often 1024) is below the connections the server holds
    (``max_connections`` + ``max_idle_connections``), and past it ``accept()`` fails for
    everyone. Returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


#: Loggers that write a line for every request KServe and uvicorn serve: uvicorn's access log,
#: KServe's ``TimingMiddleware`` (two ``kserve.trace`` lines: wall and CPU time) and its latency
#: log (``--enable_latency_logging``, also ``kserve.trace``).
PER_REQUEST_LOGGERS = ("uvicorn.access", "kserve.trace")


def quiet_request_logs(verbose: bool) -> None:
    """Without ``--verbose``, no line per successful request: four lines per request were a
    measurable share of the transformer's CPU per photo, and the same figures are in the
    Prometheus metrics. Refusals and errors still log one line each (``snapcat.serving``)."""
    level = logging.INFO if verbose else logging.WARNING
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # serving.http_layer's line per successful request, at DEBUG
    logging.getLogger("snapcat.serving.requests").setLevel(
        logging.DEBUG if verbose else logging.INFO
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
        # Our lines (one per refused request, predictor state changes) in KServe's format.
        ours = logging.getLogger("snapcat")
        ours.handlers = list(logging.getLogger("kserve").handlers)
        ours.setLevel(logging.INFO)
        ours.propagate = False
    quiet_request_logs(args.verbose)
    kserve_adapter.silence_kserve_deprecations()
    if unknown:
        logger.warning("ignoring unknown or unsupported arguments: %s", " ".join(unknown))
    if args.model_dir is not None:
        logger.info(
            "ignoring --model_dir=%s: labels and image spec come from the predictor's answers",
            args.model_dir,
        )
    if not args.predictor_host:
        parser.error("--predictor_host is required (KServe injects it; locally: HOST:PORT)")
    if args.predictor_protocol != "v1" or args.protocol != "v1":
        parser.error("the predictor is TF Serving: only --predictor_protocol v1 is supported")
    if (
        min(args.max_header_bytes, args.max_connections, args.max_idle_connections) < 1
        or min(args.decode_budget_bytes, args.max_photos_in_flight) < 0
    ):
        parser.error(
            "--max_header_bytes, --max_connections and --max_idle_connections must be at least 1"
        )
    if not (args.header_timeout > 0 and args.body_timeout > 0):
        parser.error("--header_timeout and --body_timeout must be positive")
    try:
        config = TransformerConfig(
            top_k=args.top_k,
            max_image_bytes=args.max_image_bytes,
            max_request_bytes=args.max_request_bytes,
            max_batch=args.max_batch,
            predictor_timeout=args.predictor_timeout,
            max_decode_bytes=args.max_decode_bytes,
            photo_deadline=args.photo_deadline,
        )
    except ValueError as exc:
        parser.error(str(exc))
    capacity = plan_capacity(
        read_container_limits(),
        max_photos=args.max_photos_in_flight,
        decode_budget_bytes=args.decode_budget_bytes,
    )

    files = raise_open_files_limit(args.max_connections + args.max_idle_connections + 256)
    if files < args.max_connections + args.max_idle_connections + 64:
        logger.warning(
            "only %d open files allowed: fewer than --max_connections + --max_idle_connections",
            files,
        )
    model = ListingCategoryTransformer(args.model_name, config=config, capacity=capacity)
    model.load()
    predictor_config = PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol="v1",
        predictor_use_ssl=args.predictor_use_ssl,
    )
    model.use_predictor(predictor_config)
    server = TransformerServer(
        http_limits=HttpLimits(
            host=args.host,
            max_request_bytes=config.max_request_bytes,
            max_header_bytes=args.max_header_bytes,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
            max_idle_connections=args.max_idle_connections,
            max_requests=capacity.max_requests,
            body_bytes_in_flight=capacity.body_bytes_in_flight,
        ),
        http_port=args.http_port,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        predictor_config=predictor_config,
        verbose=args.verbose,
    )
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
