"""``snapcat audit``: rank likely mislabelled and ambiguous photos (confident learning)."""

from __future__ import annotations

import argparse
import json

from snapcat.commands import DefaultsHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.audit.run import AuditConfig

    d = AuditConfig(output="")
    p = sub.add_parser(
        "audit",
        formatter_class=DefaultsHelpFormatter,
        help="find likely mislabelled photos in a prepared dataset or in batch predictions",
        description=(
            "With --data: k-fold logistic regression on frozen EfficientNet-Lite0 features gives "
            "every photo of a prepared dataset out-of-sample probabilities; cleanlab's confident "
            "learning flags and ranks the photos whose label they contradict. With --predictions "
            "(snapcat predict's results.jsonl, lines with a category): the served model's "
            "scores are ranked the same way, so listings probably posted in the wrong category "
            "come first. Writes label_issues.csv (path, given_label, suggested_label, "
            "label_quality, issue: mislabel/ambiguous; worst first), gallery.html and "
            "audit.json to --output. Review the CSV and give it to snapcat prepare --relabel "
            "or --exclude."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a prepared dataset (snapcat prepare's output)")
    source.add_argument("--predictions", help="snapcat predict's results.jsonl")
    p.add_argument("--output", required=True, help="folder for the CSV, gallery and summary")
    p.add_argument("--folds", type=int, default=d.folds, help="cross-validation folds (--data)")
    p.add_argument("--seed", type=int, default=d.seed, help="fold assignment seed")
    p.add_argument(
        "--gallery-size", type=int, default=d.gallery_size, help="photos shown in gallery.html"
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from snapcat.audit.run import AuditConfig, run_audit
    from snapcat.commands import config_from_args

    summary = run_audit(config_from_args(AuditConfig, args, defaults=("weights",)))
    print(json.dumps(summary, ensure_ascii=False))
    print(f"see {args.output}/gallery.html and {args.output}/label_issues.csv")
    return 0
