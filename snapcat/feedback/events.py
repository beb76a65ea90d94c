"""Reading the CloudEvents KServe's payload logger sends: the photos of a request, the suggestions
of a response. Both events of one call carry the same id (the logger's ``Ce-Id``), which joins them.

Both wire forms the transformer answers are read: KServe V1 (``instances`` / ``predictions``) and
the Open Inference Protocol (``inputs`` / ``outputs``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cloudevents.exceptions import GenericException
from cloudevents.http import from_http

from snapcat.contract.prediction_signing import SIGNED_ID

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
INPUT_NAME = "image_bytes"
#: What the transformer puts in ``prediction_id``: a signed id (``<key id>.<32 hex>.<32 hex>``,
#: :mod:`snapcat.contract.prediction_signing`); its signature is checked by the sink.
PREDICTION_ID = SIGNED_ID


class EventError(ValueError):
    """The event cannot be used; the message says why (sent back with HTTP 400)."""


def _quote(value: Any, limit: int = 64) -> str:
    """``value`` for a message: at most ``limit`` characters of it (nothing is echoed at length)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LoggedEvent:
    id: str
    type: str
    body: Any


def parse_event(headers: Mapping[str, str], body: bytes) -> LoggedEvent:
    try:
        event = from_http(dict(headers), body, data_unmarshaller=lambda raw: raw)
    except GenericException as exc:
        raise EventError(f"not a CloudEvent: {exc}") from exc
    if event["type"] not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise EventError(
            f"unsupported event type {_quote(event['type'])}: expected {REQUEST_TYPE} or "
            f"{RESPONSE_TYPE}"
        )
    if not isinstance(event["id"], str) or not 1 <= len(event["id"]) <= 200:
        raise EventError("the event id must be a string of 1-200 characters")
    data = event.data
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EventError("the event data is not JSON text")
    try:
        # orjson: C, and a nesting depth limit (deep JSON was a RecursionError, a 500)
        data = orjson.loads(data or b"")
    except orjson.JSONDecodeError as exc:
        raise EventError(f"the event data is not JSON: {str(exc)[:100]}") from None
    return LoggedEvent(event["id"], event["type"], data)


def _b64(value: Any, where: str) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"}:
        value = value["b64"]
    if not isinstance(value, str):
        raise EventError(f"{where}: expected a base64 photo")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventError(f"{where}: bad base64 ({exc})") from exc


def request_photos(body: Any) -> list[bytes]:
    """The photos of a logged request, in instance order."""
    if isinstance(body, dict) and isinstance(body.get("instances"), list):
        photos = []
        for i, instance in enumerate(body["instances"]):
            value = instance.get(INPUT_NAME, instance) if isinstance(instance, dict) else instance
            photos.append(_b64(value, f"instance {i}"))
        return photos
    if isinstance(body, dict) and isinstance(body.get("inputs"), list):
        for tensor in body["inputs"]:
            if isinstance(tensor, dict) and tensor.get("name") == INPUT_NAME:
                data = tensor.get("data")
                if not isinstance(data, list):
                    raise EventError(f"input '{INPUT_NAME}': 'data' must be a list")
                flat = [d[0] if isinstance(d, list) and len(d) == 1 else d for d in data]
                return [_b64(d, f"input element {i}") for i, d in enumerate(flat)]
    raise EventError(f"the request has neither 'instances' nor a V2 input '{INPUT_NAME}'")


def response_predictions(body: Any) -> list[tuple[str, str, list[str]]]:
    """(prediction_id, model_version, suggested slugs best first) of a logged response."""
    if not isinstance(body, dict):
        raise EventError("the response is not a JSON object")
    version = str(body.get("model_version", ""))
    rows: list[tuple[Any, list[str]]] = []
    if isinstance(body.get("predictions"), list):
        for p in body["predictions"]:
            if not isinstance(p, dict) or not isinstance(p.get("categories"), list):
                raise EventError("each prediction needs 'prediction_id' and 'categories'")
            if not all(
                isinstance(c, dict) and isinstance(c.get("slug"), str) for c in p["categories"]
            ):
                raise EventError("each category must be an object with a string 'slug'")
            rows.append((p.get("prediction_id"), [c["slug"] for c in p["categories"]]))
    elif isinstance(body.get("outputs"), list):
        outputs = {o.get("name"): o for o in body["outputs"] if isinstance(o, dict)}
        if "prediction_id" not in outputs or "slug" not in outputs:
            raise EventError("the V2 response needs outputs 'prediction_id' and 'slug'")
        ids, slugs = outputs["prediction_id"].get("data"), outputs["slug"].get("data")
        shape = outputs["slug"].get("shape") or [0, 1]
        if not isinstance(ids, list) or not isinstance(slugs, list):
            raise EventError("the V2 outputs 'prediction_id' and 'slug' need 'data' lists")
        if not isinstance(shape, list) or not shape or not isinstance(shape[-1], int):
            raise EventError("the V2 output 'slug' needs a list of integers as 'shape'")
        if not all(isinstance(s, str) for s in slugs):
            raise EventError("the V2 output 'slug' must hold strings")
        k = max(1, shape[-1])
        rows = [(pid, slugs[i * k : (i + 1) * k]) for i, pid in enumerate(ids)]
    else:
        raise EventError("the response has neither 'predictions' nor 'outputs'")
    result = []
    for pid, top in rows:
        if not isinstance(pid, str) or not PREDICTION_ID.match(pid):
            raise EventError(f"bad prediction_id {_quote(pid)} in the response")
        result.append((pid, version, [str(s) for s in top]))
    return result


def response_confident(body: Any) -> set[str]:
    """The prediction_ids a logged response flagged ``confident`` (V1 ``predictions[].confident``
    or the V2 ``confident`` output); unreadable or absent flags count as not confident."""
    if not isinstance(body, dict):
        return set()
    if isinstance(body.get("predictions"), list):
        return {
            p["prediction_id"]
            for p in body["predictions"]
            if isinstance(p, dict)
            and p.get("confident") is True
            and isinstance(p.get("prediction_id"), str)
        }
    outputs = {o.get("name"): o for o in body.get("outputs") or [] if isinstance(o, dict)}
    if "prediction_id" in outputs and "confident" in outputs:
        ids, flags = outputs["prediction_id"].get("data") or [], outputs["confident"].get("data")
        return {
            i for i, f in zip(ids, flags or [], strict=False) if f is True and isinstance(i, str)
        }
    return set()
