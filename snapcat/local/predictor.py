"""A local stand-in for TF Serving, for one machine: the demo, the tests and the benchmarks.

Production runs the real TensorFlow Serving (KServe's TF Serving runtime), which cannot be installed
here. ``snapcat serve predictor`` serves the same exported SavedModel with what the transformer
uses of TF Serving's REST API (``tensorflow_serving/g3doc/api_rest.md``):

- ``GET /v1/models/<name>[/versions/<v>]``: ``{"model_version_status": [{"version", "state",
  "status": {...}}]}`` (the transformer's readiness);
- ``GET /v1/models/<name>[/versions/<v>]/metadata``: ``{"model_spec", "metadata": {"signature_def":
  {"signature_def": ...}}}``, the SignatureDefs read from ``saved_model.pb``;
- ``POST /v1/models/<name>[/versions/<v>]:predict`` with ``instances`` in the row format (objects
  keyed by ``image_bytes``, or bare values), binary strings as ``{"b64": ...}``; answers
  ``{"predictions": ...}``, one object per row since the signature has several outputs. With
  ``"signature_name": "explain"`` each instance carries ``image_bytes`` and ``class_index`` and
  the answer adds each row's Grad-CAM ``heat_map`` (:mod:`snapcat.train.gradcam`).

Errors are ``{"error": "<message>"}`` with TF Serving's status for the case: 400 for a bad request
or input, 404 for an unknown model or version, 503 when the batching queue is full. It loads the
highest integer version folder (TF Serving's ``latest: 1`` policy), replays the version's warm-up
records before it opens its port (:mod:`snapcat.train.warmup`), batches requests by the same
``BatchingParameters`` file as production (:mod:`snapcat.local.batching`), and sizes TensorFlow's
intra-op and inter-op thread pools from its CPU limit and the model's backbone by the rule
production's TF Serving flags follow (:func:`apply_tf_serving_threads`), so local benchmarks
measure what production runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from snapcat.contract.model_info import load_model_info
from snapcat.contract.signature import (
    CLASS_INDEX_INPUT,
    EXPLAIN_SIGNATURE_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    SIGNATURE_NAME,
)
from snapcat.contract.tf_serving_config import (
    BatchingParameters,
    TfServingThreads,
    tf_serving_threads,
)
from snapcat.local.batching import MicroBatcher, QueueFullError, TaskTooLargeError, pad

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8501  # TF Serving's usual --rest_api_port

_MODEL_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<verb>/metadata|:predict)?"
)


class RestError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _invalid(message: str) -> RestError:
    return RestError(400, message)


# ------------------------------------------------------------------------------ JSON → images
def _image(value: Any, index: int) -> bytes:
    """One ``image_bytes`` element: ``{"b64": ...}`` decoded, or a JSON string as UTF-8."""
    if isinstance(value, dict) and list(value) == ["b64"] and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"instance {index}: {INPUT_NAME} is not valid base64") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _invalid(f'instance {index}: {INPUT_NAME} must be {{"b64": "..."}} or a string')


def parse_predict_request(body: bytes) -> list[bytes]:
    """The images of a row-format predict request for snapcat's ``serving_default`` signature
    (one ``DT_STRING`` input, ``image_bytes``)."""
    signature, rows = parse_request(body)
    if signature != SIGNATURE_NAME:
        raise _invalid(f"expected signature {SIGNATURE_NAME!r}, got {signature!r}")
    return rows


def parse_request(body: bytes) -> tuple[str, list]:
    """A row-format predict request: (signature name, rows). ``serving_default`` rows are image
    bytes; ``explain`` rows are (image bytes, class index), each instance an object with both
    inputs, as TF Serving takes a multi-input signature's rows."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid("the body must be a JSON object")
    signature = doc.get("signature_name") or SIGNATURE_NAME
    if signature not in (SIGNATURE_NAME, EXPLAIN_SIGNATURE_NAME):
        raise _invalid(
            f"no signature {signature!r}; the model serves {SIGNATURE_NAME!r} and "
            f"{EXPLAIN_SIGNATURE_NAME!r}"
        )
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise _invalid("'instances' must be a non-empty list (the row format)")
    if signature == EXPLAIN_SIGNATURE_NAME:
        return signature, [_explain_row(index, row) for index, row in enumerate(instances)]
    images = []
    for index, instance in enumerate(instances):
        if isinstance(instance, dict) and list(instance) != ["b64"]:
            if list(instance) != [INPUT_NAME]:
                raise _invalid(
                    f"instance {index}: expected the one input {INPUT_NAME!r}, got {sorted(instance)}"
                )
            instance = instance[INPUT_NAME]
        images.append(_image(instance, index))
    return signature, images


