"""A stand-in Kubeflow Pipelines API on 127.0.0.1, for the tests that submit runs (import the
fixture into a test module: ``fake_kfp = _fake_kfp.fake_kfp``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _FakeKfp(BaseHTTPRequestHandler):
    """Just enough of the KFP v2beta1 REST API for kfp.Client to create runs; records requests."""

    requests: list[tuple[str, str, dict | None]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": False})
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiments": [], "total_size": 0})
        self.send_error(404)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            return self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        if self.path == "/apis/v2beta1/runs":
            return self._reply({"run_id": "run-1", "display_name": body.get("display_name")})
        if self.path == "/apis/v2beta1/recurringruns":
            return self._reply({"recurring_run_id": "rec-1"})
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_kfp():
    _FakeKfp.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeKfp.requests
    server.shutdown()
    server.server_close()
