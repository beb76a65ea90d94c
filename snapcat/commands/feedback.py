"""``snapcat feedback``: the sink that keeps sellers' final categories, and collecting them into a
manifest ``snapcat prepare`` ingests."""

from __future__ import annotations

import argparse
import os
import signal
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "feedback",
        help="keep sellers' final categories and turn them into training data",
        description="See docs/deploy.md (feedback loop).",
    )
    actions = p.add_subparsers(dest="feedback_command", required=True, metavar="ACTION")

    s = actions.add_parser(
        "serve",
        help="run the feedback sink (KServe logger events + the backend's final categories)",
    )
    from snapcat.contract.prediction_signing import KEYS_ENV
    from snapcat.feedback import access, store

    s.add_argument("--store", required=True, help="folder for the database and photos")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; the cluster manifests pass 0.0.0.0)",
    )
    s.add_argument("--port", type=int, default=8080, help="API port (writes need the token)")
    s.add_argument(
        "--logger-port",
        type=int,
        help="port taking KServe logger events without the token (restrict it with a "
        "NetworkPolicy to the InferenceService's pods; default: none, every write needs it)",
    )
    s.add_argument(
        "--token-file",
        default=os.environ.get(access.TOKEN_ENV),
        help=f"file holding the bearer token writers send (default: ${access.TOKEN_ENV})",
    )
    s.add_argument(
        "--keys",
        default=os.environ.get(KEYS_ENV),
        help=f"the transformer's prediction-id keys: folder or file (default: ${KEYS_ENV})",
    )
    s.add_argument("--taxonomy", help="taxonomy YAML (default: the packaged one)")
    s.add_argument("--max-photo-bytes", type=int, default=store.DEFAULT_MAX_PHOTO_BYTES,
                   help="photos' total bytes kept; past it 507")  # fmt: skip
    s.add_argument("--max-predictions-per-version", type=int,
                   default=store.DEFAULT_MAX_PREDICTIONS_PER_VERSION,
                   help="predictions kept per model version; past it 507")  # fmt: skip
    s.add_argument("--min-free-bytes", type=int, default=store.DEFAULT_MIN_FREE_BYTES,
                   help="free space the volume keeps; below it 507 and not ready")  # fmt: skip
    s.add_argument("--rate-limit", type=float, default=access.RATE,
                   help="requests a second per caller (0: no limit)")  # fmt: skip
    s.add_argument("--burst", type=float, default=access.BURST, help="requests at once per caller")
    s.add_argument(
        "--forwarded-allow-ips",
        default=access.FORWARDED_ALLOW_IPS,
        help="proxies (IPs or CIDRs, comma-separated; '*' any) whose X-Forwarded-For names the "
        "caller the rate limit counts: e.g. the ingress gateway's network, so callers behind it "
        "do not share one budget (uvicorn's setting; default: %(default)s)",
    )
    s.set_defaults(handler=_run_serve)

    c = actions.add_parser(
        "collect", help="write the sellers' categories as a path,category manifest with photos"
    )
    c.add_argument("--store", required=True, help="the sink's --store folder")
    c.add_argument("--output", required=True, help="folder to write (manifest.csv, photos/)")
    c.add_argument("--taxonomy", help="taxonomy YAML (default: the packaged one)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    c.add_argument(
        "--use-corrections",
        action="store_true",
        help="take a prediction's latest correction instead of its first category",
    )
    c.set_defaults(handler=_run_collect)


def _run_serve(args: argparse.Namespace) -> int:
    from snapcat.contract.prediction_signing import KeyMaterialError, KeyRing
    from snapcat.errors import UserError
    from snapcat.feedback.access import TokenError, read_token
    from snapcat.feedback.sink import serve

    if not args.token_file or not args.keys:
        raise UserError(
            "the sink needs --token-file (the writers' bearer token) and --keys (the "
            "transformer's prediction-id keys); see docs/deploy.md (feedback loop)"
        )
    try:
        token, keys = read_token(args.token_file), KeyRing.load(args.keys)
    except (TokenError, KeyMaterialError) as exc:
        raise UserError(str(exc)) from None
    serve(
        args.store, args.host, args.port, args.taxonomy, keys=keys, token=token,
        logger_port=args.logger_port, rate=args.rate_limit, burst=args.burst,
        forwarded_allow_ips=args.forwarded_allow_ips,
        store_options={"max_photo_bytes": args.max_photo_bytes,
                       "max_predictions_per_version": args.max_predictions_per_version,
                       "min_free_bytes": args.min_free_bytes},
    )  # fmt: skip
    return 0


def _run_collect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.errors import UserError
    from snapcat.feedback.collect import StoreUnreadable, collect

    if not (Path(args.store) / "feedback.sqlite3").is_file():
        raise UserError(f"{args.store} holds no feedback store (feedback.sqlite3)")
    # SIGTERM (a cancelled pipeline step) unwinds like Ctrl-C: the staging folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        summary = collect(
            args.store, args.output, taxonomy=Taxonomy.load(args.taxonomy),
            overwrite=args.overwrite, use_corrections=args.use_corrections,
        )  # fmt: skip
    except StoreUnreadable as exc:
        raise UserError(str(exc)) from None
    print(summary.text())
    print(
        f"-> {args.output}/manifest.csv; next: snapcat prepare --input {args.output}/manifest.csv"
    )
    return 0
