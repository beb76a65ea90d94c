"""``snapcat compare``: several evaluations side by side (backbone x mode comparisons)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="print a table of several evaluation runs")
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR", help="folders with metrics.json")
    p.add_argument("--sort", choices=("top1", "top3", "macro_f1"), default="top3")
    p.set_defaults(handler=run)


def comparison_table(rows: list[tuple[str, dict]], sort: str) -> str:
    header = ("run", "backbone", "mode", "size", "n", "top1", "top3", "macro_f1", "gate")
    lines = [header]
    for name, m in sorted(rows, key=lambda r: -r[1].get(sort, 0.0)):
        model = m.get("model", {})
        lines.append(
            (
                name,
                str(model.get("backbone", "?")),
                str(model.get("mode") or "?"),
                str(model.get("image_size", "?")),
                str(m["n"]),
                f"{m['top1']:.4f}",
                f"{m['top3']:.4f}",
                f"{m.get('macro_f1', 0.0):.4f}",
                "blessed" if m.get("blessed") else "refused",
            )
        )
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from snapcat.cli import UserError

    rows = []
    for folder in args.eval_dirs:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise UserError(f"{folder} has no metrics.json (run snapcat evaluate first)")
        rows.append((Path(folder).name or folder, json.loads(path.read_text("utf-8"))))
    print(comparison_table(rows, args.sort))
    return 0
