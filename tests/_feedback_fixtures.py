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

from snapcat.local.processes import free_port, wait_http_ok


class Sink:
    """``snapcat feedback serve`` as a child process."""

    def __init__(self, store: Path, logs: Path, port: int | None = None):
        self.store, self.logs = store, logs
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

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


def logger_event(url: str, kind: str, call_id: str, body: dict) -> httpx.Response:
    """POSTs what KServe's logger sends for one side of a call (pkg/logger/worker.go)."""
    attributes = {
        "id": call_id, "type": kind, "source": "http://localhost:9081/",
        "inferenceservicename": "listing-category", "namespace": "snapcat",
        "component": "transformer", "endpoint": "canary", "metadata": "{}",
        "datacontenttype": "application/json",
    }  # fmt: skip
    headers, data = to_binary(CloudEvent(attributes, json.dumps(body).encode()))
    return httpx.post(url, headers=headers, content=data, timeout=30)
