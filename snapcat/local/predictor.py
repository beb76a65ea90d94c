"""A local predictor with TF Serving's REST API, for one machine, the tests and the demo.

Production runs the real TensorFlow Serving (KServe's TF Serving runtime); it cannot be installed
here, so ``snapcat serve predictor`` serves the same exported SavedModel with the same REST API
for what the transformer uses, following TF Serving's documented behaviour
(``tensorflow_serving/g3doc/api_rest.md`` and its ``json_tensor.cc``):

- ``GET /v1/models/<name>[/versions/<v>]``: ``{"model_version_status": [{"version", "state",
  "status": {"error_code", "error_message"}}]}``; 404 ``Could not find any versions of model``.
- ``GET /v1/models/<name>[/versions/<v>]/metadata``: ``{"model_spec": ..., "metadata":
  {"signature_def": {"signature_def": {...}}}}``, the SignatureDefs read from ``saved_model.pb``.
- ``POST /v1/models/<name>[/versions/<v>]:predict`` with ``instances`` (row format: objects
  keyed by input name, or plain values for a single input) or ``inputs`` (columnar), binary
  strings as ``{"b64": ...}``; answers ``{"predictions": ...}`` or ``{"outputs": ...}``.
- Errors are ``{"error": "<message>"}`` with TF Serving's status mapping (InvalidArgument 400,
  NotFound 404, ...).

Only the highest integer version folder is loaded (TF Serving's default ``latest: 1`` policy).
Concurrent requests are batched server-side (like TF Serving's ``--enable_batching``): a
:class:`MicroBatcher` collects concurrent requests (up to ``max_batch_size`` images, waiting at most
``batch_timeout``) and runs one signature call; if a batch fails, its requests run one by one so a bad
input only fails its own request. The model is loaded with :class:`snapcat.export.ServingModel`,
so this is exactly the graph TF Serving runs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import contextlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snapcat.export import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8501  # TF Serving's usual --rest_api_port
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_TIMEOUT_MS = 50.0

# TF Serving's own URL patterns (http_rest_api_util.cc).
_PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)


class RestError(Exception):
    """An error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _invalid(message: str) -> RestError:
    return RestError(400, message)


