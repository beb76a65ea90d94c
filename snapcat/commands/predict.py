"""``snapcat predict``: batch prediction, the exported model over a folder, manifest or bucket."""

from __future__ import annotations

import argparse
import json

from snapcat.commands import DefaultsHelpFormatter, add_allow_root_argument


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.batch.predict import PredictConfig

    d = PredictConfig(model="", input="", output="")
    p = sub.add_parser(
        "predict",
        formatter_class=DefaultsHelpFormatter,
        help="batch prediction: run the exported model over many photos into a JSONL file",
        description=(
            "Runs the exported SavedModel over every photo of a folder, bucket prefix or "
            "manifest CSV (path[,id][,category]) in bounded memory, normalized exactly as the "
            "serving transformer does, and appends one JSON line per photo to --output: id, "
            "top categories with scores, confident, model_version, every class's score, and "
            "with a given category whether the model disagrees. A photo that cannot be read "
            "gets a line with 'error'. Rerun with the same --output to resume: ids already "
            "there are skipped."
        ),
    )
    p.add_argument("--model", required=True, help="model folder (or one version folder), or URI")
    p.add_argument(
        "--input", required=True, help="folder or bucket prefix of photos, or a manifest .csv"
    )
    p.add_argument("--output", required=True, help="results .jsonl (appended to; resumable)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="photos per model call")
    p.add_argument("--top-k", type=int, default=d.top_k, help="categories per photo")
    p.add_argument(
        "--workers", type=int, default=d.workers, help="threads reading and normalizing photos"
    )
    add_allow_root_argument(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from snapcat.batch.predict import PredictConfig, run_predict
    from snapcat.commands import config_from_args

    summary = run_predict(config_from_args(PredictConfig, args, progress=not args.no_progress))
    print(json.dumps(summary, ensure_ascii=False))
    return 0
