"""The ``kserve.Model`` subclass: preprocess, predict (the call to TF Serving), postprocess and
health, each a few lines around :class:`snapcat.serve.transformer_core.TransformerCore`.

- ``preprocess`` parses the V1 (dict) or V2 (``InferRequest``) body, admits its photos
  (:mod:`snapcat.serve.admission`: at most ``max_photos`` in flight per process, else HTTP 503
  with ``Retry-After``), normalizes every
  photo in a thread pool sized to the container's CPUs (the JPEG decoder, simplejpeg, the resizer
  and the colour transforms release the GIL; see :mod:`snapcat.imaging.normalize`) within the
  decode budget and the per-photo deadline, and returns a :class:`PredictorCall` holding TF
  Serving's REST predict body.
- ``predict`` posts that body to TF Serving (:mod:`serving.predictor_client`).
- ``explain`` (``POST /v1/models/<name>:explain``) posts the same photos to the SavedModel's
  ``explain`` signature; ``postprocess`` answers predict's response plus a heat map and PNG
  overlay per photo (:mod:`snapcat.serve.explain`; each explained photo takes
  ``EXPLAIN_SLOTS`` photo slots).
- ``postprocess`` shapes the top-k answer with the labels, threshold and version the
  predictor's answer carries (:meth:`snapcat.serve.transformer_core.TransformerCore.read_predictions`):
  the transformer has no model files of its own, so during a canary, when it calls two model
  versions, each answer is labelled by the version that computed it. It notes the answering
  version and top-1s for the live metrics (:mod:`serving.version_metrics`).
- ``healthy`` asks the predictor for the model's status: readiness (``GET /v1/models/<name>``,
  ``/v2/health/ready``) follows the predictor. Before the first request the transformer learns
  the model's image spec with a probe prediction (why: :mod:`snapcat.serve.transformer_core`); the
  readiness check does it, and so does a request that comes first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import time
from dataclasses import dataclass
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.predictor_config import PredictorConfig

from serving import version_metrics
from serving.capacity import Capacity
from serving.kserve_adapter import InferenceVerb
from serving.metrics import (
    DECODE_BYTES_RESERVED,
    NORMALIZE_SECONDS,
    PHOTOS_IN_FLIGHT,
    stage_cpu,
)
from serving.predictor_client import PredictorClient
from snapcat.contract.signature import INPUT_NAME
from snapcat.imaging.decode_budget import DecodeBudget
from snapcat.serve import explain
from snapcat.serve.admission import Admission
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


@dataclass
class PredictorCall:
    """What ``preprocess`` hands to ``predict``: the predictor request and how to answer."""

    protocol: str  # "v1" or "v2": the form of the client's request
    count: int
    body: bytes
    request_id: str | None = None
    admitted: int = 0  # photos this request holds of the in-flight allowance
    photos: list[bytes] | None = None  # :explain: the canonical photos, for the overlays


@dataclass
class PredictorResult:
    call: PredictorCall
    answer: PredictorAnswer
    explanations: list[explain.Explanation] | None = None  # :explain's heat maps


#: The verb of the request being handled (KServe's preprocess is not told it).
_VERB: contextvars.ContextVar[InferenceVerb] = contextvars.ContextVar(
    "snapcat_verb", default=InferenceVerb.PREDICT
)


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
        self.admission = Admission(self.capacity.max_photos)
        self.predictor = PredictorClient(
            name, self.config.predictor_timeout, lambda: self.predictor_config
        )
        self.core: TransformerCore | None = None
        self.responses: ResponseBuilder | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._predictor_config: PredictorConfig | None = None
        DECODE_BYTES_RESERVED.set_function(lambda: self.decode_budget.in_use)
        PHOTOS_IN_FLIGHT.set_function(lambda: self.admission.in_flight)

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

    # ---------------------------------------------------------------- V2 model metadata
    def get_input_types(self) -> list[dict]:
        """``GET /v2/models/<name>``: one BYTES element per photo (base64 in JSON, raw bytes with
        the binary extension), any number up to ``--max_batch``."""
        return [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return ResponseBuilder(self.config.top_k).v2_output_types()

    def use_predictor(self, config: PredictorConfig) -> None:
        self._predictor_config = config

    @property
    def predictor_config(self) -> PredictorConfig | None:
        # KServe keeps the predictor's address in a context variable that its worker processes
        # (--workers > 1) do not inherit; the model carries its own copy into them.
        return self._predictor_config or super().predictor_config

    @property
    def predictor_detail(self) -> str:
        """Why the predictor is (not) ready: :class:`serving.server.PredictorAwareDataPlane`
        names it in a 503."""
        return self.predictor.detail

    @property
    def saturated(self) -> bool:
        """No photo slot free: the HTTP layer refuses new requests before reading their body."""
        return self.admission.saturated

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.capacity.workers, thread_name_prefix="normalize"
            )
        return self._executor

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
            self.predictor.host,
            result.answer.version,
            len(result.answer.classes[0]),
            self.core.spec.size,
            self.core.spec.jpeg_quality,
        )

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        """KServe's preprocess -> predict/explain -> postprocess, with the photo slots the request
        took released on every exit (:meth:`snapcat.serve.admission.Admission.holding`)."""
        if verb not in (InferenceVerb.PREDICT, InferenceVerb.EXPLAIN):
            # Refused before its photos are decoded.
            raise NotServedError(f"{verb.value} is not served by this model; use :predict")
        token = _VERB.set(verb)
        try:
            with self.admission.holding():
                return await super().__call__(body, headers, verb)
        finally:
            _VERB.reset(token)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        core = self.core
        if not core.spec_learned:  # a request before the first readiness check
            await self.learn_model()
        with stage_cpu("decode"):
            if isinstance(payload, InferRequest):
                items = core.parse_v2(payload.inputs)
                protocol, request_id = "v2", payload.id
            else:
                items = core.parse_v1(payload)
                protocol, request_id = "v1", (headers or {}).get("x-request-id")
        explaining = _VERB.get() == InferenceVerb.EXPLAIN
        if explaining:  # heavier per photo: snapcat.serve.explain.EXPLAIN_SLOTS
            indices = explain.class_indices(payload, len(items), len(core.classes) or None)
        count = self.admission.admit(len(items) * (explain.EXPLAIN_SLOTS if explaining else 1))
        try:
            canonical = await self._normalize_all(items)
            with stage_cpu("predictor_call"):
                if explaining:
                    body = explain.predictor_body(canonical, indices)
                    return PredictorCall(
                        protocol, len(canonical), body, request_id, count, canonical
                    )
                body = core.predictor_body(canonical)
            return PredictorCall(protocol, len(canonical), body, request_id, count)
        except BaseException:
            self.admission.release(count)
            raise

    async def _normalize_all(self, items) -> list[bytes]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.photo_deadline

        async def normalize(index: int, item):
            if isinstance(item, InstanceError):
                return item
            return await loop.run_in_executor(self.executor, self._normalize, index, item, deadline)

        try:
            # The deadline is checked before each decode; this bounds the whole batch as well.
            async with asyncio.timeout(self.config.photo_deadline * 2):
                if len(items) == 1:  # the usual request: no task for gather to wrap it in
                    results = [await normalize(0, items[0])]
                else:
                    results = await asyncio.gather(
                        *(normalize(i, item) for i, item in enumerate(items))
                    )
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
            with stage_cpu("normalize"):  # this worker thread's CPU
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
            self.admission.release(call.admitted)

    async def explain(self, payload: Any, headers: dict[str, str] | None = None) -> PredictorResult:
        """The ``explain`` signature's answer: predict's scores plus the heat maps."""
        call: PredictorCall = payload
        try:
            body = await self.predictor.predict(call.body, call.count, headers)
            answer = self.core.read_predictions(body, call.count)
            return PredictorResult(call, answer, explain.read_explanations(body, call.count))
        finally:
            self.admission.release(call.admitted)

    async def _call_predictor(self, call: PredictorCall, headers) -> PredictorResult:
        with stage_cpu("predictor_call"):
            body = await self.predictor.predict(call.body, call.count, headers)
            return PredictorResult(call, self.core.read_predictions(body, call.count))

    async def postprocess(
        self,
        result: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        if result.explanations is not None:  # :explain (V1 only); overlays encoded off the loop
            return await asyncio.get_running_loop().run_in_executor(
                self.executor,
                explain.v1_response,
                self.responses,
                result.answer,
                result.explanations,
                result.call.photos,
            )
        with stage_cpu("response"):
            # For the live metrics (serving/version_metrics.py), which never read the body.
            version_metrics.note_answer(result.answer.version, self.responses.tops(result.answer))
            if result.call.protocol == "v1":
                return self.responses.v1_response(result.answer)
            outputs = [
                InferOutput(
                    name=o["name"], shape=o["shape"], datatype=o["datatype"], data=o["data"]
                )
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
        ok, detail = await self.predictor.status(self.core.model_version)
        if ok and not self.core.spec_learned:
            try:
                await self.learn_model()
            except (PredictorUnavailableError, PredictorResponseError) as exc:
                ok, detail = False, f"the probe prediction failed: {exc.message}"
        self.predictor.note(ok, detail)
        return ok

    def stop(self) -> None:
        super().stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