# ------------------------------------------------------------------------------ JSON → tensors
def _debug(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _string_scalar(value: Any) -> bytes:
    """One DT_STRING element: ``{"b64": ...}`` decoded, or a JSON string as UTF-8."""
    if isinstance(value, dict):
        if not _is_b64(value):
            raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        raise _invalid(
            f"JSON Value: {_debug(value)} found at incorrect level: the signature input "
            f"{INPUT_NAME} takes one string per instance"
        )
    raise _invalid(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: string"
    )


@dataclass
class ParsedPredict:
    columnar: bool
    images: list[bytes]


def parse_predict_request(body: bytes, input_names: Sequence[str]) -> ParsedPredict:
    """TF Serving's ``FillPredictRequestFromJson`` for a signature with one ``DT_STRING [-1]``
    input (snapcat's ``image_bytes``)."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {_debug(doc)} Is not object")
    signature = doc.get("signature_name", SIGNATURE_NAME)
    if not isinstance(signature, str):
        raise _invalid(
            f"JSON Value: {_debug(doc)} not formatted correctly. 'signature_name' key must be a "
            "string value."
        )
    if (signature or SIGNATURE_NAME) != SIGNATURE_NAME:
        raise _invalid(f'Serving signature name: "{signature}" not found in signature def')
    (name,) = input_names
    if "instances" in doc and "inputs" in doc:
        raise _invalid(
            f"JSON Value: {_debug(doc)} Not formatted correctly expecting only one of 'inputs' "
            "or 'instances' keys to exist "
        )
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _invalid(f"JSON Value: {_debug(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {_debug(doc)} No values in 'instances' array")
        objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        images = []
        for i, element in enumerate(instances):
            is_object = isinstance(element, dict) and not _is_b64(element)
            if objects and not is_object:
                raise _invalid(f"Expecting object but got list at item {i} of input list")
            if not objects and is_object:
                raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            if objects:
                unknown = [k for k in element if k != name]
                if unknown:
                    raise _invalid(
                        f"Failed to process element: {i} key: {unknown[0]} of 'instances' list. "
                        f"Error: INVALID_ARGUMENT: JSON object: does not have named input: "
                        f"{unknown[0]}"
                    )
                if name not in element:
                    raise _invalid(
                        f"Failed to process element: {i} of 'instances' list. JSON object: "
                        f"{_debug(element)} keys must be equal to: {name}"
                    )
                value, where = element[name], f"{i} key: {name}"
            else:
                value, where = element, f"{i}"
            try:
                images.append(_string_scalar(value))
            except RestError as exc:
                raise _invalid(
                    f"Failed to process element: {where} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: {exc.message}"
                ) from None
        return ParsedPredict(False, images)
    if "inputs" in doc:
        inputs = doc["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            if name not in inputs:
                raise _invalid(f"Missing named input: {name} in 'inputs' object.")
            inputs = inputs[name]
        if not isinstance(inputs, list):
            raise _invalid(
                f"JSON Value: {_debug(inputs)} has rank 0 but the signature input {name} "
                "takes a list (shape [-1])"
            )
        return ParsedPredict(True, [_string_scalar(v) for v in inputs])
    raise _invalid("Missing 'inputs' or 'instances' key")


# ------------------------------------------------------------------------------ batching
@dataclass
class _Task:
    images: list[bytes]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects concurrent requests into one model call of at most ``max_batch_size`` images.

    A batch takes every request already queued; it waits for more (at most ``batch_timeout``
    seconds) only while it holds fewer requests than were outstanding at once during the previous
    batch: that many clients are active, and the ones just answered send their next request a
    few milliseconds later. So a single client pays no batching delay, and N concurrent clients
    get batches of N. ``run_batch`` runs in one dedicated thread (TensorFlow spreads each call
    over the cores itself)."""

    def __init__(
        self,
        run_batch: Callable[[list[bytes]], np.ndarray | dict[str, np.ndarray]],
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT_MS / 1000,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self._queue: asyncio.Queue[_Task] | None = None
        self._carry: collections.deque[_Task] = collections.deque()
        self._worker: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.batches = 0
        self.images = 0
        self._outstanding = 0  # submitted, not answered yet
        self._peak = 0  # the most outstanding at once since the current batch began

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self.batches:
            logger.info(
                "micro-batcher: %d images in %d model calls (%.1f per call)",
                self.images,
                self.batches,
                self.images / self.batches,
            )
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, images: list[bytes]) -> np.ndarray | dict[str, np.ndarray]:
        future = asyncio.get_running_loop().create_future()
        self._outstanding += 1
        self._peak = max(self._peak, self._outstanding)
        try:
            await self._queue.put(_Task(images, future))
            return await future
        finally:
            self._outstanding -= 1

    async def _next(self, timeout: float | None) -> _Task | None:
        if self._carry:
            return self._carry.popleft()
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            # How many requests were outstanding at once during the previous batch: that many
            # clients are active, and those just answered are sending their next request now.
            expected, self._peak = max(1, self._peak), self._outstanding
            batch, size = [first], len(first.images)
            deadline = loop.time() + self.batch_timeout
            while size < self.max_batch_size:
                # Take whatever is queued; wait (up to the deadline) only for the clients
                # expected, so a lone client is never kept waiting.
                wait = deadline - loop.time() if len(batch) < expected else 0.0
                task = await self._next(wait)
                if task is None:
                    break
                if size + len(task.images) > self.max_batch_size:
                    self._carry.append(task)
                    break
                batch.append(task)
                size += len(task.images)
            await self._run(batch)

    async def _run(self, batch: list[_Task]) -> None:
        batch = [t for t in batch if not t.future.done()]  # clients that went away
        if not batch:
            return
        images = [image for task in batch for image in task.images]
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.run_batch, images)
        except Exception as exc:
            if len(batch) > 1:
                # One bad input fails the whole graph call: isolate it.
                for task in batch:
                    await self._run([task])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self.batches += 1
        self.images += len(images)
        offset = 0
        for task in batch:
            n = len(task.images)
            if not task.future.done():
                task.future.set_result(_rows(outputs, offset, offset + n))
            offset += n


