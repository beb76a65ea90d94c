"""The transformer's client of TF Serving's REST API: ``POST /v1/models/<name>:predict`` with a
bounded timeout, and ``GET /v1/models/<name>`` for readiness.

A refused connection or a timeout is :class:`snapcat.serve.errors.PredictorUnavailableError`
(HTTP 503) at once; nothing is cached, so the next request after the predictor comes back
succeeds. The predictor's own error text (stack traces, paths, tensor names) is logged, never
passed to clients.

The client is aiohttp's, one pooled keep-alive session per event loop: its C HTTP parser costs
about 0.13 CPU-ms per call where httpx's pure-Python stack cost about 0.7 (same machine, same
loopback server), a share of the transformer's CPU per photo the CPU tier's model can see.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable

import aiohttp
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
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def host(self) -> str:
        config = self.config()
        return config.predictor_host if config else ""

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled keep-alive session of the running event loop (made on first use)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            tls = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=tls, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout, sock_connect=min(self.timeout, 3.0)
                ),
            )
            self._loop = loop
        return self._session

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
                async with self.session.post(url, data=body, headers=send_headers) as response:
                    status, content = response.status, await response.read()
                break
            except TimeoutError:
                self.note(False, "timeout")
                raise PredictorUnavailableError(
                    f"the predictor at {self.host} did not answer within {self.timeout:g} s"
                ) from None
            except aiohttp.ClientError as exc:
                # A keep-alive connection the predictor closed (e.g. it restarted) fails once;
                # predict has no side effects, so one immediate retry on a new connection is safe.
                if attempt == 1 and not isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                self.note(False, str(exc) or type(exc).__name__)
                raise PredictorUnavailableError(
                    f"the predictor at {self.host} is unreachable: {str(exc) or type(exc).__name__}"
                ) from None
        PREDICTOR_SECONDS.labels(self.model_name).observe(time.perf_counter() - start)
        PREDICTOR_BYTES.labels(self.model_name).inc(len(body))
        PREDICTOR_IMAGES.labels(self.model_name).inc(count)
        self.note(status == 200, f"HTTP {status}")
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer = None
        if status != 200:
            detail = (
                answer.get("error")
                if isinstance(answer, dict)
                else content.decode("utf-8", "replace")
            )
            logger.warning(
                "predictor %s answered HTTP %d: %s", self.host, status, str(detail)[:500]
            )
            if status in (404, 429, 503):
                raise PredictorUnavailableError(
                    f"the predictor cannot serve model '{self.model_name}' now (HTTP {status})"
                )
            raise PredictorResponseError(
                f"the predictor answered HTTP {status}; see the transformer's log"
            )
        if answer is None:
            raise PredictorResponseError("the predictor's answer is not JSON")
        return answer

    async def status(self, answered: str | None) -> tuple[bool, str]:
        """(the predictor has a version of the model AVAILABLE, why); ``answered`` is the version
        that answered last, named when it is no longer available."""
        try:
            async with self.session.get(
                self.model_url(), timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT)
            ) as response:
                status, content = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        if status != 200:
            return False, f"HTTP {status}"
        try:
            statuses = orjson.loads(content)["model_version_status"]
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
