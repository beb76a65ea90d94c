"""``python -m serving``: the transformer container's entrypoint.

Takes KServe's standard model-server flags (``--model_name``, ``--predictor_host``,
``--predictor_protocol``, ``--http_port``, ``--workers``, ...; KServe's controller injects the
first, second and fourth) plus its own::

    python -m serving --model_name listing-category --predictor_host 127.0.0.1:8501 \\
        --model_dir /mnt/models --http_port 8080 --top_k 3

``--model_dir`` is where the model's files are (KServe's storage initializer downloads the
transformer's ``STORAGE_URI`` to ``/mnt/models``); the labels and the model version come from
there. The predictor must be TF Serving's REST API (``--predictor_protocol v1``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from kserve import logging as kserve_logging
from kserve import model_server
from kserve.predictor_config import PredictorConfig

from serving import version_metrics
from serving.model import ListingCategoryTransformer, TransformerServer, install_http_extensions
from snapcat.inference import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_PREDICTOR_TIMEOUT,
    DEFAULT_TOP_K,
    TransformerConfig,
)

logger = logging.getLogger("snapcat.serving")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Listing-photo category transformer: photo in, top-k categories out; "
        "normalizes photos and calls TF Serving's REST API.",
        parents=[model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    group = parser.add_argument_group("snapcat transformer")
    group.add_argument(
        "--model_dir",
        default="/mnt/models",
        help="the exported model folder (MODEL_DIR, TF Serving layout) whose labels and "
        "version to use; path or URI",
    )
    group.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help="categories per photo")
    group.add_argument(
        "--max_image_bytes",
        type=int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help="largest photo file accepted (HTTP 413 above)",
    )
    group.add_argument(
        "--max_request_bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request body accepted (HTTP 413 above)",
    )
    group.add_argument(
        "--max_batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help="most photos in one request (HTTP 400 above)",
    )
    group.add_argument(
        "--predictor_timeout",
        type=float,
        default=DEFAULT_PREDICTOR_TIMEOUT,
        help="seconds to wait for the predictor before answering HTTP 503",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    if unknown:
        logger.warning("ignoring unknown arguments: %s", " ".join(unknown))
    if not args.predictor_host:
        parser.error("--predictor_host is required (KServe injects it; locally: HOST:PORT)")
    if args.predictor_protocol != "v1" or args.protocol != "v1":
        parser.error("the predictor is TF Serving: only --predictor_protocol v1 is supported")
    try:
        config = TransformerConfig(
            top_k=args.top_k,
            max_image_bytes=args.max_image_bytes,
            max_request_bytes=args.max_request_bytes,
            max_batch=args.max_batch,
            predictor_timeout=args.predictor_timeout,
        )
    except ValueError as exc:
        parser.error(str(exc))

    model = ListingCategoryTransformer(args.model_name, model_dir=args.model_dir, config=config)
    try:
        model.load()
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(
            f"python -m serving: error: cannot read the model's labels from --model_dir "
            f"{args.model_dir}: {exc}",
            file=sys.stderr,
        )
        return 2
    predictor_config = PredictorConfig(
        predictor_host=args.predictor_host,
        predictor_protocol="v1",
        predictor_use_ssl=args.predictor_use_ssl,
        predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
        predictor_request_retries=args.predictor_request_retries,
        predictor_health_check=args.enable_predictor_health_check,
    )
    model.use_predictor(predictor_config)
    install_http_extensions(model_server.app, config.max_request_bytes)
    version_metrics.install(model_server.app, model)
    server = TransformerServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        predictor_config=predictor_config,
    )
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
