"""Who may write to the feedback sink, and how fast (issue 25).

- **The app backend** (sellers' final categories) and any other writer authenticate with a bearer
  token (``Authorization: Bearer <token>``) read from a file (a mounted Kubernetes Secret, named by
  ``--token-file`` or ``SNAPCAT_FEEDBACK_TOKEN_FILE``), compared in constant time.
- **KServe's payload logger** cannot send a header of our choosing (its ``logger`` spec has a URL,
  a mode, TLS and metadata headers, no credentials), so its events are taken without a token only
  on a separate *logger port*, which the sink's NetworkPolicy opens to the InferenceService's pods
  alone (manifests/feedback). Even there, a response is stored only when each ``prediction_id`` is
  signed by the transformer (:mod:`snapcat.contract.prediction_signing`).

A caller (its address) gets ``rate`` requests a second, ``burst`` at once (a token bucket); past
that 429 with ``Retry-After``. Behind a proxy every caller would have the proxy's address and share
one budget: the proxies in ``--forwarded-allow-ips`` are trusted to name the caller in
``X-Forwarded-For`` (uvicorn's proxy-headers middleware reads it; anyone else's is ignored).
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

TOKEN_ENV = "SNAPCAT_FEEDBACK_TOKEN_FILE"
MIN_TOKEN_CHARS = 32
#: Callers remembered by the rate limiter; the least recently seen are forgotten past this.
MAX_CALLERS = 10_000
RATE, BURST = 200.0, 400.0  # requests a second per caller, and at once (a logger pod's traffic)
#: Proxies trusted to name the caller (uvicorn's own default: a sidecar on the pod's loopback).
FORWARDED_ALLOW_IPS = "127.0.0.1"


class TokenError(ValueError):
    """The token file is missing or too short to be a secret."""


def read_token(path: str | os.PathLike) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise TokenError(f"cannot read the feedback token file {path}: {exc}") from None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(
            f"the feedback token in {path} must be one word of at least {MIN_TOKEN_CHARS} "
            "characters (e.g. `openssl rand -hex 32`)"
        )
    return token


def write_token_file(path: str | os.PathLike) -> Path:
    """A fresh random token (mode 0600): what the local stack and tests use."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return target


class BearerAuth:
    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        return hmac.compare_digest(header.strip().encode("utf-8", "replace"), self._expected)


class RateLimiter:
    """A token bucket per caller: ``rate`` per second, ``burst`` at once. One event loop calls
    it, so it needs no lock."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, caller: str) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, last = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[caller] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_CALLERS:
            self._buckets.popitem(last=False)
        return allowed
