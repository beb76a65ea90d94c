"""The serving transformer's logic between a client's request and TF Serving, importable without
KServe and without TensorFlow (it runs no model: the predictor does).

``serving/transformer.py`` (the KServe ``Model`` subclass) is a thin shell around
:class:`TransformerCore`:

1. :meth:`TransformerCore.parse_v1` / :meth:`TransformerCore.parse_v2` turn a KServe V1 body
   (``{"instances": [{"image_bytes": {"b64": ...}}]}``) or the Open Inference Protocol (V2) inputs
   (a ``BYTES`` input named ``image_bytes``) into photo bytes, enforcing the per-request caps.
2. :meth:`TransformerCore.normalize` runs the shared normalization (:func:`snapcat.imaging.normalize.
   normalize_image`) per instance, within the process's :class:`~snapcat.imaging.decode_budget.
   DecodeBudget`: the exact canonical JPEG bytes the model was trained on.
3. :meth:`TransformerCore.predictor_body` builds TF Serving's REST predict request with those
   bytes as ``{"b64": ...}``: a few tens of KB per image instead of a megabyte of JSON floats.
4. :meth:`TransformerCore.read_predictions` reads the predictor's answer, which describes the
   model that computed it (classes, display labels, confidence threshold, version, image spec:
   :data:`snapcat.contract.signature.DESCRIPTION_OUTPUTS`); :mod:`snapcat.serve.responses` shapes the top-k
   categories with those labels (never from code).

The transformer downloads no model files: it learns the normalization spec (canonical JPEG side
and quality) from the predictor's answers too. Why answers rather than a second signature or
TF Serving's metadata endpoint: TF Serving's REST ``:predict`` needs input rows (a signature
without inputs cannot be called through it), the metadata endpoint carries tensor shapes but
no values, and one signature is one code path, in TF Serving and in the local stand-in alike.
So the transformer sends a one-pixel-sized probe photo (:func:`probe_photo`) before its first
request (its readiness check does it), and afterwards every answer refreshes the spec: after a
promotion to a model of another size, the first answer switches it. Mid-canary, when one
transformer talks to two model versions of different sizes, a photo may be normalized at the
other version's size; that degrades gracefully, because the signature decodes and resizes in the
graph (:func:`snapcat.train.tf_image.decode_canonical`): the model sees the letterboxed photo resampled
once more, never an error or a wrong label.

Every refusal is a :class:`~snapcat.serve.errors.ServingError` carrying its HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Protocol

from snapcat.contract.image_spec import ImageSpec
from snapcat.contract.signature import (
    CLASSES_OUTPUT,
    IMAGE_SIZE_OUTPUT,
    INPUT_NAME,
    JPEG_QUALITY_OUTPUT,
    LABELS_OUTPUT,
    NO_THRESHOLD,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    THRESHOLD_OUTPUT,
    VERSION_OUTPUT,
)
from snapcat.contract.taxonomy import Taxonomy
from snapcat.errors import human_bytes
from snapcat.imaging.decode_budget import DecodeBudget
from snapcat.imaging.normalize import ImageError, ImageTooLargeError, normalize_image
from snapcat.serve.errors import (
    BadRequestError,
    InstanceError,
    PredictorResponseError,
    instance_errors,
)

logger = logging.getLogger(__name__)

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
    """The predictor's scores and, per row, what the model that computed them says of itself:
    the classes (slugs) of the columns, their display labels and the confidence threshold (None:
    never confident); the version that served, and its image spec (None: the model does not say).
    """

    probabilities: list[list[float]]
    classes: list[tuple[str, ...]]
    version: str
    labels: list[tuple[str, ...]] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)
    spec: ImageSpec | None = None


@cache
def packaged_labels() -> Mapping[str, str]:
    """Slug -> display label of the taxonomy this package ships: the labels of a model exported
    before answers carried their own (a slug it does not know is shown as itself)."""
    taxonomy = Taxonomy.load()
    return {slug: taxonomy[slug].label for slug in taxonomy.slugs}


@cache
def probe_photo() -> bytes:
    """A tiny JPEG the transformer sends to learn the model's description before serving."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 255, 255)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------- core
