"""The ``kserve.Model`` subclass: preprocess, predict (the call to TF Serving), postprocess and
health, each a few lines around :class:`snapcat.inference.InferenceCore`.

- ``preprocess`` parses the V1 (dict) or V2 (``InferRequest``) body, normalizes every photo in a
  thread pool (Pillow releases the GIL while decoding and resizing) and returns a
  :class:`PredictorCall` holding TF Serving's REST predict body.
- ``predict`` posts that body to TF Serving's ``/v1/models/<name>:predict`` with a bounded
  timeout. A refused connection or a timeout is HTTP 503 at once; nothing is cached, so the next
  request after the predictor comes back succeeds.
- ``postprocess`` checks that the predictor returned one score per class of the model whose
  labels this transformer loaded from ``--model_dir`` (HTTP 500 naming both otherwise) and shapes
  the top-k answer. The version is deliberately not pinned: during a canary an old transformer
  may call the new predictor and vice versa, which is safe for models with the same classes
  (``snapcat rollout canary --check-classes``).
- ``healthy`` asks the predictor for the model's status: readiness (``GET /v1/models/<name>``,
  ``/v2/health/ready``) follows the predictor.

KServe's own ``--enable_predictor_health_check`` expects a KServe predictor (``{"ready": ...}``),
which TF Serving is not, hence :class:`PredictorAwareDataPlane`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import ModelNotFound
from kserve.model import append_forwardable_headers
from kserve.predictor_config import PredictorConfig
from kserve.protocol.dataplane import DataPlane
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import JSONResponse

from snapcat.inference import (
    BadRequestError,
    InferenceCore,
    InstanceError,
    PayloadTooLargeError,
    PredictorAnswer,
    PredictorResponseError,
    PredictorUnavailableError,
    ServingError,
    TransformerConfig,
    human_bytes,
)
from snapcat.model_info import load_model_info

logger = logging.getLogger("snapcat.serving")

# KServe already exports request_{preprocess,predict,postprocess}_seconds per model; these add
# what is specific to this transformer.
NORMALIZE_SECONDS = Histogram(
    "snapcat_normalize_seconds",
    "Per-image normalization latency (decode, EXIF, colour, resize, JPEG encode)",
    ["model_name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PREDICTOR_SECONDS = Histogram(
    "snapcat_predictor_call_seconds",
    "Latency of the HTTP call to the predictor",
    ["model_name"],
)
PREDICTOR_BYTES = Counter(
    "snapcat_predictor_request_bytes",
    "Bytes of predict request bodies sent to the predictor",
    ["model_name"],
)
PREDICTOR_IMAGES = Counter(
    "snapcat_predictor_images", "Images sent to the predictor", ["model_name"]
)
REQUEST_ERRORS = Counter(
    "snapcat_request_errors",
    "Requests refused or failed, by HTTP status and reason",
    ["model_name", "status", "reason"],
)

#: Seconds a readiness probe waits for the predictor at most.
HEALTH_TIMEOUT = 2.0


@dataclass
class PredictorCall:
    """What ``preprocess`` hands to ``predict``: the predictor request and how to answer."""

    protocol: str  # "v1" or "v2": the form of the client's request
    count: int
    body: bytes
    request_id: str | None = None


@dataclass
class PredictorResult:
    call: PredictorCall
    answer: PredictorAnswer


class ListingCategoryTransformer(Model):
    def __init__(self, name: str, model_dir: str, config: TransformerConfig | None = None):
        super().__init__(name)
        self.model_dir = model_dir
        self.config = config or TransformerConfig()
        self.core: InferenceCore | None = None
        self._client: httpx.AsyncClient | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._predictor_config: PredictorConfig | None = None
        self._predictor_ok: bool | None = None
        self.predictor_detail = ""

    # ---------------------------------------------------------------- lifecycle
    def load(self) -> bool:
        info = load_model_info(self.model_dir)
        self.core = InferenceCore(info, self.config)
        self.core.self_test()
        logger.info(
            "model %s version %s: %d classes, %d px, top-%d, labels from %s",
            self.name,
            info.version,
            len(info.classes),
            info.image_size,
            self.core.top_k,
            self.model_dir,
        )
        self.ready = True
        return self.ready

    def __getstate__(self) -> dict[str, Any]:
        # KServe pickles the model into its worker processes when --workers > 1; the HTTP client
        # and the thread pool are created again, lazily, inside each worker's event loop.
        state = dict(self.__dict__)
        state["_client"] = None
        state["_executor"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        import kserve.model_server

        install_http_extensions(kserve.model_server.app, self.config.max_request_bytes)

    def use_predictor(self, config: PredictorConfig) -> None:
        self._predictor_config = config

    @property
    def predictor_config(self) -> PredictorConfig | None:
        # KServe keeps the predictor's address in a context variable that its worker processes
        # (--workers > 1) do not inherit; the model carries its own copy into them.
        return self._predictor_config or super().predictor_config

    @property
    def predictor_host(self) -> str:
        config = self.predictor_config
        return config.predictor_host if config else ""

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            timeout = self.config.predictor_timeout
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                verify=ca_bundle or True,
            )
        return self._client

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            workers = min(32, (os.cpu_count() or 1) + 4)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="normalize"
            )
        return self._executor

    def _model_url(self, suffix: str = "") -> str:
        base = self.predictor_config.predictor_base_url.rstrip("/")
        return f"{base}/v1/models/{self.name}{suffix}"

    # ---------------------------------------------------------------- handlers
    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        core = self.core
        if isinstance(payload, InferRequest):
            items = core.parse_v2(payload.inputs)
            protocol, request_id = "v2", payload.id
        else:
            items = core.parse_v1(payload)
            protocol, request_id = "v1", (headers or {}).get("x-request-id")
        loop = asyncio.get_running_loop()

        async def normalize(index: int, item):
            if isinstance(item, InstanceError):
                return item
            return await loop.run_in_executor(self.executor, self._normalize, index, item)

        results = await asyncio.gather(*(normalize(i, item) for i, item in enumerate(items)))
        canonical = core.collect(results)
        return PredictorCall(protocol, len(canonical), core.predictor_body(canonical), request_id)

    def _normalize(self, index: int, photo: bytes):
        start = time.perf_counter()
        try:
            return self.core.normalize(index, photo)
        finally:
            NORMALIZE_SECONDS.labels(self.name).observe(time.perf_counter() - start)

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> PredictorResult:
        call: PredictorCall = payload
        url = self._model_url(":predict")
        send_headers = append_forwardable_headers(headers, {"content-type": "application/json"})
        timeout = self.config.predictor_timeout
        start = time.perf_counter()
        for attempt in (1, 2):
            try:
                response = await self.client.post(url, content=call.body, headers=send_headers)
                break
            except httpx.TimeoutException:
                self._set_predictor_ok(False, "timeout")
                raise PredictorUnavailableError(
                    f"the predictor at {self.predictor_host} did not answer within {timeout:g} s"
                ) from None
            except httpx.TransportError as exc:
                # A keep-alive connection the predictor closed (e.g. it restarted) fails once;
                # predict has no side effects, so one immediate retry on a new connection is safe.
                if attempt == 1 and not isinstance(exc, httpx.ConnectError):
                    continue
                self._set_predictor_ok(False, str(exc) or type(exc).__name__)
                raise PredictorUnavailableError(
                    f"the predictor at {self.predictor_host} is unreachable: "
                    f"{str(exc) or type(exc).__name__}"
                ) from None
        PREDICTOR_SECONDS.labels(self.name).observe(time.perf_counter() - start)
        PREDICTOR_BYTES.labels(self.name).inc(len(call.body))
        PREDICTOR_IMAGES.labels(self.name).inc(call.count)
        self._set_predictor_ok(response.status_code == 200, f"HTTP {response.status_code}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if response.status_code != 200:
            detail = body.get("error") if isinstance(body, dict) else response.text[:200]
            if response.status_code in (404, 429, 503):
                raise PredictorUnavailableError(
                    f"the predictor cannot serve model '{self.name}' now "
                    f"(HTTP {response.status_code}: {detail})"
                )
            raise PredictorResponseError(
                f"the predictor answered HTTP {response.status_code}: {detail}"
            )
        if body is None:
            raise PredictorResponseError("the predictor's answer is not JSON")
        return PredictorResult(call, self.core.read_predictions(body, call.count))

    async def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        core = self.core
        if result.call.protocol == "v1":
            return core.v1_response(result.answer)
        outputs = [
            InferOutput(name=o["name"], shape=o["shape"], datatype=o["datatype"], data=o["data"])
            for o in core.v2_outputs(result.answer)
        ]
        return InferResponse(
            response_id=result.call.request_id or "",
            model_name=self.name,
            model_version=result.answer.version,
            infer_outputs=outputs,
        )

    async def healthy(self) -> bool:
        """Ready when this model is loaded and the predictor has a version of it AVAILABLE."""
        if not self.ready or self.core is None:
            return False
        ok, detail = await self.predictor_status()
        self._set_predictor_ok(ok, detail)
        return ok

    async def predictor_status(self) -> tuple[bool, str]:
        try:
            response = await self.client.get(self._model_url(), timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}: {response.text[:200]}"
        try:
            statuses = response.json()["model_version_status"]
            available = [str(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"]
        except (ValueError, KeyError, TypeError):
            return False, "the predictor's model status is not TF Serving's format"
        if not available:
            states = ", ".join(f"{s.get('version')} {s.get('state')}" for s in statuses)
            return False, f"no version AVAILABLE ({states})"
        detail = f"version {', '.join(available)} AVAILABLE"
        if self.core.model_version not in available:
            detail += f"; labels from version {self.core.model_version}"
        return True, detail

    def _set_predictor_ok(self, ok: bool, detail: str) -> None:
        self.predictor_detail = f"predictor {self.predictor_host}: {detail}"
        if ok != self._predictor_ok:
            if ok:
                logger.info("predictor %s: ready (%s)", self.predictor_host, detail)
            else:
                logger.warning("predictor %s: not ready (%s)", self.predictor_host, detail)
            self._predictor_ok = ok

    def stop(self) -> None:
        super().stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class PredictorAwareDataPlane(DataPlane):
    """Readiness that asks each model (our ``healthy`` checks the predictor); the predict path
    only checks that the model is loaded, so no request pays for a health probe."""

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        for model in models:
            await self._check(model)
        return bool(models)

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False):
        model = self.model_registry.get_model(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        if disable_predictor_health_check:
            return bool(model.ready)
        return await self._check(model)

    @staticmethod
    async def _check(model) -> bool:
        """True, or HTTP 503 saying why (KServe's own answer names no reason and logs a
        traceback for every failed probe)."""
        if await model.healthy():
            return True
        detail = getattr(model, "predictor_detail", "") or "not loaded"
        raise PredictorUnavailableError(f"model {model.name} is not ready: {detail}")

    def decode(self, body, headers, protocol_version: str = "v1", model_name: str | None = None):
        # A V2 body that is not JSON reaches KServe as bytes, which it then wants as the binary
        # extension ("inference-header-content-length ... missing"): say what is wrong instead.
        if (
            protocol_version == "v2"
            and isinstance(body, bytes)
            and INFERENCE_CONTENT_LENGTH_HEADER not in (headers or {})
        ):
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequestError(f"invalid JSON: {exc}", reason="invalid-json") from None
        return super().decode(body, headers, protocol_version, model_name)


class TransformerServer(ModelServer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dataplane = PredictorAwareDataPlane(model_registry=self.registered_models)


# ------------------------------------------------------------------------------ HTTP layer
def _model_label(request: Request) -> str:
    return request.path_params.get("model_name", "") if hasattr(request, "path_params") else ""


async def serving_error_handler(request: Request, exc: ServingError) -> JSONResponse:
    if request.method == "GET":  # a failed readiness probe: _set_predictor_ok logged the change
        logger.debug("%s %s: HTTP %d: %s", request.method, request.url.path, exc.status, exc)
        return JSONResponse(status_code=exc.status, content=exc.to_dict())
    REQUEST_ERRORS.labels(_model_label(request), str(exc.status), exc.reason).inc()
    if exc.status >= 500:
        logger.error("%s %s: HTTP %d: %s", request.method, request.url.path, exc.status, exc)
    else:
        logger.info("%s %s: HTTP %d: %s", request.method, request.url.path, exc.status, exc)
    return JSONResponse(status_code=exc.status, content=exc.to_dict())


async def validation_error_handler(request: Request, exc: RequestValidationError):
    """FastAPI answers a malformed V2 body with 422 and its own format; we answer 400 with
    ``{"error": ...}`` like every other bad request."""
    errors = exc.errors()
    invalid_json = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid_json:
        detail = (invalid_json[0].get("ctx") or {}).get("error") or invalid_json[0].get("msg")
        REQUEST_ERRORS.labels(_model_label(request), "400", "invalid-json").inc()
        return JSONResponse(status_code=400, content={"error": f"invalid JSON: {detail}"})
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][2:]) or 'body'}: {e.get('msg')}"
        for e in errors
        # The endpoint takes InferenceRequest | bytes; the bytes alternative is noise here.
        if tuple(e.get("loc", ()))[:2] != ("body", "bytes")
    )
    REQUEST_ERRORS.labels(_model_label(request), "400", "invalid-v2-request").inc()
    return JSONResponse(
        status_code=400, content={"error": f"invalid V2 inference request: {problems}"}
    )


class BodyLimitMiddleware:
    """HTTP 413 for a request body over ``max_bytes``, before the body is read: by its
    Content-Length, or while a chunked body streams in."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None:
            if declared > self.max_bytes:
                return await self._reject(scope, send, declared)
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(message, receive), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._reject(scope, send, size, streamed=True)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await self.app(scope, _replay(whole, receive), send)

    async def _reject(self, scope, send, size: int, streamed: bool = False):
        what = f"over {human_bytes(size)}" if streamed else human_bytes(size)
        exc = PayloadTooLargeError(
            f"the request body is {what}, over the {human_bytes(self.max_bytes)} limit "
            "(--max_request_bytes); send fewer or smaller photos per request",
            reason="request-too-large",
        )
        REQUEST_ERRORS.labels("", "413", exc.reason).inc()
        logger.info("%s %s: HTTP 413: %s", scope["method"], scope.get("path"), exc)
        response = JSONResponse(status_code=413, content=exc.to_dict())
        response.headers["connection"] = "close"
        await response(scope, _empty_receive, send)


def _replay(first: dict, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return first
        return await receive()

    return replay


async def _empty_receive():
    return {"type": "http.disconnect"}


def install_http_extensions(app: FastAPI, max_request_bytes: int) -> None:
    """Adds the error handlers and the body cap to KServe's FastAPI app (idempotent). KServe
    registers its own handlers when the server starts; Starlette picks the most specific
    exception class, so these win for our exceptions."""
    if getattr(app.state, "snapcat_extensions", False):
        return
    app.add_exception_handler(ServingError, serving_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_request_bytes)
    app.state.snapcat_extensions = True
