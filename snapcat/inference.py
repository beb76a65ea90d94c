"""The serving transformer's logic, importable without KServe and without TensorFlow.

``serving/model.py`` (the KServe ``Model`` subclass) is a thin shell around :class:`InferenceCore`:

1. :meth:`InferenceCore.parse_v1` / :meth:`InferenceCore.parse_v2` turn a KServe V1 body
   (``{"instances": [{"image_bytes": {"b64": ...}}]}``) or the Open Inference Protocol (V2) inputs
   (a ``BYTES`` input named ``image_bytes``) into photo bytes, enforcing the per-request caps.
2. :meth:`InferenceCore.normalize` runs the shared normalization (:func:`snapcat.imaging.
   normalize_image`) per instance: the exact canonical JPEG bytes the model was trained on.
3. :meth:`InferenceCore.predictor_body` builds TF Serving's REST predict request with those bytes
   as ``{"b64": ...}``: a few tens of KB per image instead of a megabyte of JSON floats.
4. :meth:`InferenceCore.read_predictions` checks the predictor's answer against the model's
   classes and :meth:`InferenceCore.v1_response` / :meth:`InferenceCore.v2_outputs` shape the
   top-k categories with the labels saved beside the model (never from code).

Every refusal is a :class:`ServingError` carrying its HTTP status; errors about one instance name
its index and the stable ``reason`` code of the image error, e.g. ``instance 2: corrupt: the JPEG
file is truncated or damaged``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from snapcat.calibration import is_confident
from snapcat.export import (
    CLASSES_OUTPUT,
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    VERSION_OUTPUT,
)
from snapcat.imaging import ImageError, ImageSpec, ImageTooLargeError, normalize_image
from snapcat.model_info import ModelInfo

logger = logging.getLogger(__name__)

#: The InferenceService name the manifests, the CLI and the client default to.
DEFAULT_MODEL_NAME = "listing-category"
DEFAULT_TOP_K = 3
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_IMAGE_BYTES = ImageSpec.max_bytes
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_PREDICTOR_TIMEOUT = 10.0
#: How many instance errors one message lists (the ``errors`` list carries all of them).
_MAX_LISTED_ERRORS = 5


# ----------------------------------------------------------------------------------- errors
class ServingError(Exception):
    """A request the transformer refuses or cannot serve; ``status`` is the HTTP status."""

    status = 500
    reason = "internal"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        errors: Sequence[InstanceError] = (),
    ):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        self.errors = list(errors)

    def to_dict(self) -> dict[str, Any]:
        """The response body: KServe's and TF Serving's ``{"error": ...}`` plus, for per-instance
        problems, ``errors`` with one ``{"instance", "reason", "message"}`` entry each."""
        body: dict[str, Any] = {"error": self.message}
        if self.errors:
            body["errors"] = [e.to_dict() for e in self.errors]
        return body


class BadRequestError(ServingError):
    """HTTP 400: malformed request, bad base64, unusable image, too many instances."""

    status = 400
    reason = "bad-request"


class PayloadTooLargeError(BadRequestError):
    """HTTP 413: an image over ``--max_image_bytes`` or a body over ``--max_request_bytes``."""

    status = 413
    reason = "too-large"


class PredictorUnavailableError(ServingError):
    """HTTP 503: the predictor refused the connection, timed out or does not serve the model."""

    status = 503
    reason = "predictor-unavailable"


class PredictorResponseError(ServingError):
    """HTTP 502 (or 500): the predictor answered with an error or with something unusable."""

    status = 502
    reason = "predictor-error"


@dataclass(frozen=True)
class InstanceError:
    index: int
    reason: str
    message: str
    status: int = 400

    def __str__(self) -> str:
        return f"instance {self.index}: {self.reason}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.index, "reason": self.reason, "message": self.message}


def instance_errors(errors: Sequence[InstanceError]) -> BadRequestError:
    """One exception for all the bad instances of a request: 413 when every one of them is over
    a size cap, 400 otherwise."""
    listed = "; ".join(str(e) for e in errors[:_MAX_LISTED_ERRORS])
    if len(errors) > _MAX_LISTED_ERRORS:
        listed += f"; and {len(errors) - _MAX_LISTED_ERRORS} more"
    if all(e.status == 413 for e in errors):
        return PayloadTooLargeError(listed, reason=errors[0].reason, errors=errors)
    return BadRequestError(listed, reason=errors[0].reason, errors=errors)


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TransformerConfig:
    """The transformer's own knobs (``python -m serving --help`` lists them as flags)."""

    top_k: int = DEFAULT_TOP_K
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    predictor_timeout: float = DEFAULT_PREDICTOR_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("top_k", "max_image_bytes", "max_request_bytes", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.predictor_timeout > 0:
            raise ValueError("predictor_timeout must be positive")


class V2Input(Protocol):
    """What :meth:`InferenceCore.parse_v2` reads of one V2 input (``kserve.InferInput`` fits)."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


@dataclass(frozen=True)
class PlainV2Input:
    name: str
    datatype: str
    shape: Sequence[int]
    data: Any = field(default=None)


# ----------------------------------------------------------------------------------- base64
def human_bytes(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def decode_base64(text: Any) -> bytes:
    """Standard base64 as TF Serving's ``{"b64": ...}`` carries it; also tolerated: line breaks
    (MIME encoders), missing padding, the URL-safe alphabet and a ``data:...;base64,`` prefix."""
    if not isinstance(text, str):
        raise ValueError(f"expected a base64 string, got {_json_type(text)}")
    if text.startswith("data:"):
        head, sep, rest = text.partition(",")
        if sep and head.endswith(";base64"):
            text = rest
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
        bytes: "bytes",
    }.get(type(value), type(value).__name__)


@dataclass
class PredictorAnswer:
    """The predictor's scores, per row the classes they are for, and the version that served."""

    probabilities: list[list[float]]
    classes: list[tuple[str, ...]]
    version: str


# ----------------------------------------------------------------------------------- core
class InferenceCore:
    """Everything between a client's request and TF Serving, for one model's ``ModelInfo``."""

    def __init__(self, info: ModelInfo, config: TransformerConfig | None = None):
        self.info = info
        self.config = config or TransformerConfig()
        self.spec = replace(info.spec, max_bytes=self.config.max_image_bytes)
        self.top_k = min(self.config.top_k, len(info.classes))
        self.num_classes = len(info.classes)

    @property
    def model_version(self) -> str:
        return str(self.info.version)

    # ---------------------------------------------------------------- requests
    def parse_v1(self, body: Any) -> list[bytes | InstanceError]:
        """A KServe V1 body (already decoded JSON, or raw bytes) to each instance's photo bytes
        or the reason it has none. Raises :class:`BadRequestError` for the request as a whole."""
        if isinstance(body, bytes | bytearray | str):
            try:
                body = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadRequestError(f"invalid JSON: {exc}", reason="invalid-json") from None
        example = '{"instances": [{"image_bytes": {"b64": "<base64 photo>"}}]}'
        if not isinstance(body, dict):
            raise BadRequestError(
                f"the request must be a JSON object like {example}, got {_json_type(body)}",
                reason="missing-field",
            )
        if "instances" not in body:
            raise BadRequestError(
                f"missing field 'instances': expected {example}", reason="missing-field"
            )
        instances = body["instances"]
        if not isinstance(instances, list):
            raise BadRequestError(
                f"'instances' must be a list, got {_json_type(instances)}", reason="bad-field"
            )
        self._check_count(len(instances))
        return [self._v1_instance(index, instance) for index, instance in enumerate(instances)]

    def _v1_instance(self, index: int, instance: Any) -> bytes | InstanceError:
        expected = f'expected {{"{INPUT_NAME}": {{"b64": "<base64 photo>"}}}}'
        if isinstance(instance, dict) and INPUT_NAME in instance:
            value = instance[INPUT_NAME]
        elif isinstance(instance, dict) and set(instance) == {"b64"}:
            value = instance  # TF Serving's plain-list form for a single-input signature
        else:
            got = (
                f"an object with fields {sorted(instance)}"
                if isinstance(instance, dict)
                else _json_type(instance)
            )
            return InstanceError(index, "missing-field", f"{expected}, got {got}")
        if not isinstance(value, dict) or "b64" not in value:
            return InstanceError(
                index, "bad-field", f'{INPUT_NAME} must be {{"b64": "<base64 photo>"}}'
            )
        return self._decode(index, value["b64"])

    def parse_v2(self, inputs: Iterable[V2Input]) -> list[bytes | InstanceError]:
        """Open Inference Protocol inputs: a ``BYTES`` input named ``image_bytes`` whose elements
        are base64 strings (JSON) or raw bytes (gRPC). Returns like :meth:`parse_v1`."""
        inputs = list(inputs)
        found = [i for i in inputs if i.name == INPUT_NAME]
        if not found:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise BadRequestError(
                f"no input named '{INPUT_NAME}' (got {names}): send "
                f'{{"inputs": [{{"name": "{INPUT_NAME}", "datatype": "BYTES", "shape": [N], '
                '"data": ["<base64 photo>", ...]}]}',
                reason="missing-field",
            )
        tensor = found[0]
        if str(tensor.datatype).upper() != "BYTES":
            raise BadRequestError(
                f"input '{INPUT_NAME}' must have datatype BYTES, got {tensor.datatype}",
                reason="bad-field",
            )
        data = tensor.data
        if data is None:
            raise BadRequestError(f"input '{INPUT_NAME}' has no data", reason="missing-field")
        data = list(data)
        # Shape [N, 1] arrives nested one level deeper.
        if data and all(isinstance(d, list) and len(d) == 1 for d in data):
            data = [d[0] for d in data]
        self._check_count(len(data))
        return [self._v2_element(index, element) for index, element in enumerate(data)]

    def _v2_element(self, index: int, element: Any) -> bytes | InstanceError:
        if isinstance(element, bytes | bytearray):
            return self._check_size(index, len(element)) or bytes(element)
        if isinstance(element, dict) and "b64" in element:
            return self._decode(index, element["b64"])
        if isinstance(element, str):
            return self._decode(index, element)
        return InstanceError(
            index, "bad-field", f"expected a base64 string, got {_json_type(element)}"
        )

    def _check_count(self, count: int) -> None:
        if count == 0:
            raise BadRequestError("the request holds no images", reason="empty-request")
        if count > self.config.max_batch:
            raise BadRequestError(
                f"{count} images in one request, over the limit of {self.config.max_batch}; "
                "split the batch",
                reason="too-many-instances",
            )

    def _check_size(self, index: int, size: int) -> InstanceError | None:
        if size > self.config.max_image_bytes:
            return InstanceError(
                index,
                ImageTooLargeError.reason,
                f"the file is {human_bytes(size)}, over the "
                f"{human_bytes(self.config.max_image_bytes)} limit",
                413,
            )
        return None

    def _decode(self, index: int, text: Any) -> bytes | InstanceError:
        if isinstance(text, str):
            # Refuse what is certainly too big before decoding it.
            too_large = self._check_size(index, (len(text) * 3) // 4 - 2)
            if too_large:
                return too_large
        try:
            data = decode_base64(text)
        except ValueError as exc:
            return InstanceError(index, "bad-base64", str(exc))
        return self._check_size(index, len(data)) or data

    # ---------------------------------------------------------------- normalization
    def normalize(self, index: int, photo: bytes) -> bytes | InstanceError:
        """The canonical model input for one photo, or the reason it cannot be used."""
        try:
            return normalize_image(photo, self.spec)
        except ImageTooLargeError as exc:
            return InstanceError(index, exc.reason, str(exc), 413)
        except ImageError as exc:
            return InstanceError(index, exc.reason, str(exc))
        except Exception as exc:  # a decoder failing in a way imaging does not know yet
            logger.exception("instance %d: unexpected error while decoding", index)
            return InstanceError(
                index,
                "invalid-image",
                f"the image could not be decoded ({type(exc).__name__}: {exc})",
            )

    def normalize_all(
        self,
        items: Sequence[bytes | InstanceError],
        map_fn: Callable[..., Iterable[bytes | InstanceError]] = map,
    ) -> list[bytes]:
        """Normalizes every parsed photo (``map_fn`` may be an executor's ``map``); raises one
        :class:`BadRequestError` naming every bad instance, whether it failed parsing or
        normalization."""
        todo = [(i, item) for i, item in enumerate(items) if not isinstance(item, InstanceError)]
        results: list[bytes | InstanceError] = list(items)
        done = map_fn(self.normalize, [i for i, _ in todo], [item for _, item in todo])
        for (i, _), result in zip(todo, done, strict=True):
            results[i] = result
        return self.collect(results)

    @staticmethod
    def collect(results: Sequence[bytes | InstanceError]) -> list[bytes]:
        errors = [r for r in results if isinstance(r, InstanceError)]
        if errors:
            raise instance_errors(errors)
        return list(results)  # type: ignore[arg-type]

    def self_test(self) -> None:
        """Normalizes a generated JPEG once: loads Pillow's and pillow-heif's plugins before the
        first request and fails at start-up, not per request, if the image stack is broken."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="JPEG")
        result = self.normalize(0, buffer.getvalue())
        if isinstance(result, InstanceError):
            raise RuntimeError(f"image normalization self-test failed: {result}")

    # ---------------------------------------------------------------- predictor
    @staticmethod
    def predictor_body(canonical: Sequence[bytes]) -> bytes:
        """TF Serving's REST predict request (row format) with the canonical bytes as b64."""
        instances = [
            {INPUT_NAME: {"b64": base64.b64encode(image).decode("ascii")}} for image in canonical
        ]
        body = {"signature_name": SIGNATURE_NAME, "instances": instances}
        return json.dumps(body, separators=(",", ":")).encode("ascii")

    def read_predictions(self, response: Any, count: int) -> PredictorAnswer:
        """TF Serving's predict answer to rows of probabilities with the classes they are for.

        A snapcat model's signature also returns, per row, its ``classes`` (slugs) and
        ``model_version``, so the answer labels itself: whichever model version served it
        (KServe splits transformer and predictor traffic independently during a canary), the
        scores are labelled by that model's own class order. A model without those outputs (bare
        rows, ``{"predictions": [[p0, ..., pC-1], ...]}``) is read with this transformer's classes,
        and must then have as many columns.
        """
        if not isinstance(response, dict) or "predictions" not in response:
            detail = response.get("error") if isinstance(response, dict) else None
            raise PredictorResponseError(
                "the predictor's answer has no 'predictions'" + (f": {detail}" if detail else ""),
                status=502,
            )
        rows = response["predictions"]
        if not isinstance(rows, list) or len(rows) != count:
            got = len(rows) if isinstance(rows, list) else _json_type(rows)
            raise PredictorResponseError(
                f"the predictor returned {got} predictions for {count} images", status=500
            )
        answer = PredictorAnswer(probabilities=[], classes=[], version=self.model_version)
        for row in rows:
            classes: Any = self.info.classes
            if isinstance(row, dict):  # a signature with several outputs: one object per row
                classes = row.get(CLASSES_OUTPUT, classes)
                if row.get(VERSION_OUTPUT) is not None:
                    answer.version = str(row[VERSION_OUTPUT])
                row = row.get(OUTPUT_NAME)
            if not isinstance(row, list) or not all(
                isinstance(p, int | float) and math.isfinite(p) for p in row
            ):
                raise PredictorResponseError(
                    f"the predictor's '{OUTPUT_NAME}' rows are not lists of numbers", status=500
                )
            if not isinstance(classes, list | tuple) or len(row) != len(classes):
                described = len(classes) if isinstance(classes, list | tuple) else "no"
                raise PredictorResponseError(
                    f"the predictor returned {len(row)} scores per image for {described} "
                    f"classes, but model version {self.model_version} (whose labels this "
                    f"transformer loaded from --model_dir) has {self.num_classes}: the "
                    "predictor serves a different model",
                    status=500,
                    reason="model-mismatch",
                )
            answer.probabilities.append([float(p) for p in row])
            answer.classes.append(tuple(str(c) for c in classes))
        return answer

    # ---------------------------------------------------------------- responses
    def label(self, slug: str) -> str:
        """The Korean label from the model's saved taxonomy; a slug this model's taxonomy does not
        know (a newer model's new category, mid-canary) is shown as itself."""
        return self.info.labels.get(slug, slug)

    def categories(
        self, probabilities: Sequence[float], classes: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The top-k ``{"slug", "label", "score"}`` of one image, best first."""
        classes = self.info.classes if classes is None else classes
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
        return [
            {
                "slug": classes[i],
                "label": self.label(classes[i]),
                "score": round(float(probabilities[i]), 4),
            }
            for i in order[: self.top_k]
        ]

    def confident(self, probabilities: Sequence[float]) -> bool:
        """Whether the app may show just the top 3: their summed (calibrated) score reaches the
        threshold stored with the model (:mod:`snapcat.calibration`). A model without one (no
        validation split, or exported before calibration) is never confident. Mid-canary the
        threshold is this transformer's model's, applied to whichever version answered."""
        return bool(is_confident([probabilities], self.info.confidence_threshold)[0])

    def _confidence(self, answer: PredictorAnswer | Sequence[Sequence[float]]) -> list[bool]:
        rows = answer.probabilities if isinstance(answer, PredictorAnswer) else answer
        return [self.confident(row) for row in rows]

    def _tops(self, answer: PredictorAnswer | Sequence[Sequence[float]]) -> list[list[dict]]:
        if isinstance(answer, PredictorAnswer):
            return [
                self.categories(row, classes)
                for row, classes in zip(answer.probabilities, answer.classes, strict=True)
            ]
        return [self.categories(row) for row in answer]

    def v1_response(self, answer: PredictorAnswer | Sequence[Sequence[float]]) -> dict[str, Any]:
        version = answer.version if isinstance(answer, PredictorAnswer) else self.model_version
        return {
            "predictions": [
                {"categories": top, "confident": confident}
                for top, confident in zip(self._tops(answer), self._confidence(answer), strict=True)
            ],
            "model_version": version,
        }

    def v2_outputs(self, answer: PredictorAnswer | Sequence[Sequence[float]]) -> list[dict]:
        """V2 outputs ``slug`` / ``label`` (BYTES) and ``score`` (FP64), each ``[N, k]``, and
        ``confident`` (BOOL, ``[N]``)."""
        tops = self._tops(answer)
        shape = [len(tops), self.top_k]
        confident = {
            "name": "confident",
            "datatype": "BOOL",
            "shape": [len(tops)],
            "data": self._confidence(answer),
        }
        return [
            {
                "name": key,
                "datatype": datatype,
                "shape": shape,
                "data": [c[key] for top in tops for c in top],
            }
            for key, datatype in (("slug", "BYTES"), ("label", "BYTES"), ("score", "FP64"))
        ] + [confident]