class TransformerCore:
    """Everything between a client's request and TF Serving. ``spec`` is the normalization of the
    model the predictor serves: None until learned from an answer (:meth:`read_predictions`)."""

    def __init__(
        self,
        config: TransformerConfig | None = None,
        decode_budget: DecodeBudget | None = None,
        *,
        spec: ImageSpec | None = None,
    ):
        self.config = config or TransformerConfig()
        self.decode_budget = decode_budget or DecodeBudget(
            total_bytes=4 * self.config.max_decode_bytes,
            per_photo_bytes=self.config.max_decode_bytes,
            deadline_seconds=self.config.photo_deadline,
        )
        self.spec: ImageSpec | None = None
        self.model_version: str | None = None  # of the last answer
        self.classes: tuple[str, ...] = ()  # of the last answer
        if spec is not None:
            self.learn_spec(spec)

    def learn_spec(self, spec: ImageSpec) -> None:
        """Normalize from now on as the model that answered last was trained (size, quality),
        with this transformer's own input limits."""
        learned = replace(spec, max_bytes=self.config.max_image_bytes)
        if learned != self.spec:
            if self.spec is not None:
                logger.info(
                    "the predictor's model is now normalized at %d px, JPEG quality %d "
                    "(was %d px, %d)",
                    learned.size,
                    learned.jpeg_quality,
                    self.spec.size,
                    self.spec.jpeg_quality,
                )
            self.spec = learned

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
                details={"max_batch": self.config.max_batch},
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
        if self.spec is None:
            raise RuntimeError("normalize() before the model's image spec was learned")
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
        """Normalizes a generated JPEG once (at the default spec: the model's is not known yet):
        loads Pillow's and pillow-heif's plugins before the first request and fails at start-up,
        not per request, if the image stack is broken."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="JPEG")
        try:
            normalize_image(buffer.getvalue(), ImageSpec())
        except ImageError as exc:
            raise RuntimeError(f"image normalization self-test failed: {exc}") from exc

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
        """TF Serving's predict answer to rows of probabilities, each labelled by the model that
        computed it.

        A snapcat model's signature returns, per row, its ``classes`` (slugs), display ``labels``,
        ``confidence_threshold``, ``model_version`` and image spec, so the answer labels itself:
        whichever model version served it (mid-canary one transformer talks to two), its scores
        get that model's own class order and labels. A model exported before labels and spec were
        outputs is labelled from the packaged taxonomy and is never confident; an answer that does
        not name its classes at all (bare score rows) cannot be labelled safely and is refused.
        The spec the answer carries becomes the one the next photos are normalized with.
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
        answer = PredictorAnswer(probabilities=[], classes=[], version="unknown")
        for row in rows:
            described = row if isinstance(row, dict) else {}
            scores = described.get(OUTPUT_NAME) if isinstance(row, dict) else row
            if not isinstance(scores, list) or not all(
                isinstance(p, int | float) and math.isfinite(p) for p in scores
            ):
                raise PredictorResponseError(
                    f"the predictor's '{OUTPUT_NAME}' rows are not lists of numbers", status=500
                )
            classes = _strings(described.get(CLASSES_OUTPUT), len(scores), CLASSES_OUTPUT)
            labels = described.get(LABELS_OUTPUT)
            if labels is None:  # exported before answers carried labels
                labels = [packaged_labels().get(c, c) for c in classes]
            labels = _strings(labels, len(scores), LABELS_OUTPUT)
            threshold = described.get(THRESHOLD_OUTPUT)
            if not isinstance(threshold, int | float) or threshold == NO_THRESHOLD:
                threshold = None
            if described.get(VERSION_OUTPUT) is not None:
                answer.version = str(described[VERSION_OUTPUT])
            answer.probabilities.append([float(p) for p in scores])
            answer.classes.append(classes)
            answer.labels.append(labels)
            answer.thresholds.append(float(threshold) if threshold is not None else None)
            answer.spec = _spec_of(described) or answer.spec
        if answer.spec is not None:
            self.learn_spec(answer.spec)
        self.model_version = answer.version
        self.classes = answer.classes[-1]
        return answer

    @property
    def spec_learned(self) -> bool:
        return self.spec is not None

    def use_default_spec(self) -> None:
        """For a model that does not describe its image spec (exported before it did): the
        package default; the graph resizes whatever it gets, so a wrong size only costs a little
        accuracy."""
        logger.warning(
            "the predictor's model does not say its image spec; normalizing at the default "
            "%d px (the model resizes in its graph)",
            ImageSpec().size,
        )
        self.learn_spec(ImageSpec())


def _strings(values: Any, width: int, name: str) -> tuple[str, ...]:
    if values is None and name == CLASSES_OUTPUT:
        raise PredictorResponseError(
            "the predictor's answer does not name its classes (no 'classes' output): it is not a "
            "snapcat model, or one too old to label safely",
            status=500,
            reason="model-mismatch",
        )
    if not isinstance(values, list | tuple) or len(values) != width:
        described = len(values) if isinstance(values, list | tuple) else "no"
        raise PredictorResponseError(
            f"the predictor returned {width} scores per image but {described} '{name}': "
            "its signature is inconsistent",
            status=500,
            reason="model-mismatch",
        )
    return tuple(str(v) for v in values)


def _spec_of(described: Mapping[str, Any]) -> ImageSpec | None:
    size, quality = described.get(IMAGE_SIZE_OUTPUT), described.get(JPEG_QUALITY_OUTPUT)
    if not isinstance(size, int) or not isinstance(quality, int):
        return None
    try:
        return ImageSpec(size=size, jpeg_quality=quality)
    except ValueError:
        logger.warning(
            "the predictor's model describes an unusable image spec: %s px, %s", size, quality
        )
        return None
