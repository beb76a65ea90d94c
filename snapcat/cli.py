"""The ``snapcat`` command line: one subcommand per job, each a thin layer over the library.

Heavy modules (TensorFlow, KFP, KServe) are imported inside the subcommand that needs them, so
``snapcat taxonomy`` or ``snapcat classify`` start instantly and the serving image, which has no
TensorFlow, can run its subcommands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from snapcat import imaging

Handler = Callable[[argparse.Namespace], int]
_REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = []


def subcommand(register: Callable[[argparse._SubParsersAction], None]):
    _REGISTRY.append(register)
    return register


# --------------------------------------------------------------------------------- taxonomy
@subcommand
def _taxonomy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("taxonomy", help="print the category taxonomy")
    p.add_argument("--taxonomy", help="taxonomy YAML file (default: the packaged one)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(handler=_run_taxonomy)


def _run_taxonomy(args: argparse.Namespace) -> int:
    from snapcat.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy)
    if args.json:
        print(json.dumps(taxonomy.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(taxonomy.table())
    return 0


# --------------------------------------------------------------------------------- prepare
@subcommand
def _prepare(sub: argparse._SubParsersAction) -> None:
    from snapcat.prepare import PrepareConfig

    d = PrepareConfig(input="", output="")
    p = sub.add_parser(
        "prepare",
        help="turn a folder/bucket of labelled photos into training data",
        description=(
            "Normalizes every photo, removes duplicates, splits by content hash and writes "
            "sharded TFRecords plus stats.json, summary.md, rejected.csv and duplicates.csv. "
            "Categories may be folders (slug, English name or Korean label; a label's '/' "
            "nested as folders or escaped as %%2F) or a CSV/JSONL manifest with path,category."
        ),
    )
    p.add_argument("--input", required=True, help="folder per category, or a manifest; path or URI")
    p.add_argument("--manifest", help="CSV/JSONL manifest; relative paths resolve against --input")
    p.add_argument("--output", required=True, help="output folder (path or URI)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="model input size in px")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    p.add_argument("--seed", type=int, default=d.seed, help="split seed")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--validation-fraction", type=float, default=d.validation_fraction,
                   help="fraction of the non-test photos used for validation")
    p.add_argument("--taxonomy", help="taxonomy YAML (default: the packaged one)")
    p.add_argument("--workers", type=int, default=d.workers, help="processes (0: one per core)")
    p.add_argument("--min-images-per-class", type=int, default=d.min_images_per_class)
    p.add_argument("--ignore-unknown", action="store_true",
                   help="reject files of unknown categories instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output atomically")
    p.add_argument("--max-bytes", type=int, default=d.max_bytes, help="per-file byte cap")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="per-image pixel cap")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from snapcat.prepare import PrepareConfig, run_prepare

    config = PrepareConfig(
        input=args.input, output=args.output, manifest=args.manifest,
        image_size=args.image_size, jpeg_quality=args.jpeg_quality, seed=args.seed,
        test_fraction=args.test_fraction, validation_fraction=args.validation_fraction,
        taxonomy=args.taxonomy, workers=args.workers,
        min_images_per_class=args.min_images_per_class, ignore_unknown=args.ignore_unknown,
        overwrite=args.overwrite, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
        progress=not args.no_progress,
    )
    stats = run_prepare(config)
    print(
        f"prepared {stats['accepted']} photos in {len(stats['classes'])} classes "
        f"(rejected {stats['rejected']}, duplicates {stats['duplicates']}) -> {args.output}"
    )
    print(f"see {args.output}/summary.md and {args.output}/rejected.csv")
    return 0


# --------------------------------------------------------------------------------- main
#: Errors a person can fix from the message alone: printed without a traceback.
def _user_errors() -> tuple[type[BaseException], ...]:
    from snapcat.prepare import PrepareError
    from snapcat.sources import SourceError
    from snapcat.taxonomy import TaxonomyError

    return (PrepareError, SourceError, TaxonomyError, imaging.ImageError, FileExistsError,
            FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapcat",
        description="Listing-photo category classifier: prepare, train, evaluate, serve.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTRY:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except _user_errors() as exc:
        print(f"snapcat {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