def _rows(outputs: np.ndarray | dict[str, np.ndarray], start: int, stop: int):
    """Rows ``start:stop`` of one output array, or of every output of a signature."""
    if isinstance(outputs, dict):
        return {name: values[start:stop] for name, values in outputs.items()}
    return outputs[start:stop]


# ------------------------------------------------------------------------------ the servable
def _signature_defs(version_dir: str) -> dict[str, Any]:
    """The SignatureDefMap as TF Serving's metadata API prints it (proto field names)."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(Path(version_dir, "saved_model.pb").read_bytes())
    meta_graph = saved_model.meta_graphs[0]
    result = {}
    for key, signature in meta_graph.signature_def.items():
        try:
            as_dict = MessageToDict(
                signature,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        except TypeError:  # protobuf < 5.26
            as_dict = MessageToDict(
                signature, preserving_proto_field_name=True, including_default_value_fields=True
            )
        result[key] = as_dict
    return result


class Servable:
    """One model name, its highest version loaded with :class:`snapcat.export.ServingModel`."""

    def __init__(self, model_dir: str, name: str):
        from snapcat.export import ServingModel

        self.name = name
        self.model = ServingModel(model_dir)
        self.version = int(Path(self.model.version_dir).name)
        self.signature_defs = _signature_defs(self.model.version_dir)
        inputs = self.signature_defs[SIGNATURE_NAME].get("inputs", {})
        outputs = self.signature_defs[SIGNATURE_NAME].get("outputs", {})
        if list(inputs) != [INPUT_NAME] or inputs[INPUT_NAME].get("dtype") != "DT_STRING":
            raise ValueError(
                f"{self.model.version_dir}: signature {SIGNATURE_NAME} must take one DT_STRING "
                f"input {INPUT_NAME!r} (snapcat's export contract), has {sorted(inputs)}"
            )
        if OUTPUT_NAME not in outputs:
            raise ValueError(f"{self.model.version_dir}: no output {OUTPUT_NAME!r}")
        self.input_names = [INPUT_NAME]

    def run(self, images: list[bytes]) -> dict[str, np.ndarray]:
        return self.model.run(images)

    def warm_up(self) -> None:
        """One call before serving, so the first request does not pay for graph set-up."""
        import io

        from PIL import Image

        buffer = io.BytesIO()
        size = self.model.info.image_size
        Image.new("RGB", (size, size), (255, 255, 255)).save(buffer, format="JPEG")
        self.run([buffer.getvalue()])

    def status(self, version: int | None) -> dict:
        if version is not None and version != self.version:
            raise RestError(404, f"Could not find version {version} of model {self.name}")
        return {
            "model_version_status": [
                {
                    "version": str(self.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    def metadata(self, version: int | None) -> dict:
        self._check_version(version)
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self.signature_defs}},
        }

    def _check_version(self, version: int | None) -> None:
        if version is not None and version != self.version:
            raise RestError(
                404, f"Servable not found for request: Specific({self.name}, {version})"
            )


# ------------------------------------------------------------------------------ HTTP app
def _json_values(values: np.ndarray, name: str) -> list:
    """One output tensor as TF Serving writes it: float32 at its own precision (0.2, not
    0.20000000298023224), strings as UTF-8 text (base64 objects for names ending in _bytes)."""
    values = np.asarray(values)
    if values.dtype == np.float32:
        return np.vectorize(lambda v: float(str(v)), otypes=[object])(values).tolist()
    if values.dtype.kind in "SO":
        if name.endswith("_bytes"):
            encode = lambda v: {"b64": base64.b64encode(v).decode("ascii")}  # noqa: E731
        else:
            encode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else v  # noqa: E731
        return np.vectorize(encode, otypes=[object])(values).tolist()
    return values.tolist()


def _format_outputs(outputs: np.ndarray | dict[str, np.ndarray], columnar: bool) -> dict:
    """TF Serving's response shapes: one output gives bare rows; several give, in row format,
    one object per row, and in columnar format one list per output."""
    if not isinstance(outputs, dict):
        outputs = {OUTPUT_NAME: outputs}
    columns = {name: _json_values(values, name) for name, values in sorted(outputs.items())}
    if len(columns) == 1:
        (only,) = columns.values()
        return {"outputs": only} if columnar else {"predictions": only}
    if columnar:
        return {"outputs": columns}
    count = len(next(iter(columns.values())))
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(count)]}


def create_app(servable: Servable, batcher: MicroBatcher):
    """The Starlette app: one route that dispatches like TF Serving's ``ProcessRequest``."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def reply(status: int, body: dict) -> Response:
        return Response(
            json.dumps(body, ensure_ascii=False, indent=None),
            status_code=status,
            media_type="application/json",
        )

    async def handle(request: Request) -> Response:
        try:
            return reply(200, await dispatch(request))
        except RestError as exc:
            return reply(exc.status, {"error": exc.message})

    def model_for(name: str, label: str | None) -> None:
        if name != servable.name:
            raise RestError(404, f"Servable not found for request: Latest({name})")
        if label:
            raise RestError(400, f"Unrecognized servable version label: {label}")

    async def dispatch(request: Request) -> dict:
        path, method = request.url.path, request.method
        if method == "POST":
            match = _PREDICT_PATH.fullmatch(path)
            if not match:
                raise _invalid(f"Malformed request: {method} {path}")
            name, version, label, verb = match.groups()
            if verb.lower() != "predict":
                raise RestError(400, f"{verb} is not supported by this local predictor")
            model_for(name, label)
            servable._check_version(int(version) if version else None)
            parsed = parse_predict_request(await request.body(), servable.input_names)
            try:
                outputs = await batcher.submit(parsed.images)
            except Exception as exc:
                raise _model_error(exc) from None
            return _format_outputs(outputs, parsed.columnar)
        match = _STATUS_PATH.fullmatch(path)
        if not match:
            raise _invalid(f"Malformed request: {method} {path}")
        name, version, label, subresource = match.groups()
        if not name:
            raise _invalid("Missing model name in request.")
        if name != servable.name:
            raise RestError(404, f"Could not find any versions of model {name}")
        model_for(name, label)
        version_number = int(version) if version else None
        if subresource:
            return servable.metadata(version_number)
        return servable.status(version_number)

    async def not_found(request: Request) -> Response:
        return reply(404, {"error": f"Not found: {request.method} {request.url.path}"})

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    return Starlette(
        routes=[
            Route("/v1/{rest:path}", handle, methods=["GET", "POST"]),
            Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
        ],
        lifespan=lifespan,
    )


