"""Hostile traffic, second round (issue 24), against the real transformer process (``python -m
serving``) and a stand-in for TF Serving's REST API (a thread answering its status and predict
formats, so these tests need no TensorFlow and start in a second), all on 127.0.0.1.

Each test is one attack that took the endpoint down, past its memory or past its clients before:
the ``:explain`` slot leak and body limits, refusals that reached the client as TCP resets, idle
sockets that blocked real clients, and the V2 binary-data extension.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import re
import resource
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import make_image_bytes

from snapcat.local.processes import free_port, spawn, stop_process, wait_http_ok
from snapcat.local.stack import transformer_command

MODEL = "listing-category"
MAX_REQUEST_BYTES = 2_000_000
BODY_TIMEOUT = 1.5
PHOTO = make_image_bytes("JPEG", (160, 120), seed=3)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def v1(*photos: bytes) -> bytes:
    return json.dumps({"instances": [{"image_bytes": {"b64": b64(p)}} for p in photos]}).encode()


def v2(*photos: bytes) -> bytes:
    element = {"name": "image_bytes", "datatype": "BYTES", "shape": [len(photos)]}
    return json.dumps({"inputs": [{**element, "data": [b64(p) for p in photos]}]}).encode()


# ------------------------------------------------------------------------------ the stack
class FakePredictor:
    """TF Serving's REST status and predict answers for a 3-class snapcat model; ``hold`` makes
    every predict wait (photo slots stay taken) until it is cleared."""

    def __init__(self):
        self.hold = threading.Event()
        self.release = threading.Event()
        predictor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer({"model_version_status": [{"version": "7", "state": "AVAILABLE"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if predictor.hold.is_set():
                    predictor.release.wait(30)
                row = {
                    "probabilities": [0.7, 0.2, 0.1],
                    "classes": ["a", "b", "c"],
                    "labels": ["A", "B", "C"],
                    "confidence_threshold": 0.5,
                    "model_version": "7",
                    "image_size": 71,
                    "jpeg_quality": 90,
                }
                if body.get("signature_name") == "explain":  # the explain signature's extras
                    row = {**row, "heat_map": [[0.5] * 14] * 14, "explained_class": 0}
                self._answer({"predictions": [row] * len(body["instances"])})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Transformer:
    def __init__(self, predictor: FakePredictor, log, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = transformer_command(
            predictor_host=f"127.0.0.1:{predictor.port}",
            port=self.port,
            model_name=MODEL,
            extra=[
                f"--max_request_bytes={MAX_REQUEST_BYTES}",
                f"--body_timeout={BODY_TIMEOUT}",
                "--header_timeout=5",
                "--max_photos_in_flight=4",
                "--enable_latency_logging=false",
                *extra,
            ],
        )
        self.process = spawn(command, log)
        wait_http_ok(f"{self.url}/v1/models/{MODEL}", 120, [self.process])

    def gauges(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        names = (
            "snapcat_photos_in_flight",
            "snapcat_requests_in_flight",
            "snapcat_request_body_bytes_in_flight",
            "snapcat_decode_bytes_reserved",
        )
        found = {}
        for name in names:
            match = re.search(rf"^{name} (\S+)$", text, re.M)
            found[name] = float(match[1]) if match else float("nan")
        return found

    def gauges_idle(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return float(re.search(r"^snapcat_idle_connections (\S+)$", text, re.M)[1])

    def stop(self) -> None:
        stop_process(self.process, grace=10)


@pytest.fixture(scope="module")
def predictor():
    fake = FakePredictor()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(predictor, tmp_path_factory):
    transformer = Transformer(predictor, tmp_path_factory.mktemp("t") / "transformer.log")
    yield transformer
    transformer.stop()


def _raw(port: int, data: bytes, timeout: float = 10.0, half_close: bool = False) -> bytes:
    """Sends ``data`` whole, then reads the answer: what a client that uploads before reading
    (requests, httpx, curl) sees. Raises ``ConnectionError`` on a reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _head(path: str, length: int | None, extra: str = "", method: str = "POST") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{size}{extra}\r\n"
    ).encode()


