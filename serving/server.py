"""``kserve.ModelServer`` as the transformer runs it: one HTTP server process, no gRPC port, bound to
``--host``, with the guards of :mod:`serving.http_layer` and :mod:`serving.connection`.

KServe 0.21's ``RESTServer`` builds its uvicorn ``Config`` with ``host="0.0.0.0"`` and uvicorn's
defaults (``httptools`` parser: no header size limit; no header or body read timeout), and
registers the model repository's load/unload routes on the serving port. ``TransformerRESTServer``
replaces that config and installs our middleware (which refuses those routes) and exception
handlers after KServe's (Starlette keeps the last handler registered per class). The KServe
internals this takes (``ModelServer.start``'s steps, ``RESTServer``'s build hooks) are reached
only through :mod:`serving.kserve_adapter`, whose test names the hook that a KServe upgrade broke.

Health: liveness (``/``, ``/v2/health/live``) fails with 503 when no model is loaded, so
Kubernetes restarts a pod whose model is gone; readiness also asks the predictor
(:class:`PredictorAwareDataPlane`).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from fastapi import FastAPI
from kserve import ModelServer
from kserve.errors import ModelNotFound, ModelNotReady, ServerNotLive

from serving import kserve_adapter, v2_binary, version_metrics
from serving.connection import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_IDLE_CONNECTIONS,
    protocol_class,
)
from serving.http_layer import (
    DEFAULT_BODY_TIMEOUT,
    RequestGuard,
    install_exception_handlers,
)
from serving.kserve_adapter import INFERENCE_CONTENT_LENGTH_HEADER, DataPlane, HookedRESTServer
from serving.metrics import IDLE_CONNECTIONS, ModelLabel, stage_cpu
from snapcat.serve.errors import BadRequestError, PredictorUnavailableError
from snapcat.serve.transformer_core import DEFAULT_MAX_REQUEST_BYTES

#: Connections whose request is being handled at once; past it a new request is 503. Idle ones
#: (no request in progress) have their own cap, ``max_idle_connections``.
DEFAULT_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class HttpLimits:
    host: str = "0.0.0.0"
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_idle_connections: int = DEFAULT_MAX_IDLE_CONNECTIONS
    max_requests: int = 16
    body_bytes_in_flight: int = 128 * 1024 * 1024


class PredictorAwareDataPlane(DataPlane):
    """Liveness that requires a loaded model; readiness that asks each model (our ``healthy``
    checks the predictor); the predict path only checks that the model is loaded, so no request
    pays for a health probe."""

    async def live(self) -> dict[str, str]:
        models = list(self.model_registry.get_models().values())
        if not models or not all(getattr(m, "ready", False) for m in models):
            raise ServerNotLive("no model is loaded")
        return {"status": "alive"}

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
        """True, or HTTP 503 saying why (KServe's own answer names no reason)."""
        if await model.healthy():
            return True
        detail = getattr(model, "predictor_detail", "") or "not loaded"
        raise PredictorUnavailableError(f"model {model.name} is not ready: {detail}")

    async def get_model(self, name: str):
        """The model an inference request names, if loaded. KServe's own asks the model's
        ``healthy()`` first, which here is a status call to the predictor: one extra HTTP round
        trip per request, a fifth of the transformer's CPU per photo and a load on TF Serving
        (and, when it says not ready, calls ``load()`` again). Readiness is the readiness
        probe's business; a request to a predictor that is down fails fast on its own (503)."""
        model = self.model_registry.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        if not getattr(model, "ready", False):
            raise ModelNotReady(name)
        return model

    def decode(self, body, headers, protocol_version: str = "v1", model_name: str | None = None):
        # The binary data extension, read strictly (KServe's own reader answers 500 and echoes
        # the photo): serving.v2_binary.
        with stage_cpu("decode"):
            return self._decode(body, headers, protocol_version, model_name)

    def _decode(self, body, headers, protocol_version: str, model_name: str | None):
        if protocol_version == "v2" and isinstance(body, bytes) and headers:
            length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
            if length is not None:
                return v2_binary.parse(body, length, model_name), {}
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


class TransformerRESTServer(HookedRESTServer):
    def __init__(
        self,
        *args,
        http_limits: HttpLimits,
        model_label: ModelLabel,
        saturated,
        transformer,
        request_timing_logs: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.request_timing_logs = request_timing_logs
        self.http_limits = http_limits
        self.transformer = transformer  # whose model version labels the live metrics
        self.model_label = model_label
        self.saturated = saturated
        config = self.config
        config.host = http_limits.host
        config.http = protocol_class(
            http_limits.header_timeout,
            http_limits.max_connections,
            http_limits.max_idle_connections,
        )
        idle = config.http.idle
        IDLE_CONNECTIONS.set_function(lambda: len(idle))
        config.h11_max_incomplete_event_size = http_limits.max_header_bytes
        config.limit_concurrency = http_limits.max_connections

    def add_middlewares(self, app: FastAPI) -> None:
        if not self.request_timing_logs:
            # KServe's TimingMiddleware only logs two kserve.trace lines per request (wall and
            # CPU time; the same figures are in the Prometheus histograms): off unless --verbose.
            app.user_middleware[:] = [
                m for m in app.user_middleware if m.cls is not kserve_adapter.TimingMiddleware
            ]
        limits = self.http_limits
        app.add_middleware(
            RequestGuard,
            max_request_bytes=limits.max_request_bytes,
            max_requests=limits.max_requests,
            max_body_bytes_in_flight=limits.body_bytes_in_flight,
            body_timeout=limits.body_timeout,
            model_label=self.model_label,
            saturated=self.saturated,
        )
        # Added last, so outermost: the guard's refusals count as this version's overload.
        version_metrics.install(app, self.transformer)

    def add_exception_handlers(self, app: FastAPI) -> None:
        install_exception_handlers(app)


class TransformerServer(ModelServer):
    """``ModelServer`` with one REST server process (scale with replicas: the capacity planning
    in :mod:`serving.capacity` is per process) and no gRPC server."""

    def __init__(self, *, http_limits: HttpLimits, verbose: bool = False, **kwargs):
        super().__init__(enable_grpc=False, workers=1, **kwargs)
        self.http_limits = http_limits
        self.verbose = verbose
        self.dataplane = PredictorAwareDataPlane(model_registry=self.registered_models)

    def start(self, models) -> None:
        kserve_adapter.register_models(self, models)
        rest_server = TransformerRESTServer(
            **kserve_adapter.rest_server_arguments(self),
            http_limits=self.http_limits,
            model_label=ModelLabel({m.name for m in models}),
            saturated=lambda: any(getattr(m, "saturated", False) for m in models),
            transformer=models[0],
            request_timing_logs=self.verbose,
        )
        kserve_adapter.serve(self, rest_server)
