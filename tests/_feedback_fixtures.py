"""The feedback sink as a child process, and what KServe's payload logger posts to it: shared by
the feedback tests and the serving round trip (tests/serve/test_serving_e2e.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from snapcat.contract.prediction_signing import KeyRing, write_key_folder
from snapcat.feedback.access import write_token_file
from snapcat.local.processes import free_port, wait_http_ok


class Sink:
    """``snapcat feedback serve`` as a child process, with a token and the transformer's keys as
    a cluster's Secrets would hold them (beside ``store``; kept across restarts), an API port
    (``url``: writes need the token) and a logger port (``logger_url``: KServe's logger)."""

    def __init__(
        self,
        store: Path,
        logs: Path,
        port: int | None = None,
        *,
        logger_port: int | None = None,
        keys: Path | str | None = None,
        extra: tuple[str, ...] = (),
    ):
        self.store, self.logs = store, logs
        self.port = port or free_port()
        self.logger_port = logger_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logger_url = f"http://127.0.0.1:{self.logger_port}"
        secrets = store.parent / f"{store.name}-secrets"
        self.keys = Path(keys) if keys else secrets / "prediction-keys"
        if not (self.keys / "current").exists() and not self.keys.is_file():
            write_key_folder(self.keys)
        self.token_file = secrets / "token"
        if not self.token_file.exists():
            write_token_file(self.token_file)
        self.token = self.token_file.read_text().strip()
        self.auth = {"authorization": f"Bearer {self.token}"}
        self.ring = KeyRing.load(self.keys)
        self.extra = extra
        self.process: subprocess.Popen | None = None

    def sign(self, version: str, top: list[str], confident: bool = False) -> str:
        """A prediction id as the transformer with these keys would answer it."""
        return self.ring.sign(version, top, confident)

    def start(self) -> Sink:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snapcat.cli",
                "feedback",
                "serve",
                "--store",
                str(self.store),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--logger-port",
                str(self.logger_port),
                "--keys",
                str(self.keys),
                "--token-file",
                str(self.token_file),
                *self.extra,
            ],  # fmt: skip
            stdout=open(self.logs, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_http_ok(f"{self.url}/healthz", timeout=60, processes=[self.process])
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a node failure."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


def logger_event(
    url: str, kind: str, call_id: str, body: dict, headers: dict | None = None
) -> httpx.Response:
    """POSTs what KServe's logger sends for one side of a call (pkg/logger/worker.go); to the
    sink's ``logger_url`` (or its ``url`` with the token in ``headers``)."""
    attributes = {
        "id": call_id, "type": kind, "source": "http://localhost:9081/",
        "inferenceservicename": "listing-category", "namespace": "snapcat",
        "component": "transformer", "endpoint": "canary", "metadata": "{}",
        "datacontenttype": "application/json",
    }  # fmt: skip
    event_headers, data = to_binary(CloudEvent(attributes, json.dumps(body).encode()))
    return httpx.post(url, headers={**event_headers, **(headers or {})}, content=data, timeout=30)
