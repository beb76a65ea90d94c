"""``snapcat prepare``: turn labelled photos into sharded, split training data."""

from __future__ import annotations

import argparse

from snapcat.commands import DefaultsHelpFormatter, add_allow_root_argument


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.dataset.prepare import PrepareConfig

    d = PrepareConfig(input="", output="")
    p = sub.add_parser(
        "prepare",
        formatter_class=DefaultsHelpFormatter,
        help="turn a folder/bucket of labelled photos into training data",
        description=(
            "Normalizes every photo, removes duplicates, splits by content hash and writes "
            "sharded TFRecords plus stats.json, summary.md, rejected.csv and duplicates.csv. "
            "Categories may be folders (slug, English name or Korean label; a label's '/' "
            "nested as folders or escaped as %2F) or a CSV/JSONL manifest with path,category "
            "and an optional split column (train/validation/test; empty or unassigned: the "
            "hash decides). Every category gets at least --min-test-per-class test and "
            "--min-validation-per-class validation photos."
        ),
    )
    p.add_argument("--input", required=True, help="folder per category, or a manifest; path or URI")
    p.add_argument("--manifest", help="CSV/JSONL manifest; relative paths resolve against --input")
    add_allow_root_argument(p)
    p.add_argument("--output", required=True, help="output folder (path or URI)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="model input size in px")
    p.add_argument(
        "--jpeg-quality", type=int, default=d.jpeg_quality, help="quality of the stored JPEGs"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="split seed")
    p.add_argument(
        "--test-fraction", type=float, default=d.test_fraction, help="fraction of photos for test"
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=d.validation_fraction,
        help="fraction of the non-test photos used for validation",
    )
    p.add_argument(
        "--min-test-per-class",
        type=int,
        default=d.min_test_per_class,
        help="every category gets at least this many test photos (moved from train)",
    )
    p.add_argument(
        "--min-validation-per-class",
        type=int,
        default=d.min_validation_per_class,
        help="every category gets at least this many validation photos (moved from train)",
    )
    p.add_argument("--taxonomy", help="taxonomy YAML (default: the packaged one)")
    p.add_argument("--workers", type=int, default=d.workers, help="processes (0: one per core)")
    p.add_argument(
        "--min-images-per-class",
        type=int,
        default=d.min_images_per_class,
        help="photos a category needs at least",
    )
    p.add_argument(
        "--ignore-unknown",
        action="store_true",
        help="reject files of unknown categories instead of failing",
    )
    p.add_argument(
        "--relabel",
        metavar="CSV",
        help="reviewed label audit: photos (path) to give the category in suggested_label",
    )
    p.add_argument(
        "--exclude", metavar="CSV", help="reviewed label audit: photos (path) to leave out"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output atomically")
    p.add_argument("--max-bytes", type=int, default=d.max_bytes, help="per-file byte cap")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="per-image pixel cap")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from snapcat.commands import config_from_args
    from snapcat.dataset.prepare import PrepareConfig, run_prepare

    config = config_from_args(PrepareConfig, args, progress=not args.no_progress)
    stats = run_prepare(config)
    print(
        f"prepared {stats['accepted']} photos in {len(stats['classes'])} classes "
        f"(rejected {stats['rejected']}, duplicates {stats['duplicates']}) -> {args.output}"
    )
    if stats.get("rejected_by_reason"):
        reasons = sorted(stats["rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
        print("rejected by reason: " + ", ".join(f"{n} {reason}" for reason, n in reasons))
    print(f"see {args.output}/summary.md and {args.output}/rejected.csv (every row and why)")
    return 0
