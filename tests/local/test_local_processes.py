"""``wait_http_ok``, the one readiness wait of the local stack, the e2e and the image tests."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from snapcat.local.processes import free_port, wait_http_ok


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.send_response(200 if self.path == "/ready" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_returns_once_the_url_answers_200(server):
    wait_http_ok(f"{server}/ready", timeout=10, alive=lambda: True)


def test_a_stopped_server_fails_at_once_not_at_the_timeout():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stopped before"):
        wait_http_ok(f"http://127.0.0.1:{free_port()}/ready", timeout=30, alive=lambda: False)
    assert time.monotonic() - started < 5


def test_not_ready_in_time_says_what_it_last_got(server):
    with pytest.raises(TimeoutError, match="HTTP 503"):
        wait_http_ok(f"{server}/not-yet", timeout=1, interval=0.1)
