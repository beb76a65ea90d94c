"""Instant queries against Prometheus's HTTP API (``GET /api/v1/query``), as plain numbers.

A thin client: the analysis only needs instant vectors, and failing loudly (unreachable server,
bad query, non-vector result) matters more than coverage of the API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import requests

from snapcat.rollout.isvc import RolloutError


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, *, timeout: float = 10.0, session: requests.Session | None = None):
        if not url.startswith(("http://", "https://")):
            raise RolloutError(f"Prometheus URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def query(self, promql: str) -> list[Sample]:
        """The instant vector ``promql`` evaluates to now; NaN samples (e.g. a quantile of no
        traffic) are dropped."""
        endpoint = f"{self.url}/api/v1/query"
        try:
            response = self.session.get(endpoint, params={"query": promql}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RolloutError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            detail = body.get("error") or response.text[:200]
            raise RolloutError(
                f"Prometheus refused the query {promql!r} (HTTP {response.status_code}): {detail}"
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise RolloutError(
                f"Prometheus answered {promql!r} with a {data.get('resultType')}, not a vector"
            )
        samples = []
        for item in data.get("result") or []:
            try:
                value = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise RolloutError(f"Prometheus sent a malformed sample for {promql!r}") from exc
            if not math.isnan(value):
                samples.append(Sample(dict(item.get("metric") or {}), value))
        return samples