def _status(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return int(match[1]) if match else 0


def _wait_idle(server: Transformer, timeout: float = 10.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        gauges = server.gauges()
        if not any(gauges.values()) or time.monotonic() > deadline:
            return gauges
        time.sleep(0.1)


# ------------------------------------------------------------------------------ finding 1, 2
BODY_ROUTES = (
    f"/v1/models/{MODEL}:predict",
    f"/v1/models/{MODEL}:explain",
    f"/v2/models/{MODEL}/infer",
    f"/v2/models/{MODEL}/versions/7/infer",
)


def test_every_body_route_releases_what_it_took(server):
    """Each route taking a body, many times, with good, bad and abandoned bodies: afterwards no
    photo slot, request slot, body byte or decode reservation is still held, and predict works.
    (Two :explain requests used to hold all 4 photo slots for good.)"""
    with httpx.Client(timeout=30, headers={"content-type": "application/json"}) as http:
        statuses: dict[str, set[int]] = {}
        for path in BODY_ROUTES:
            # the previous route's abandoned requests finish first: two explained photos take
            # all 4 slots (snapcat.serve.explain.EXPLAIN_SLOTS), so any overlap would be a 503
            assert not any(_wait_idle(server).values())
            body = v2(PHOTO, PHOTO) if "/v2/" in path else v1(PHOTO, PHOTO)
            for _ in range(6):
                response = http.post(f"{server.url}{path}", content=body)
                statuses.setdefault(path, set()).add(response.status_code)
                http.post(f"{server.url}{path}", content=b"{bad")
                http.post(f"{server.url}{path}", content=v1(b"not a photo"))
            # a client that goes away mid-body, and one that goes away after sending it all
            for cut in (True, False):
                with socket.create_connection(("127.0.0.1", server.port)) as sock:
                    sock.sendall(_head(path, len(body)) + (body[:100] if cut else body))
        # KServe serves no model versions by path (501)
        assert statuses == {
            BODY_ROUTES[0]: {200},
            BODY_ROUTES[1]: {200},
            BODY_ROUTES[2]: {200},
            BODY_ROUTES[3]: {501},
        }, statuses
        gauges = _wait_idle(server)
        assert not any(gauges.values()), gauges
        for _ in range(3):
            assert http.post(f"{server.url}{BODY_ROUTES[0]}", content=v1(PHOTO)).status_code == 200


def test_explain_gets_every_body_limit(server):
    path = f"/v1/models/{MODEL}:explain"
    # chunked, past max_request_bytes: 413 while it streams (was: accepted whole)
    chunk = b"a" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"
    answer = _raw(server.port, _head(path, None, "Transfer-Encoding: chunked\r\n") + chunked)
    assert _status(answer) == 413, answer[:300]
    # declared too large: 413 before reading it
    answer = _raw(server.port, _head(path, 50_000_000), timeout=5, half_close=True)
    assert _status(answer) == 413, answer[:300]
    # a body trickling in: 408 after the body timeout (was: held 70 s)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_head(path, 100_000))
        answer = b""
        deadline = time.monotonic() + BODY_TIMEOUT + 8
        sock.settimeout(0.3)
        while not answer and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendall(b"{")
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(4096)
    assert _status(answer) == 408, answer[:300]
    assert not any(_wait_idle(server).values())


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", f"/v2/models/{MODEL}/generate"),
        ("POST", f"/v1/models/{MODEL}"),
        ("PUT", f"/v1/models/{MODEL}:predict"),
        ("DELETE", f"/v2/models/{MODEL}"),
        ("POST", "/v2/repository/models/x/load"),
        ("POST", "/openai/v1/completions"),
    ],
)
def test_routes_not_served_are_404_before_the_body_is_read(server, method, path):
    # 40 MB declared, nothing sent: the answer comes at once, without waiting for a byte of it
    answer = _raw(server.port, _head(path, 40_000_000, method=method), timeout=5, half_close=True)
    assert _status(answer) == 404, answer[:300]


# ------------------------------------------------------------------------------ finding 4
def test_refusals_reach_clients_that_upload_before_reading(server):
    """A client that sends its whole body before reading gets the refusal, not a reset: 413 by
    Content-Length on a 4 MB upload, 404 on a route not served, repeatedly."""
    big = b"x" * 4_000_000
    for path, status in ((BODY_ROUTES[0], 413), (f"/v2/models/{MODEL}/generate", 404)):
        for _ in range(10):
            answer = _raw(server.port, _head(path, len(big)) + big)
            assert _status(answer) == status, answer[:200]


def test_a_flood_of_big_uploads_is_shed_with_answers_not_resets(predictor, server):
    """Photo slots full (the predictor holds every request), 48 concurrent 1.5 MB uploads: every
    one gets an HTTP status (503 + Retry-After), none a connection reset."""
    predictor.release.clear()
    predictor.hold.set()
    body = v1(b"\xff\xd8" + b"j" * 1_100_000)
    holders = concurrent.futures.ThreadPoolExecutor(4)
    try:
        held = [
            holders.submit(
                httpx.post, f"{server.url}{BODY_ROUTES[0]}", content=v1(PHOTO), timeout=60
            )
            for _ in range(4)
        ]
        deadline = time.monotonic() + 20
        while server.gauges()["snapcat_photos_in_flight"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)

        def one(_):
            try:
                return _status(_raw(server.port, _head(BODY_ROUTES[0], len(body)) + body))
            except OSError:
                return 0

        with concurrent.futures.ThreadPoolExecutor(48) as pool:
            statuses = list(pool.map(one, range(96)))
        answered = sum(1 for s in statuses if s) / len(statuses)
        assert answered >= 0.99, statuses
        assert set(statuses) <= {503}, statuses
    finally:
        predictor.release.set()
        predictor.hold.clear()
        for future in held:
            future.result()
        holders.shutdown()
    assert not any(_wait_idle(server).values())


