"""``snapcat request``: write the JSON body of a predict request for photos, to send with any HTTP
client (``curl --data-binary @request.json``): a phone photo's base64 is too long for a shell
argument, so the body goes in a file."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from snapcat.contract.service_name import DEFAULT_MODEL_NAME

    p = sub.add_parser(
        "request",
        help="write a predict request's JSON body for photos (to send with curl)",
        description=(
            "Writes the body the transformer takes for PHOTO... (their bytes, base64-encoded): "
            "KServe V1 for POST /v1/models/NAME:predict, or with --protocol v2 the Open "
            "Inference Protocol for POST /v2/models/NAME/infer. Example: snapcat request "
            "photo.jpg -o request.json; curl -H 'content-type: application/json' "
            f"--data-binary @request.json http://HOST/v1/models/{DEFAULT_MODEL_NAME}:predict"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photo files, sent as they are")
    p.add_argument("--protocol", choices=("v1", "v2"), default="v1", help="request protocol")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.set_defaults(handler=run)


def request_body(photos: list[bytes], protocol: str = "v1") -> dict:
    encoded = [base64.b64encode(photo).decode("ascii") for photo in photos]
    if protocol == "v2":
        return {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [len(encoded)],
                    "data": encoded,
                }
            ]
        }
    return {"instances": [{"image_bytes": {"b64": text}} for text in encoded]}


def run(args: argparse.Namespace) -> int:
    from snapcat.errors import UserError

    try:
        photos = [Path(photo).read_bytes() for photo in args.photos]
    except OSError as exc:
        raise UserError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    text = json.dumps(request_body(photos, args.protocol))
    if args.output:
        Path(args.output).write_text(text, "ascii")
    else:
        sys.stdout.write(text + "\n")
    return 0
