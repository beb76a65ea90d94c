"""The ``snapcat`` command line: one subcommand per job, each a thin layer over the library.

Heavy modules (TensorFlow, KFP, KServe) are imported inside the subcommand that needs them, so
``snapcat taxonomy`` or ``snapcat classify`` start instantly and the serving image, which has no
TensorFlow, can run its subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from snapcat.errors import SnapcatError


def _command_modules():
    """Every module in :mod:`snapcat.commands` is a subcommand with a ``register(sub)``: adding a
    command is adding a file, and each module imports its heavy dependencies lazily."""
    import snapcat.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{package.__name__}.{info.name}")


# --------------------------------------------------------------------------------- main


#: Libraries that log every request (httpx) or TensorFlow's export chatter (absl) at INFO: shown
#: with -v only.
QUIET_LIBRARIES = ("httpx", "httpcore", "absl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapcat",
        description="Listing-photo category classifier: prepare, train, evaluate, serve.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up chatter (oneDNN, CPU features) buries the progress people need.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    if passthrough:
        args.serving_args = [*passthrough, *args.serving_args]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # one INFO line per HTTP request is -v detail, not progress
        for chatty in QUIET_LIBRARIES:
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return args.handler(args)
    # SnapcatError: every library error whose message explains it; the two file errors carry
    # the path in their message.
    except (SnapcatError, FileExistsError, FileNotFoundError) as exc:
        print(f"snapcat {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
