"""``snapcat classify``: send photos to a running transformer and print the top categories."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.contract.service_name import DEFAULT_MODEL_NAME

    p = sub.add_parser(
        "classify",
        help="classify photos with a running server (snapcat serve local, or KServe)",
        description=(
            "Sends each photo to the transformer's KServe V1 predict endpoint and prints its "
            "top categories with Korean labels and scores, and whether the answer is confident "
            "(no: show the full category picker). Photos go as they are (JPEG, PNG, "
            "WebP, HEIC, ...); the server normalizes them. With --explain it also writes where "
            "in each photo the model looked (a Grad-CAM overlay PNG)."
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
    p.add_argument(
        "--explain",
        action="store_true",
        help=(
            "ask :explain instead of :predict (the same top categories) and write each photo's "
            "Grad-CAM overlay (where in the photo the top-1 category's evidence lies) as "
            "<photo name>.explain.png into --overlay-dir"
        ),
    )
    p.add_argument(
        "--overlay-dir",
        default=".",
        metavar="DIR",
        help="where --explain writes the overlays (default: the current directory)",
    )
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


def overlay_paths(photos: list[str], directory: str) -> list[Path]:
    """``<photo name>.explain.png`` in ``directory`` per photo; photos of the same name (from
    different folders) get their position in front, so none overwrites another."""
    names = [Path(p).name for p in photos]
    return [
        Path(directory, f"{i + 1}-{name}" if names.count(name) > 1 else name).with_suffix(
            Path(name).suffix + ".explain.png"
        )
        for i, name in enumerate(names)
    ]


def write_overlays(responses: list[dict], paths: list[Path]) -> list[Path]:
    """Writes each explained prediction's PNG overlay to its path; returns the paths written."""
    import base64

    predictions = [p for r in responses for p in r["predictions"]]
    for prediction, path in zip(predictions, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(prediction["explanation"]["overlay_png"]))
    return paths


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
                answers = list(
                    client.explain_raw_batches(args.photos)
                    if args.explain
                    else client.predict_raw_batches(args.photos)
                )
                if args.explain:
                    write_overlays(answers, overlay_paths(args.photos, args.overlay_dir))
                response = joined_answer(answers)
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
        written: list[Path] = []
        failed = 0
        paths = overlay_paths(args.photos, args.overlay_dir)
        for photo, overlay in zip(args.photos, paths, strict=True):
            try:
                if args.explain:
                    prediction = client.explain([photo])[0]
                    overlay.parent.mkdir(parents=True, exist_ok=True)
                    overlay.write_bytes(prediction.explanation.overlay_png)
                    written.append(overlay)
                else:
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
        for overlay in written:
            print(f"overlay: {overlay}")
    return 1 if failed else 0