def _explain_row(index: int, instance: Any) -> tuple[bytes, int]:
    expected = sorted([INPUT_NAME, CLASS_INDEX_INPUT])
    if not isinstance(instance, dict) or sorted(instance) != expected:
        got = sorted(instance) if isinstance(instance, dict) else type(instance).__name__
        raise _invalid(f"instance {index}: expected the inputs {expected}, got {got}")
    class_index = instance[CLASS_INDEX_INPUT]
    if not isinstance(class_index, int) or isinstance(class_index, bool):
        raise _invalid(f"instance {index}: {CLASS_INDEX_INPUT} must be an integer")
    if not -(2**31) <= class_index < 2**31:
        raise _invalid(f"instance {index}: {CLASS_INDEX_INPUT} is out of int32 range")
    return _image(instance[INPUT_NAME], index), class_index


# ------------------------------------------------------------------------------ the servable
def _signature_defs(version_dir: str) -> dict[str, Any]:
    """The SignatureDefMap as TF Serving's metadata API prints it (proto field names)."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(Path(version_dir, "saved_model.pb").read_bytes())
    return {
        key: MessageToDict(
            signature, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key, signature in saved_model.meta_graphs[0].signature_def.items()
    }


class Servable:
    """One model name, its highest version loaded with :class:`snapcat.train.export.ServingModel`."""

    def __init__(self, model_dir: str, name: str):
        from snapcat.train.export import ServingModel

        self.name = name
        self.model = ServingModel(model_dir)
        self.version = int(Path(self.model.version_dir).name)
        self.signature_defs = _signature_defs(self.model.version_dir)
        inputs = self.signature_defs[SIGNATURE_NAME].get("inputs", {})
        if list(inputs) != [INPUT_NAME] or inputs[INPUT_NAME].get("dtype") != "DT_STRING":
            raise ValueError(
                f"{self.model.version_dir}: signature {SIGNATURE_NAME} must take one DT_STRING "
                f"input {INPUT_NAME!r} (snapcat's export contract), has {sorted(inputs)}"
            )
        if OUTPUT_NAME not in self.signature_defs[SIGNATURE_NAME].get("outputs", {}):
            raise ValueError(f"{self.model.version_dir}: no output {OUTPUT_NAME!r}")

    def run(self, images: list[bytes]) -> dict[str, np.ndarray]:
        return self.model.run(images)

    def explain(self, rows: list[tuple[bytes, int]]) -> dict[str, np.ndarray]:
        """The ``explain`` signature over (image bytes, class index) rows."""
        return self.model.explain([image for image, _ in rows], [index for _, index in rows])

    def warm_up(self, parameters: BatchingParameters) -> int:
        """Replays the version's warm-up records as TF Serving does at load (each once, padded
        like a batch); returns how many. A record that fails fails the load, as there."""
        from snapcat.train.warmup import read_warmup_requests, request_rows

        requests = read_warmup_requests(self.model.version_dir)
        start = time.perf_counter()
        for request in requests:
            _, images, class_indices = request_rows(request)
            if class_indices is None:
                self.run(pad(images, parameters, images[0]))
            else:  # explain (TF Serving also fails the load when the model lacks it)
                rows = list(zip(images, class_indices, strict=True))
                self.explain(pad(rows, parameters, rows[0]))
        if requests:
            logger.info(
                "replayed %d warm-up records in %.1f s", len(requests), time.perf_counter() - start
            )
        else:
            logger.warning("%s has no warm-up records: the first requests will be slow", self.name)
        return len(requests)

    def check_version(self, version: str | None) -> None:
        if version is not None and int(version) != self.version:
            raise RestError(
                404, f"model {self.name} has no version {version} (serving {self.version})"
            )

    def status(self) -> dict:
        return {
            "model_version_status": [
                {
                    "version": str(self.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self) -> dict:
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self.signature_defs}},
        }


# ------------------------------------------------------------------------------ HTTP app
def _json_values(values: np.ndarray) -> list:
    """One output tensor as TF Serving writes it: float32 at its own precision (0.2, not
    0.20000000298023224), strings as UTF-8 text."""
    values = np.asarray(values)
    if values.dtype == np.float32:
        return np.vectorize(lambda v: float(str(v)), otypes=[object])(values).tolist()
    if values.dtype.kind in "SO":
        decode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else v  # noqa: E731
        return np.vectorize(decode, otypes=[object])(values).tolist()
    return values.tolist()


def format_predictions(outputs: dict[str, np.ndarray]) -> dict:
    """TF Serving's row-format answer: bare rows for one output, one object per row for
    several."""
    columns = {name: _json_values(values) for name, values in sorted(outputs.items())}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    count = len(next(iter(columns.values())))
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(count)]}


def _model_error(exc: Exception) -> RestError:
    """A failed batch: TensorFlow's InvalidArgument (e.g. an undecodable image) is the request's
    fault, anything else the server's."""
    import tensorflow as tf

    if isinstance(exc, tf.errors.InvalidArgumentError):
        return RestError(400, exc.message)
    logger.error("prediction failed", exc_info=exc)
    return RestError(500, f"prediction failed: {type(exc).__name__}: {exc}")