def test_an_explained_photo_takes_two_photo_slots(predictor, server):
    """:explain costs the transformer a PNG overlay encode per photo (several times its work on a
    predicted photo) and ~5x the answer bytes, so admission counts each explained photo twice: two
    held one-photo explains fill a 4-slot transformer (a third request is shed with 503), and
    every slot comes back when they end."""
    predictor.release.clear()
    predictor.hold.set()
    explain = f"{server.url}/v1/models/{MODEL}:explain"
    holders = concurrent.futures.ThreadPoolExecutor(2)
    try:
        held = [
            holders.submit(httpx.post, explain, content=v1(PHOTO), timeout=60) for _ in range(2)
        ]
        deadline = time.monotonic() + 20
        while server.gauges()["snapcat_photos_in_flight"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.gauges()["snapcat_photos_in_flight"] == 4
        shed = httpx.post(f"{server.url}{BODY_ROUTES[0]}", content=v1(PHOTO), timeout=30)
        assert shed.status_code == 503, shed.text
    finally:
        predictor.release.set()
        predictor.hold.clear()
        answers = [future.result() for future in held]
        holders.shutdown()
    assert [a.status_code for a in answers] == [200, 200]
    explanation = answers[0].json()["predictions"][0]["explanation"]
    assert explanation["slug"] == "a" and len(explanation["heat_map"]) == 14
    assert base64.b64decode(explanation["overlay_png"]).startswith(b"\x89PNG")
    assert not any(_wait_idle(server).values())


# ------------------------------------------------------------------------------ finding 5
def _raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.mark.parametrize("slowloris", [False, True], ids=["idle", "slowloris"])
def test_idle_and_slow_sockets_do_not_block_real_requests(server, slowloris):
    count = 1100 if slowloris else 2000
    _raise_open_files(count + 512)
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if slowloris:
                sock.sendall(b"POST /v1/models/x:predict HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        with httpx.Client(timeout=10) as http:
            statuses = [
                http.post(f"{server.url}{BODY_ROUTES[0]}", content=v1(PHOTO)).status_code
                for _ in range(10)
            ]
        assert statuses == [200] * 10, statuses
        # the idle set stays within its cap (the longest idle are closed)
        assert server.gauges_idle() <= 512
    finally:
        for sock in sockets:
            sock.close()


# ------------------------------------------------------------------------------ finding 6
def _binary_v2(photos: list[bytes], *, shape=None, size_delta=0, header=None, extra=b""):
    raw = b"".join(struct.pack("<I", len(p)) + p for p in photos)
    document = {
        "inputs": [
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": shape if shape is not None else [len(photos)],
                "parameters": {"binary_data_size": len(raw) + size_delta},
            }
        ]
    }
    head = json.dumps(document).encode()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)) if header is None else header,
    }
    return head + raw + extra, headers


def test_v2_binary_data_extension_works(server):
    url = f"{server.url}/v2/models/{MODEL}/infer"
    body, headers = _binary_v2([PHOTO, PHOTO])
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text[:500]
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["prediction_id"]["shape"] == [2]
    # the same photos as JSON get the same answer
    json_answer = httpx.post(
        url, content=v2(PHOTO, PHOTO), headers={"content-type": "application/json"}, timeout=30
    ).json()
    assert [o["data"] for o in json_answer["outputs"] if o["name"] != "prediction_id"] == [
        o["data"] for o in response.json()["outputs"] if o["name"] != "prediction_id"
    ]


MARKER = b"SECRET-PHOTO-BYTES-" * 50


@pytest.mark.parametrize(
    "case",
    [
        {"header": "abc"},
        {"header": "-5"},
        {"header": "99999999"},
        {"size_delta": -(10**6)},
        {"size_delta": 7},
        {"shape": [3]},
        {"shape": [1, 2]},
        {"shape": "two"},
        {"shape": [-2]},
        {"extra": b"trailing"},
    ],
    ids=lambda c: next(iter(c)) + "=" + str(next(iter(c.values())))[:12],
)
def test_malformed_v2_binary_requests_are_400_and_echo_nothing(server, case):
    body, headers = _binary_v2([PHOTO[:200] + MARKER, MARKER], **case)
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer", content=body, headers=headers, timeout=30
    )
    assert response.status_code == 400, response.text[:500]
    assert b"SECRET" not in response.content
    assert len(response.content) < 500


@pytest.mark.parametrize(
    "inputs",
    [
        [{"name": "image_bytes", "datatype": "BYTES", "shape": "x", "data": ["a"]}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1], "data": ["a"]}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [1, 1, 1], "data": ["a"]}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [2], "data": ["a"]}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": {"a": 1}}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [[["a"]]]}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [7]}],
        [{"name": "image_bytes", "datatype": "FP32", "shape": [1], "data": [1.0]}],
        [{"name": "image_bytes", "datatype": "BYTES", "shape": [1]}],
        "not a list",
    ],
)
def test_malformed_v2_json_shapes_are_400(server, inputs):
    response = httpx.post(
        f"{server.url}/v2/models/{MODEL}/infer",
        content=json.dumps({"inputs": inputs}).encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text[:500]
