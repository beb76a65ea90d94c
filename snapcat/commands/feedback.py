"""``snapcat feedback``: the sink that keeps sellers' final categories, and collecting them into a
manifest ``snapcat prepare`` ingests."""

from __future__ import annotations

import argparse


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
    s.add_argument("--store", required=True, help="folder for the database and photos")
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--taxonomy", help="taxonomy YAML (default: the packaged one)")
    s.set_defaults(handler=_run_serve)

    c = actions.add_parser(
        "collect", help="write the sellers' categories as a path,category manifest with photos"
    )
    c.add_argument("--store", required=True, help="the sink's --store folder")
    c.add_argument("--output", required=True, help="folder to write (manifest.csv, photos/)")
    c.add_argument("--taxonomy", help="taxonomy YAML (default: the packaged one)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    c.set_defaults(handler=_run_collect)


def _run_serve(args: argparse.Namespace) -> int:
    from snapcat.feedback.sink import serve

    serve(args.store, args.host, args.port, args.taxonomy)
    return 0


def _run_collect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from snapcat.contract.taxonomy import Taxonomy
    from snapcat.errors import UserError
    from snapcat.feedback.collect import collect

    if not (Path(args.store) / "feedback.sqlite3").is_file():
        raise UserError(f"{args.store} holds no feedback store (feedback.sqlite3)")
    summary = collect(
        args.store, args.output, taxonomy=Taxonomy.load(args.taxonomy), overwrite=args.overwrite
    )
    print(summary.text())
    print(
        f"-> {args.output}/manifest.csv; next: snapcat prepare --input {args.output}/manifest.csv"
    )
    return 0
