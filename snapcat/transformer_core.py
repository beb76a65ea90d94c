"""The serving transformer's logic between a client's request and TF Serving, importable without
KServe and without TensorFlow (it runs no model: the predictor does).

``serving/transformer.py`` (the KServe ``Model`` subclass) is a thin shell around
:class:`TransformerCore`:

1. :meth:`TransformerCore.parse_v1` / :meth:`TransformerCore.parse_v2` turn a KServe V1 body
   (``{"instances": [{"image_bytes": {"b64": ...}}]}``) or the Open Inference Protocol (V2) inputs
   (a ``BYTES`` input named ``image_bytes``) into photo bytes, enforcing the per-request caps.
2. :meth:`TransformerCore.normalize` runs the shared normalization (:func:`snapcat.imaging.
   normalize_image`) per instance, within the process's :class:`~snapcat.decode_budget.
   DecodeBudget`: the exact canonical JPEG bytes the model was trained on.
3. :meth:`TransformerCore.predictor_body` builds TF Serving's REST predict request with those
   bytes as ``{"b64": ...}``: a few tens of KB per image instead of a megabyte of JSON floats.
4. :meth:`TransformerCore.read_predictions` checks the predictor's answer against the model's
   classes; :mod:`snapcat.responses` shapes the top-k categories with the labels saved beside
   the model (never from code).

Every refusal is a :class:`~snapcat.serving_errors.ServingError` carrying its HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from snapcat.decode_budget import DecodeBudget
from snapcat.export import (
    CLASSES_OUTPUT,
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    VERSION_OUTPUT,
)
from snapcat.imaging import ImageError, ImageSpec, ImageTooLargeError, normalize_image
from snapcat.model_info import ModelInfo
from snapcat.serving_errors import (
    BadRequestError,
    InstanceError,
    PredictorResponseError,
    human_bytes,
    instance_errors,
)

logger = logging.getLogger(__name__)

#: The InferenceService name the manifests, the CLI and the client default to.
DEFAULT_MODEL_NAME = "listing-category"
DEFAULT_TOP_K = 3
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_IMAGE_BYTES = ImageSpec.max_bytes
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_PREDICTOR_TIMEOUT = 10.0
#: Decode memory one photo may need (a 12 MP PNG needs ~100 MB; a JPEG of any size far less).
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024
#: Seconds a photo may wait for decode memory before it is refused with 503.
DEFAULT_PHOTO_DEADLINE = 5.0


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TransformerConfig:
    """The transformer's own knobs (``python -m serving --help`` lists them as flags)."""

    top_k: int = DEFAULT_TOP_K
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    predictor_timeout: float = DEFAULT_PREDICTOR_TIMEOUT
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES
    photo_deadline: float = DEFAULT_PHOTO_DEADLINE

    def __post_init__(self) -> None:
        for name in ("top_k", "max_image_bytes", "max_request_bytes", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_decode_bytes < 1:
            raise ValueError("max_decode_bytes must be at least 1")
        for name in ("predictor_timeout", "photo_deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")


class V2Input(Protocol):
    """What :meth:`TransformerCore.parse_v2` reads of one V2 input (``kserve.InferInput`` fits)."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


# ----------------------------------------------------------------------------------- base64
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
class TransformerCore:
    """Everything between a client's request and TF Serving, for one model's ``ModelInfo``."""

    def __init__(
        self,
        info: ModelInfo,
        config: TransformerConfig | None = None,
        decode_budget: DecodeBudget | None = None,
    ):
        self.info = info
        self.config = config or TransformerConfig()
        self.decode_budget = decode_budget or DecodeBudget(
            total_bytes=4 * self.config.max_decode_bytes,
            per_photo_bytes=self.config.max_decode_bytes,
            deadline_seconds=self.config.photo_deadline,
        )
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
        self._check_shape(tensor.shape, len(data))
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

    @staticmethod
    def _check_shape(shape: Any, count: int) -> None:
        """The V2 ``shape`` must describe the data: ``[N]`` or ``[N, 1]`` for N photos."""
        valid = (
            isinstance(shape, list | tuple)
            and len(shape) in (1, 2)
            and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            and shape[0] == count
            and (len(shape) == 1 or shape[1] == 1)
        )
        if not valid:
            raise BadRequestError(
                f"input '{INPUT_NAME}' has shape {list(shape) if isinstance(shape, list | tuple) else shape}"
                f" but holds {count} photos: the shape must be [{count}] (or [{count}, 1])",
                reason="bad-shape",
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
    def normalize(
        self, index: int, photo: bytes, deadline: float | None = None
    ) -> bytes | InstanceError:
        """The canonical model input for one photo, or the reason it cannot be used. Decoding
        starts only once the decode budget admits the photo (``deadline``: a monotonic instant)."""
        try:
            with self.decode_budget.photo(deadline) as reservation:
                return normalize_image(photo, self.spec, before_decode=reservation.admit)
        except ImageTooLargeError as exc:
            return InstanceError(index, exc.reason, str(exc), 413)
        except ImageError as exc:
            return InstanceError(index, exc.reason, str(exc), getattr(exc, "status", 400))
        except Exception as exc:  # a decoder failing in a way imaging does not know yet
            logger.exception("instance %d: unexpected error while decoding", index)
            return InstanceError(
                index,
                "invalid-image",
                f"the image could not be decoded ({type(exc).__name__}: {exc})",
            )

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
            if detail:  # the predictor's own words are for the log, not for clients
                logger.warning("the predictor's answer has no 'predictions': %s", str(detail)[:500])
            raise PredictorResponseError("the predictor's answer has no 'predictions'", status=502)
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
