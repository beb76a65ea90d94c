"""``snapcat taxonomy``: print the category taxonomy."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("taxonomy", help="print the category taxonomy")
    p.add_argument("--taxonomy", help="taxonomy YAML file (default: the packaged one)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(handler=_run_taxonomy)


def _run_taxonomy(args: argparse.Namespace) -> int:
    from snapcat.contract.taxonomy import Taxonomy

    taxonomy = Taxonomy.load(args.taxonomy)
    if args.json:
        print(json.dumps(taxonomy.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(taxonomy.table())
    return 0
