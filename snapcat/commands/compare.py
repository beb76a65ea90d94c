"""``snapcat compare``: several evaluations side by side (backbone x mode comparisons)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="print a table of several evaluation runs",
        description="The table the pipeline's compare step shows: top-1, top-3, macro F1, "
        "parameters and ms per image of each evaluation, best first. Runs must have been "
        "measured on the same test set (the photos' content fingerprint in metrics.json).",
    )
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR", help="folders with metrics.json")
    p.add_argument(
        "--sort",
        choices=("top1", "top3", "macro_f1"),
        default="top1",
        help="top1 (default) ranks as the pipeline picks its best candidate",
    )
    p.add_argument("--markdown", action="store_true", help="a Markdown table")
    p.add_argument(
        "--allow-different-test-sets",
        action="store_true",
        help="list runs measured on different test sets (by content fingerprint) with a warning "
        "instead of refusing to rank them",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from snapcat.errors import UserError
    from snapcat.evaluate.comparison import (
        check_same_test_set,
        markdown_table,
        text_table,
    )

    runs = []
    for folder in args.eval_dirs:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise UserError(f"{folder} has no metrics.json (run snapcat evaluate first)")
        runs.append((Path(folder).name or folder, json.loads(path.read_text("utf-8"))))
    warnings = check_same_test_set(runs, args.allow_different_test_sets)
    for warning in warnings:
        print(warning, file=sys.stderr)
    print((markdown_table if args.markdown else text_table)(runs, args.sort))
    return 0
