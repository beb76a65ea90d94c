"""The transformer's client of TF Serving's REST API: ``POST /v1/models/<name>:predict`` with a
bounded timeout, and ``GET /v1/models/<name>`` for readiness.

A refused connection or a timeout is :class:`snapcat.serve.errors.PredictorUnavailableError`
(HTTP 503) at once; nothing is cached, so the next request after the predictor comes back
succeeds. The predictor's own error text (stack traces, paths, tensor names) is logged, never
passed to clients.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import httpx
import orjson
from kserve.predictor_config import PredictorConfig

from serving.kserve_adapter import append_forwardable_headers
from serving.metrics import PREDICTOR_BYTES, PREDICTOR_IMAGES, PREDICTOR_SECONDS
from snapcat.serve.errors import PredictorResponseError, PredictorUnavailableError

logger = logging.getLogger("snapcat.serving")

#: Seconds a readiness probe waits for the predictor at most.
HEALTH_TIMEOUT = 2.0


class PredictorClient:
    """``config()`` is the predictor's address as KServe passes it (read per call: it is set after
    the model is built)."""

    def __init__(
        self, model_name: str, timeout: float, config: Callable[[], PredictorConfig | None]
    ):
        self.model_name = model_name
        self.timeout = timeout
        self.config = config
        self.detail = ""  # the last thing learned about the predictor, for readiness answers
        self._ok: bool | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def host(self) -> str:
        config = self.config()
        return config.predictor_host if config else ""

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 3.0)),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                verify=ca_bundle or True,
            )
        return self._client

    def model_url(self, suffix: str = "") -> str:
        base = self.config().predictor_base_url.rstrip("/")
        return f"{base}/v1/models/{self.model_name}{suffix}"

    async def predict(self, body: bytes, count: int, headers: dict[str, str] | None) -> dict:
        """TF Serving's answer (parsed JSON) to a REST predict ``body`` of ``count`` photos."""
        url = self.model_url(":predict")
        send_headers = append_forwardable_headers(headers, {"content-type": "application/json"})
        start = time.perf_counter()
        for attempt in (1, 2):
            try:
                response = await self.client.post(url, content=body, headers=send_headers)
                break
            except httpx.TimeoutException:
                self.note(False, "timeout")
                raise PredictorUnavailableError(
                    f"the predictor at {self.host} did not answer within {self.timeout:g} s"
                ) from None
            except httpx.TransportError as exc:
                # A keep-alive connection the predictor closed (e.g. it restarted) fails once;
                # predict has no side effects, so one immediate retry on a new connection is safe.
                if attempt == 1 and not isinstance(exc, httpx.ConnectError):
                    continue
                self.note(False, str(exc) or type(exc).__name__)
                raise PredictorUnavailableError(
                    f"the predictor at {self.host} is unreachable: {str(exc) or type(exc).__name__}"
                ) from None
        PREDICTOR_SECONDS.labels(self.model_name).observe(time.perf_counter() - start)
        PREDICTOR_BYTES.labels(self.model_name).inc(len(body))
        PREDICTOR_IMAGES.labels(self.model_name).inc(count)
        self.note(response.status_code == 200, f"HTTP {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if response.status_code != 200:
            detail = answer.get("error") if isinstance(answer, dict) else response.text
            logger.warning(
                "predictor %s answered HTTP %d: %s",
                self.host,
                response.status_code,
                str(detail)[:500],
            )
            if response.status_code in (404, 429, 503):
                raise PredictorUnavailableError(
                    f"the predictor cannot serve model '{self.model_name}' now "
                    f"(HTTP {response.status_code})"
                )
            raise PredictorResponseError(
                f"the predictor answered HTTP {response.status_code}; see the transformer's log"
            )
        if answer is None:
            raise PredictorResponseError("the predictor's answer is not JSON")
        return answer

    async def status(self, answered: str | None) -> tuple[bool, str]:
        """(the predictor has a version of the model AVAILABLE, why); ``answered`` is the version
        that answered last, named when it is no longer available."""
        try:
            response = await self.client.get(self.model_url(), timeout=HEALTH_TIMEOUT)
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
        if answered is not None and answered not in available:
            detail += f"; last answer from version {answered}"
        return True, detail

    def note(self, ok: bool, detail: str) -> None:
        """Keeps ``detail`` for readiness answers and logs when readiness changes."""
        self.detail = f"predictor {self.host}: {detail}"
        if ok != self._ok:
            if ok:
                logger.info("predictor %s: ready (%s)", self.host, detail)
            else:
                logger.warning("predictor %s: not ready (%s)", self.host, detail)
            self._ok = ok
