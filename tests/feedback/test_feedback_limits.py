"""Issue 24, finding 7: the feedback sink (a real ``snapcat feedback serve`` process on 127.0.0.1)
bounds what it reads: a chunked event over the cap is 413 while it streams, concurrent big events
share a cap on body bytes (503 past it), and every malformed event is a short 400, never a 500 or
an echo of what was sent."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid

import httpx
import psutil
import pytest
from _feedback_fixtures import Sink, logger_event
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from snapcat.feedback.events import REQUEST_TYPE, RESPONSE_TYPE
from snapcat.feedback.sink import MAX_EVENT_BYTES

pytestmark = pytest.mark.timeout(300)
MB = 2**20


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sink-limits")
    s = Sink(folder / "store", folder / "sink.log").start()
    yield s
    s.kill()


def _headers(kind: str = REQUEST_TYPE) -> dict:
    attributes = {"id": str(uuid.uuid4()), "type": kind, "source": "http://localhost:9081/",
                  "datacontenttype": "application/json"}  # fmt: skip
    headers, _ = to_binary(CloudEvent(attributes, b"{}"))
    return dict(headers)


class PeakRss:
    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.start = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_a_chunked_event_over_the_cap_is_413_while_it_streams(sink):
    chunk = b" " * MB
    total = MAX_EVENT_BYTES // MB + 16

    def body():
        yield b'{"instances": ['
        for _ in range(total):
            yield chunk
        yield b"]}"

    with PeakRss(sink.process.pid) as rss:
        response = httpx.post(sink.logger_url, content=body(), headers=_headers(), timeout=60)
    assert response.status_code == 413, response.text[:300]
    # was: accepted and stored whole (82 -> 1,206 MiB for 300 MiB)
    assert rss.peak - rss.start < MAX_EVENT_BYTES + 32 * MB, (rss.peak - rss.start) / MB
    assert httpx.get(f"{sink.url}/healthz").status_code == 200


def test_concurrent_big_events_share_a_cap_on_body_bytes(sink):
    """Six 50 MiB events at once (each under the per-event cap): the sink holds at most its
    in-flight cap of bodies (the others get 503 + Retry-After) instead of all six (968 MiB).
    "At once" is made so: the six start together and each streams its body over at least half
    a second, so they overlap on a loaded machine too (sent whole, a fast sink could take them
    one after another and never reach the cap)."""
    start = threading.Barrier(6)
    chunk = b" " * MB

    def body():
        start.wait(timeout=60)
        yield b'{"instances": ['
        for _ in range(50):
            yield chunk
            time.sleep(0.01)
        yield b"]}"

    def one(_):
        return httpx.post(sink.logger_url, content=body(), headers=_headers(), timeout=120)

    with PeakRss(sink.process.pid) as rss, concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(one, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, statuses
    assert all(r.headers.get("retry-after") == "1" for r in responses if r.status_code == 503)
    assert rss.peak - rss.start < 400 * MB, (rss.peak - rss.start) / MB


DEEP = b"[" * 100_000 + b"]" * 100_000
MALFORMED = [
    (REQUEST_TYPE, DEEP),
    (REQUEST_TYPE, json.dumps({"inputs": [{"name": "image_bytes", "data": 7}]}).encode()),
    (REQUEST_TYPE, json.dumps({"inputs": [{"name": "image_bytes", "data": {"a": 1}}]}).encode()),
    (REQUEST_TYPE, json.dumps({"instances": [7, None]}).encode()),
    (REQUEST_TYPE, json.dumps({"instances": "x" * 1000}).encode()),
    (RESPONSE_TYPE, json.dumps({"predictions": [{"prediction_id": 1, "categories": []}]}).encode()),
    (RESPONSE_TYPE, json.dumps({"predictions": [{"categories": ["x", 3]}]}).encode()),
    (RESPONSE_TYPE, json.dumps({"predictions": [{"categories": [{"slug": 5}]}]}).encode()),
    (
        RESPONSE_TYPE,
        json.dumps({"outputs": [{"name": "prediction_id"}, {"name": "slug"}]}).encode(),
    ),
    (
        RESPONSE_TYPE,
        json.dumps(
            {"outputs": [{"name": "prediction_id", "data": 3}, {"name": "slug", "data": "x"}]}
        ).encode(),
    ),
    (
        RESPONSE_TYPE,
        json.dumps(
            {
                "outputs": [
                    {"name": "prediction_id", "data": ["a" * 32]},
                    {"name": "slug", "data": ["x"], "shape": ["k"]},
                ]
            }
        ).encode(),
    ),
    (RESPONSE_TYPE, json.dumps({"predictions": [{"prediction_id": "Z" * 100_000}]}).encode()),
    (RESPONSE_TYPE, b"[1, 2]"),
    (RESPONSE_TYPE, b"\xff\xfe not json"),
]


@pytest.mark.parametrize("kind,body", MALFORMED, ids=range(len(MALFORMED)))
def test_every_malformed_event_is_a_short_400(sink, kind, body):
    response = httpx.post(sink.logger_url, content=body, headers=_headers(kind), timeout=30)
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 400, response.text[:400]


def test_structured_events_with_odd_ids_are_400(sink):
    for event in ({"specversion": "1.0", "id": 7, "type": REQUEST_TYPE, "source": "x"},
                  {"specversion": "1.0", "id": ["a"], "type": REQUEST_TYPE, "source": "x"}):  # fmt: skip
        response = httpx.post(
            sink.logger_url,
            content=json.dumps(event).encode(),
            headers={"content-type": "application/cloudevents+json"},
            timeout=30,
        )
        assert response.status_code == 400, response.text[:300]


def test_a_long_category_is_not_echoed(sink):
    pid = sink.sign("", ["beauty"])
    logged = logger_event(
        sink.logger_url,
        RESPONSE_TYPE,
        str(uuid.uuid4()),
        {"predictions": [{"prediction_id": pid, "categories": [{"slug": "beauty"}]}]},
    )
    assert logged.status_code == 200, logged.text
    url = f"{sink.url}/v1/feedback/{pid}"
    response = httpx.put(url, json={"category": "q" * 10_000}, headers=sink.auth, timeout=30)
    assert response.status_code == 422
    assert len(response.content) < 2000
    big = httpx.put(url, json={"category": "q" * MB}, headers=sink.auth, timeout=30)
    assert big.status_code == 413
    assert len(big.content) < 400