def _model_error(exc: Exception) -> RestError:
    """A TensorFlow error to TF Serving's status mapping."""
    try:
        import tensorflow as tf

        if isinstance(exc, tf.errors.InvalidArgumentError | tf.errors.OutOfRangeError):
            return RestError(400, exc.message)
        if isinstance(exc, tf.errors.NotFoundError):
            return RestError(404, exc.message)
        if isinstance(exc, tf.errors.DeadlineExceededError):
            return RestError(504, exc.message)
        if isinstance(exc, tf.errors.ResourceExhaustedError):
            return RestError(429, exc.message)
        if isinstance(exc, tf.errors.OpError):
            return RestError(500, exc.message)
    except ImportError:  # pragma: no cover
        pass
    logger.exception("prediction failed", exc_info=exc)
    return RestError(500, f"{type(exc).__name__}: {exc}")


def serve(
    model_dir: str,
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    model_name: str,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
) -> None:
    """Loads the highest version under ``model_dir`` and serves it until SIGINT/SIGTERM. The
    port opens only once the model is loaded and warmed up, as with TF Serving."""
    import uvicorn

    servable = Servable(model_dir, model_name)
    servable.warm_up()
    batcher = MicroBatcher(servable.run, max_batch_size, batch_timeout_ms / 1000)
    logger.info(
        "serving model %s version %d from %s on http://%s:%d/v1/models/%s",
        model_name,
        servable.version,
        servable.model.version_dir,
        host,
        port,
        model_name,
    )
    config = uvicorn.Config(
        create_app(servable, batcher),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
