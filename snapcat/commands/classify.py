"""``snapcat classify``: send photos to a running transformer and print the top categories."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.contract.service_name import DEFAULT_MODEL_NAME

    p = sub.add_parser(
        "classify",
        help="classify photos with a running server (snapcat serve local, or KServe)",
        description=(
            "Sends each photo to the transformer's KServe V1 predict endpoint and prints its "
            "top categories with Korean labels and scores, and whether the answer is confident "
            "(no: show the full category picker). Photos go as they are (JPEG, PNG, "
            "WebP, HEIC, ...); the server normalizes them."
        ),
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photo files")
    p.add_argument(
        "--url",
        required=True,
        help="the transformer, e.g. http://127.0.0.1:8080 (or the InferenceService URL)",
    )
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="the InferenceService name")
    p.add_argument(
        "--json",
        action="store_true",
        help=(
            "print the server's raw JSON answer: photos go in requests of at most --batch-size, "
            "as the Python client sends them, and the answers are joined into one object"
        ),
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="photos per request with --json (the server takes at most --max_batch, 32 by default)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.set_defaults(handler=run)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def format_table(rows: list[tuple[str, ...]]) -> str:
    header = ("PHOTO", "#", "CATEGORY", "SLUG", "SCORE", "CONFIDENT")
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    score = header.index("SCORE")
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(widths[i]) if i == score else _pad(cell, widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def joined_answer(responses) -> dict:
    """One V1 answer for answers to consecutive requests: their predictions in order, and the
    model version once, or on each prediction when a canary answered some requests and the
    stable model the rest."""
    responses = list(responses)
    versions = {r.get("model_version") for r in responses}
    if len(versions) == 1:
        return {**responses[0], "predictions": [p for r in responses for p in r["predictions"]]}
    return {
        "predictions": [
            {**p, "model_version": r.get("model_version")}
            for r in responses
            for p in r["predictions"]
        ]
    }


def run(args: argparse.Namespace) -> int:
    from snapcat.errors import UserError
    from snapcat.serve.client import SnapcatClient, SnapcatConnectionError, SnapcatServerError

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    with SnapcatClient(
        args.url, args.model_name, timeout=args.timeout, max_batch=args.batch_size
    ) as client:
        if args.json:
            try:
                response = joined_answer(client.predict_raw_batches(args.photos))
            except SnapcatServerError as exc:
                print(
                    json.dumps(
                        {"error": exc.message, "status": exc.status_code}, ensure_ascii=False
                    ),
                    file=sys.stderr,
                )
                return 1
            except (SnapcatConnectionError, OSError) as exc:
                raise UserError(str(exc)) from exc
            print(json.dumps(response, ensure_ascii=False, indent=2))
            return 0

        rows: list[tuple[str, ...]] = []
        failed = 0
        for photo in args.photos:
            try:
                prediction = client.classify_one(photo)
            except SnapcatConnectionError as exc:
                raise UserError(str(exc)) from exc
            except (SnapcatServerError, OSError) as exc:
                print(f"snapcat classify: {photo}: {exc}", file=sys.stderr)
                failed += 1
                continue
            for rank, category in enumerate(prediction.categories, 1):
                rows.append(
                    (
                        photo if rank == 1 else "",
                        str(rank),
                        category.label,
                        category.slug,
                        f"{category.score:.3f}",
                        ("yes" if prediction.confident else "no") if rank == 1 else "",
                    )
                )
        if rows:
            print(format_table(rows))
    return 1 if failed else 0
