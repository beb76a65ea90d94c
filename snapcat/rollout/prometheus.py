"""Instant queries against Prometheus's HTTP API (``GET /api/v1/query``), as plain numbers.

A thin client: the analysis only needs instant vectors, and failing loudly (unreachable server,
bad query, non-vector result) matters more than coverage of the API.

Every answer is bounded before it is parsed, because a release decision must not hang or swell
on a misbehaving server:

- in time: each query ends by ``min(timeout, deadline)`` however the server sends its answer (a
  server that drips one byte a second never trips a per-read socket timeout, so the whole request
  runs in a worker thread the caller stops waiting for);
- in size: at most ``max_bytes`` of body (checked on ``Content-Length`` first, then while
  reading) and ``max_samples`` samples; the analysis asks for a handful of series per version,
  so an answer thousands of samples long is not the evidence asked for;
- in shape: anything but ``{"status": "success", "data": {"resultType": "vector", "result":
  [{"metric": {...}, "value": [t, "number"]}, ...]}}`` is a :class:`RolloutError` in one line.

Values are returned as Prometheus sent them, NaN and ±Inf included: what counts as usable
evidence is the analysis's decision (:mod:`snapcat.rollout.evidence`), not the transport's.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import requests

from snapcat.rollout.isvc import RolloutError

#: A legitimate answer of the analysis is a few KB (two versions x a few dozen categories).
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_SAMPLES = 5000


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_samples: int = DEFAULT_MAX_SAMPLES,
    ):
        if not url.startswith(("http://", "https://")):
            raise RolloutError(f"Prometheus URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.max_bytes = max_bytes
        self.max_samples = max_samples

    def query(self, promql: str, *, deadline: float | None = None) -> list[Sample]:
        """The instant vector ``promql`` evaluates to now, answered by ``deadline`` (a
        ``time.monotonic()`` value) at the latest."""
        limit = self.timeout
        if deadline is not None:
            limit = min(limit, deadline - time.monotonic())
        if limit <= 0:
            raise RolloutError(f"no time left to ask Prometheus {promql!r} (analysis deadline)")
        status, body = self._fetch(promql, limit)
        return self._parse(promql, status, body)

    def _fetch(self, promql: str, limit: float) -> tuple[int, bytes]:
        endpoint = f"{self.url}/api/v1/query"
        box: dict = {}

        def get() -> None:
            try:
                with self.session.get(
                    endpoint, params={"query": promql}, timeout=limit, stream=True
                ) as response:
                    box["status"] = response.status_code
                    declared = response.headers.get("Content-Length", "")
                    if declared.isdigit() and int(declared) > self.max_bytes:
                        box["too_large"] = int(declared)
                        return
                    body = bytearray()
                    for chunk in response.iter_content(64 * 1024):
                        body += chunk
                        if len(body) > self.max_bytes:
                            box["too_large"] = len(body)
                            return
                    box["body"] = bytes(body)
            except requests.RequestException as exc:
                box["error"] = exc

        worker = threading.Thread(target=get, name="prometheus-query", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            raise RolloutError(
                f"Prometheus at {self.url} did not answer {promql!r} within {limit:.1f} s"
            )
        if "error" in box:
            raise RolloutError(f"cannot reach Prometheus at {self.url}: {box['error']}")
        if "too_large" in box:
            raise RolloutError(
                f"Prometheus answered {promql!r} with over {self.max_bytes} bytes "
                f"({box['too_large']}): not the few series the analysis asks for"
            )
        return box["status"], box["body"]

    def _parse(self, promql: str, status: int, raw: bytes) -> list[Sample]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else None
            if not detail:
                detail = "not a Prometheus API answer: " + raw[:120].decode("utf-8", "replace")
            raise RolloutError(
                f"Prometheus refused the query {promql!r} (HTTP {status}): "
                + " ".join(str(detail).split())
            )
        data = body.get("data")
        kind = data.get("resultType") if isinstance(data, dict) else None
        if kind != "vector":
            raise RolloutError(f"Prometheus answered {promql!r} with a {kind}, not a vector")
        result = data.get("result")
        if not isinstance(result, list):
            raise RolloutError(f"Prometheus answered {promql!r} with no result list")
        if len(result) > self.max_samples:
            raise RolloutError(
                f"Prometheus answered {promql!r} with {len(result)} samples, over the "
                f"{self.max_samples} the analysis accepts"
            )
        return [self._sample(promql, item) for item in result]

    @staticmethod
    def _sample(promql: str, item) -> Sample:
        try:
            labels = item.get("metric", {})
            value = float(item["value"][1])
            if not isinstance(labels, dict) or not isinstance(item["value"][1], str):
                raise TypeError("labels must be an object, the value a string")
            return Sample({str(k): str(v) for k, v in labels.items()}, value)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise RolloutError(
                f"Prometheus sent a malformed sample for {promql!r}: {str(item)[:120]}"
            ) from exc
