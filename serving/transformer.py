"""The ``kserve.Model`` subclass: preprocess, predict (the call to TF Serving), postprocess and
health, each a few lines around :class:`snapcat.serve.transformer_core.TransformerCore`.

- ``preprocess`` parses the V1 (dict) or V2 (``InferRequest``) body, admits its photos (at most
  ``max_photos`` in flight per process, else HTTP 503 with ``Retry-After``), normalizes every
  photo in a thread pool sized to the container's CPUs (the JPEG decoder, simplejpeg, the resizer
  and the colour transforms release the GIL; see :mod:`snapcat.imaging.normalize`) within the
  decode budget and the per-photo deadline, and returns a :class:`PredictorCall` holding TF
  Serving's REST predict body.
- ``predict`` posts that body to TF Serving's ``/v1/models/<name>:predict`` with a bounded
  timeout. A refused connection or a timeout is HTTP 503 at once; nothing is cached, so the next
  request after the predictor comes back succeeds.
- ``postprocess`` shapes the top-k answer with the labels, threshold and version the
  predictor's answer carries (:meth:`snapcat.serve.transformer_core.TransformerCore.read_predictions`):
  the transformer has no model files of its own, so during a canary, when it calls two model
  versions, each answer is labelled by the version that computed it.
- ``healthy`` asks the predictor for the model's status: readiness (``GET /v1/models/<name>``,
  ``/v2/health/ready``) follows the predictor. Before the first request the transformer learns
  the model's image spec with a probe prediction (why: :mod:`snapcat.serve.transformer_core`); the
  readiness check does it, and so does a request that comes first.

The predictor's own error text is logged, never passed to clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.model import InferenceVerb, append_forwardable_headers
from kserve.predictor_config import PredictorConfig

from serving.capacity import Capacity
from serving.metrics import (
    DECODE_BYTES_RESERVED,
    NORMALIZE_SECONDS,
    PHOTOS_IN_FLIGHT,
    PREDICTOR_BYTES,
    PREDICTOR_IMAGES,
    PREDICTOR_SECONDS,
)
from snapcat.imaging.decode_budget import DecodeBudget
from snapcat.serve.errors import (
    InstanceError,
    NotServedError,
    OverloadedError,
    PredictorResponseError,
    PredictorUnavailableError,
)
from snapcat.serve.responses import ResponseBuilder
from snapcat.serve.transformer_core import (
    PredictorAnswer,
    TransformerConfig,
    TransformerCore,
    probe_photo,
)

logger = logging.getLogger("snapcat.serving")

#: Seconds a readiness probe waits for the predictor at most.
HEALTH_TIMEOUT = 2.0
#: The photo slots the request being handled holds (see ``ListingCategoryTransformer.__call__``).
_HELD_PHOTOS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "snapcat_held_photos", default=None
)


@dataclass
class PredictorCall:
    """What ``preprocess`` hands to ``predict``: the predictor request and how to answer."""

    protocol: str  # "v1" or "v2": the form of the client's request
    count: int
    body: bytes
    request_id: str | None = None
    admitted: int = 0  # photos this request holds of the in-flight allowance


@dataclass
class PredictorResult:
    call: PredictorCall
    answer: PredictorAnswer


class ListingCategoryTransformer(Model):
    def __init__(
        self,
        name: str,
        config: TransformerConfig | None = None,
        capacity: Capacity | None = None,
    ):
        super().__init__(name)
        self.config = config or TransformerConfig()
        self.capacity = capacity or Capacity()
        self.decode_budget = DecodeBudget(
            total_bytes=self.capacity.decode_budget_bytes,
            per_photo_bytes=self.config.max_decode_bytes,
            deadline_seconds=self.config.photo_deadline,
        )
        self.core: TransformerCore | None = None
        self.responses: ResponseBuilder | None = None
        self.photos_in_flight = 0
        self._client: httpx.AsyncClient | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._predictor_config: PredictorConfig | None = None
        self._predictor_ok: bool | None = None
        self.predictor_detail = ""
        DECODE_BYTES_RESERVED.set_function(lambda: self.decode_budget.in_use)
        PHOTOS_IN_FLIGHT.set_function(lambda: self.photos_in_flight)

    # ---------------------------------------------------------------- lifecycle
    def load(self) -> bool:
        """Nothing to download: labels, threshold, version and image spec come with the
        predictor's answers."""
        self.core = TransformerCore(self.config, self.decode_budget)
        self.responses = ResponseBuilder(self.config.top_k)
        self.core.self_test()
        logger.info(
            "model %s: top-%d, labels and image spec from the predictor's answers; %d "
            "normalization threads, at most %d photos in flight, decode budget %d MB (%d MB per "
            "photo)",
            self.name,
            self.config.top_k,
            self.capacity.workers,
            self.capacity.max_photos,
            self.decode_budget.total_bytes // 2**20,
            self.decode_budget.per_photo_bytes // 2**20,
        )
        self.ready = True
        return self.ready

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
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.capacity.workers, thread_name_prefix="normalize"
            )
        return self._executor

    def _model_url(self, suffix: str = "") -> str:
        base = self.predictor_config.predictor_base_url.rstrip("/")
        return f"{base}/v1/models/{self.name}{suffix}"

    # ---------------------------------------------------------------- handlers
    async def learn_model(self) -> None:
        """One probe prediction: the answer tells the model's image spec (read_predictions keeps
        it). A model that does not say (exported before it did) gets the default spec."""
        call = PredictorCall("v1", 1, self.core.predictor_body([probe_photo()]))
        result = await self._call_predictor(call, None)
        if result.answer.spec is None:
            self.core.use_default_spec()
        logger.info(
            "predictor %s serves model version %s: %d classes, normalizing at %d px, JPEG "
            "quality %d",
            self.predictor_host,
            result.answer.version,
            len(result.answer.classes[0]),
            self.core.spec.size,
            self.core.spec.jpeg_quality,
        )

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        """KServe's preprocess -> predict/explain -> postprocess, with the photo slots the request
        took released here, on every exit: success, an error in any stage, an unsupported verb,
        a cancelled task. (They were released in ``predict``, which ``:explain`` never calls: two
        explain requests took a 4-slot transformer down for good.)"""
        if verb != InferenceVerb.PREDICT:
            # Refused before its photos are decoded. (Grad-CAM explanations are a later route.)
            raise NotServedError(f"{verb.value} is not served by this model; use :predict")
        held = [0]
        token = _HELD_PHOTOS.set(held)
        try:
            return await super().__call__(body, headers, verb)
        finally:
            _HELD_PHOTOS.reset(token)
            self._release(held[0])

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        core = self.core
        if not core.spec_learned:  # a request before the first readiness check
            await self.learn_model()
        if isinstance(payload, InferRequest):
            items = core.parse_v2(payload.inputs)
            protocol, request_id = "v2", payload.id
        else:
            items = core.parse_v1(payload)
            protocol, request_id = "v1", (headers or {}).get("x-request-id")
        count = self._admit(len(items))
        try:
            canonical = await self._normalize_all(items)
            return PredictorCall(
                protocol, len(canonical), core.predictor_body(canonical), request_id, count
            )
        except BaseException:
            self._release(count)
            raise

    def _admit(self, count: int) -> int:
        """Load shedding: past ``max_photos`` in flight, a fast 503 beats a queue nobody waits
        out. A single request larger than the whole allowance is let through when it is alone."""
        if self.photos_in_flight and self.photos_in_flight + count > self.capacity.max_photos:
            raise OverloadedError(
                f"the transformer is at capacity ({self.photos_in_flight} photos in flight, "
                f"at most {self.capacity.max_photos}); retry shortly"
            )
        self.photos_in_flight += count
        held = _HELD_PHOTOS.get()
        if held is not None:
            held[0] += count  # released by __call__
            return 0
        return count

    @property
    def saturated(self) -> bool:
        """No photo slot free: the HTTP layer refuses new requests before reading their body."""
        return self.photos_in_flight >= self.capacity.max_photos

    def _release(self, count: int) -> None:
        self.photos_in_flight -= count

    async def _normalize_all(self, items) -> list[bytes]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.photo_deadline

        async def normalize(index: int, item):
            if isinstance(item, InstanceError):
                return item
            return await loop.run_in_executor(self.executor, self._normalize, index, item, deadline)

        work = asyncio.gather(*(normalize(i, item) for i, item in enumerate(items)))
        try:
            # The deadline is checked before each decode; this bounds the whole batch as well.
            results = await asyncio.wait_for(work, self.config.photo_deadline * 2)
        except TimeoutError:
            raise OverloadedError(
                f"normalizing the photos took over {self.config.photo_deadline * 2:g} s; "
                "retry shortly",
                reason="deadline-exceeded",
            ) from None
        return self.core.collect(results)

    def _normalize(self, index: int, photo: bytes, deadline: float):
        start = time.perf_counter()
        try:
            return self.core.normalize(index, photo, deadline)
        finally:
            NORMALIZE_SECONDS.labels(self.name).observe(time.perf_counter() - start)

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> PredictorResult:
        call: PredictorCall = payload
        try:
            return await self._call_predictor(call, headers)
        finally:
            self._release(call.admitted)

    async def _call_predictor(self, call: PredictorCall, headers) -> PredictorResult:
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
            # The predictor's own text (stack traces, paths, tensor names) is for our logs only.
            detail = body.get("error") if isinstance(body, dict) else response.text
            logger.warning(
                "predictor %s answered HTTP %d: %s",
                self.predictor_host,
                response.status_code,
                str(detail)[:500],
            )
            if response.status_code in (404, 429, 503):
                raise PredictorUnavailableError(
                    f"the predictor cannot serve model '{self.name}' now "
                    f"(HTTP {response.status_code})"
                )
            raise PredictorResponseError(
                f"the predictor answered HTTP {response.status_code}; see the transformer's log"
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
        if result.call.protocol == "v1":
            return self.responses.v1_response(result.answer)
        outputs = [
            InferOutput(name=o["name"], shape=o["shape"], datatype=o["datatype"], data=o["data"])
            for o in self.responses.v2_outputs(result.answer)
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
        if ok and not self.core.spec_learned:
            try:
                await self.learn_model()
            except (PredictorUnavailableError, PredictorResponseError) as exc:
                ok, detail = False, f"the probe prediction failed: {exc.message}"
        self._set_predictor_ok(ok, detail)
        return ok

    async def predictor_status(self) -> tuple[bool, str]:
        try:
            response = await self.client.get(self._model_url(), timeout=HEALTH_TIMEOUT)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        try:
            statuses = response.json()["model_version_status"]
            available = [str(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"]
        except (ValueError, KeyError, TypeError):
            return False, "the predictor's model status is not TF Serving's format"
        if not available:
            states = ", ".join(f"{s.get('version')} {s.get('state')}" for s in statuses)
            return False, f"no version AVAILABLE ({states})"
        detail = f"version {', '.join(available)} AVAILABLE"
        answered = self.core.model_version
        if answered is not None and answered not in available:
            detail += f"; last answer from version {answered}"
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