def create_app(servable: Servable, batcher: MicroBatcher, explainer: MicroBatcher | None = None):
    """The Starlette app: TF Serving's model status, metadata and predict routes. ``explainer``
    batches the ``explain`` signature's requests (TF Serving batches each signature apart); without
    one (or for a model exported before the signature) they are refused as TF Serving refuses an
    unknown signature."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def dispatch(request: Request) -> dict:
        match = _MODEL_PATH.fullmatch(request.url.path)
        if not match:
            raise RestError(404, f"not found: {request.method} {request.url.path}")
        if match["name"] != servable.name:
            raise RestError(404, f"no model {match['name']!r} (serving {servable.name!r})")
        servable.check_version(match["version"])
        verb = match["verb"]
        if (request.method == "POST") != (verb == ":predict"):
            raise RestError(405, f"{request.method} is not allowed on {request.url.path}")
        if verb == "/metadata":
            return servable.metadata()
        if verb is None:
            return servable.status()
        signature, rows = parse_request(await request.body())
        queue = batcher
        if signature == EXPLAIN_SIGNATURE_NAME:
            if explainer is None or not servable.model.explains:
                raise _invalid(f"model {servable.name} has no signature {signature!r}")
            queue = explainer
        try:
            return format_predictions(await queue.submit(rows))
        except TaskTooLargeError as exc:
            raise _invalid(str(exc)) from None
        except QueueFullError as exc:
            raise RestError(503, str(exc)) from None
        except Exception as exc:
            raise _model_error(exc) from None

    async def handle(request: Request) -> Response:
        try:
            status, body = 200, await dispatch(request)
        except RestError as exc:
            status, body = exc.status, {"error": exc.message}
        return Response(
            json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json"
        )

    @asynccontextmanager
    async def lifespan(app):
        queues = [q for q in (batcher, explainer) if q is not None]
        for queue in queues:
            await queue.start()
        try:
            yield
        finally:
            for queue in queues:
                await queue.stop()

    return Starlette(
        routes=[Route("/{path:path}", handle, methods=["GET", "POST"])], lifespan=lifespan
    )


def apply_tf_serving_threads(cpus: float | None = None, *, backbone: str) -> TfServingThreads:
    """Sizes this process's TensorFlow thread pools as production's TF Serving flags are sized
    (:func:`snapcat.contract.tf_serving_config.tf_serving_threads`) for ``backbone``, from
    ``cpus`` or this process's CPU limit (cgroup quota and affinity:
    :mod:`snapcat.serve.container_limits`). Must run before TensorFlow starts its runtime (before
    a model is loaded). The REST thread count has no counterpart here: this server is one asyncio
    loop plus the batch threads."""
    import tensorflow as tf

    from snapcat.serve.container_limits import read_container_limits

    threads = tf_serving_threads(cpus or read_container_limits().cpus, backbone)
    tf.config.threading.set_intra_op_parallelism_threads(threads.intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(threads.inter_op)
    return threads


def serve(
    model_dir: str,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    model_name: str,
    batching: BatchingParameters | None = None,
) -> None:
    """Loads the highest version under ``model_dir`` and serves it until SIGINT/SIGTERM. The
    port opens only once the model is loaded and warmed up, as with TF Serving. ``batching``:
    default, the packaged base (CPU) sizing."""
    import uvicorn

    batching = batching or BatchingParameters.from_file()
    backbone = load_model_info(model_dir).backbone
    threads = apply_tf_serving_threads(backbone=backbone)
    logger.info(
        "TensorFlow threads for %g CPUs and %s: %d intra-op, %d inter-op (as TF Serving's %s)",
        threads.cpus,
        backbone,
        threads.intra_op,
        threads.inter_op,
        " ".join(threads.flags[:2]),
    )
    servable = Servable(model_dir, model_name)
    batcher = MicroBatcher(servable.run, batching)
    explainer = MicroBatcher(servable.explain, batching)
    servable.warm_up(batching)
    logger.info(
        "serving model %s version %d from %s on http://%s:%d/v1/models/%s, batching by %s",
        model_name,
        servable.version,
        servable.model.version_dir,
        host,
        port,
        model_name,
        batching.source,
    )
    config = uvicorn.Config(
        create_app(servable, batcher, explainer),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
