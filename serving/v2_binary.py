"""The Open Inference Protocol's binary tensor data extension (KServe V2 / Triton), read strictly.

A request is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the binary
data of the inputs whose ``parameters`` carry ``binary_data_size``, in the order of the inputs; a
``BYTES`` tensor's binary data is its elements, each a 4-byte little-endian length and the bytes.
(Triton's ``protocol/extension_binary_data.md``; KServe ``InferRequest.from_bytes``.)

KServe's own reader cannot take a photo this way: it turns every ``BYTES`` element into UTF-8
text and answered a correct binary request with 500 ``Failed to encode "<the photo's bytes>"``,
echoing the upload in the response and the log; a non-numeric header, a negative size or a shape
that does not fit were 500 too. Here every inconsistency is a 400 whose message names the field,
never a value from the body.
"""

from __future__ import annotations

import math
import struct

import orjson
from kserve import InferInput, InferRequest

from snapcat.serve.errors import BadRequestError

HEADER = "inference-header-content-length"


def _bad(message: str) -> BadRequestError:
    return BadRequestError(f"invalid V2 binary request: {message}", reason="invalid-v2-binary")


def _nonnegative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"{what} must be a non-negative integer")
    return value


def _bytes_elements(raw: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad(f"input '{name}': an element's 4-byte length is cut short")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _bad(f"input '{name}': an element runs past the input's binary_data_size")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def parse(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """The :class:`InferRequest` of a binary V2 request; :class:`BadRequestError` (400) for
    anything malformed."""
    text = (header_length or "").strip()
    if not text.isdigit():
        raise _bad(f"the {HEADER} header must be a non-negative integer")
    json_length = int(text)
    if json_length > len(body):
        raise _bad(f"the {HEADER} header is larger than the body")
    try:
        document = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError:
        raise _bad("the JSON header is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise _bad("the JSON header must be an object with a list of 'inputs'")
    offset, inputs = json_length, []
    for position, item in enumerate(document["inputs"]):
        if not isinstance(item, dict):
            raise _bad(f"inputs[{position}] must be an object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise _bad(f"inputs[{position}] needs a string 'name' and 'datatype'")
        if not isinstance(shape, list) or not shape:
            raise _bad(f"input '{name[:64]}': 'shape' must be a non-empty list")
        for dimension in shape:
            _nonnegative_int(dimension, f"input '{name[:64]}': each shape dimension")
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise _bad(f"input '{name[:64]}': 'parameters' must be an object")
        if "binary_data_size" in parameters:
            if "data" in item:
                raise _bad(f"input '{name[:64]}' has both 'data' and binary_data_size")
            size = _nonnegative_int(
                parameters["binary_data_size"], f"input '{name[:64]}': binary_data_size"
            )
            if offset + size > len(body):
                raise _bad(f"input '{name[:64]}': binary_data_size runs past the body")
            raw, offset = body[offset : offset + size], offset + size
            if datatype.upper() != "BYTES":
                raise _bad(f"input '{name[:64]}': only BYTES inputs are taken as binary data")
            data = _bytes_elements(raw, name[:64])
        elif "data" in item:
            data = item["data"]
            if not isinstance(data, list):
                raise _bad(f"input '{name[:64]}': 'data' must be a list")
        else:
            raise _bad(f"input '{name[:64]}' has neither 'data' nor binary_data_size")
        if "binary_data_size" in parameters and math.prod(shape) != len(data):
            raise _bad(f"input '{name[:64]}': shape {shape} does not hold its {len(data)} elements")
        rest = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        inputs.append(InferInput(name, shape, datatype, data, rest or None))
    if offset != len(body):
        raise _bad("the body is longer than the JSON header and the inputs' binary_data_size")
    request_id = document.get("id")
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=request_id if isinstance(request_id, str) else None,
    )
