"""Canary analysis on garbage: every way Prometheus's answer can be incomplete or invalid, against
a fake Prometheus on 127.0.0.1 (the canned numbers of tests/rollout/test_rollout_analysis.py, tampered
with per case). None of them may end in PROMOTE: unusable or missing evidence means WAIT, and
ROLLBACK once a waiting analysis runs out of time; answers that are too big, malformed or too slow
are one-line errors (exit 2) within the analysis's deadline.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from _fake_prometheus import STABLE, FakePrometheus, version

from snapcat import rollout
from snapcat.cli import main
from snapcat.contract import metric_names as m


def _is(query: str, what: str) -> bool:
    return {
        "outcomes": m.REQUESTS in query and "outcome" in query,
        "p95": query.startswith("histogram_quantile"),
        "categories": m.PREDICTIONS in query,
        "scores": f"{m.TOP1_SCORE}_bucket" in query,
    }[what]


def only_requests(query, result):
    return result if _is(query, "outcomes") else []


def nan_but_requests(query, result):
    if _is(query, "outcomes"):
        return result
    return [{**s, "value": [s["value"][0], "NaN"]} for s in result]


def set_value(what, version_, value, label=None):
    def tamper(query, result):
        if not _is(query, what):
            return result
        return [
            {**s, "value": [s["value"][0], value]}
            if s["metric"]["model_version"] == version_
            and (label is None or label in s["metric"].values())
            else s
            for s in result
        ]

    return tamper


def duplicated(version_):
    def tamper(query, result):
        return result + [s for s in result if s["metric"]["model_version"] == version_]

    return tamper


#: (id, canary, tamper, missing evidence the report must name)
GARBAGE = [
    ("only request counts", version(), only_requests, "p95 latency: no latency data"),
    ("every other series NaN", version(), nan_but_requests, "category mix"),
    ("30% errors, ok +Inf", version(errors=300), set_value("outcomes", "2", "+Inf", m.OK),
     "is not a count"),
    ("stable duplicated", version(errors=300), duplicated("1"), "the same series twice"),
    ("canary p95 zero", version(), set_value("p95", "2", "0"), "impossible"),
    ("canary p95 negative", version(), set_value("p95", "2", "-0.2"), "is not a count"),
    ("categories +Inf", version(), set_value("categories", "2", "+Inf", "books"),
     "is not a count"),
    ("categories negative", version(), set_value("categories", "2", "-40", "books"),
     "is not a count"),
    ("score histogram not cumulative", version(), set_value("scores", "2", "5000", "0.5"),
     "top-1 scores: no score histogram"),
]  # fmt: skip


class _QuietServer(ThreadingHTTPServer):
    """The client hangs up on oversized or slow answers by design: not an error to print (it
    would land in the stderr the tests read)."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def serve():
    """serve(handler_factory) -> base URL of a server on 127.0.0.1 that answers every GET with
    ``respond(handler, query)``; all stopped at the end."""
    servers, stop = [], threading.Event()

    def make(respond):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                respond(self, query, stop)

            def log_message(self, *args):
                pass

        server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield make
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()


def send(handler, code: int, data: bytes) -> None:
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    with contextlib.suppress(OSError):  # the client stopped reading (too large): expected
        handler.wfile.write(data)


def tampered(canary: dict, tamper):
    fake = FakePrometheus({"1": STABLE, "2": canary})

    def respond(handler, query, _stop):
        code, body = fake.answer(query)
        if code == 200:
            body["data"]["result"] = tamper(query, body["data"]["result"])
        send(handler, code, json.dumps(body).encode())

    return respond


def analyze(url: str, wait: float = 0.0):
    return rollout.analyze(
        rollout.Prometheus(url), canary_version="2", stable_version="1",
        wait_timeout=wait, interval=0.05,
    )  # fmt: skip


@pytest.mark.parametrize(("canary", "tamper", "named"), [g[1:] for g in GARBAGE],
                         ids=[g[0] for g in GARBAGE])  # fmt: skip
def test_garbage_never_promotes(serve, canary, tamper, named):
    url = serve(tampered(canary, tamper))
    once = analyze(url)
    assert once.decision == "wait", once.explain()
    assert any(named in text for text in once.missing), once.missing
    waited = analyze(url, wait=0.3)
    assert waited.decision == "rollback", waited.explain()
    assert all("still unusable or incomplete" in r for r in waited.reasons)
    assert any(named in r for r in waited.reasons)


def test_every_request_a_client_error_is_no_evidence(serve, capsys):
    url = serve(tampered(version(requests=1000, bad=1000), lambda q, r: r))
    decision = analyze(url)
    assert decision.decision == "wait"
    assert "the canary version 2 served 0 of the 200 requests needed" in decision.reasons
    code = main(["rollout", "analyze", "--prometheus-url", url, "--canary-version", "2",
                 "--stable-version", "1"])  # fmt: skip
    assert code == 4 and "decision: WAIT" in capsys.readouterr().out


def test_the_untampered_answer_still_promotes(serve):
    """The control: the same fake, untouched, gives PROMOTE (the cases above fail on garbage)."""
    assert analyze(serve(tampered(version(), lambda q, r: r))).decision == "promote"


def huge(handler, query, _stop):
    sample = {"metric": {"model_version": "2", "category": "x"}, "value": [1.7e9, "1"]}
    body = {"status": "success", "data": {"resultType": "vector", "result": [sample] * 200_000}}
    send(handler, 200, json.dumps(body).encode())


def many_small(handler, query, _stop):
    sample = {"metric": {}, "value": [1.7e9, "1"]}
    body = {"status": "success", "data": {"resultType": "vector", "result": [sample] * 20_000}}
    send(handler, 200, json.dumps(body, separators=(",", ":")).encode())


@pytest.mark.parametrize(
    ("respond", "message"),
    [
        (huge, "with over 1048576 bytes"),
        (lambda h, q, s: send(h, 200, b'{"status": "success", "data": {"resultT'), "HTTP 200"),
        (lambda h, q, s: send(h, 200, b"[]"), "not a Prometheus API answer"),
        (lambda h, q, s: send(h, 200, b'{"status":"success","data":[]}'), "not a vector"),
        (
            lambda h, q, s: send(h, 200, b'{"status":"success","data":{"resultType":"vector",'
                                         b'"result":[{"metric":[],"value":[1,"2"]}]}}'),
            "malformed sample",
        ),
        (
            lambda h, q, s: send(h, 200, b'{"status":"success","data":{"resultType":"vector",'
                                         b'"result":[{"metric":{},"value":[1,2]}]}}'),
            "malformed sample",
        ),
        (lambda h, q, s: send(h, 502, b"<html>bad gateway</html>"), "HTTP 502"),
    ],
    ids=["200k samples", "truncated JSON", "a list", "data a list", "labels a list",
         "value a number", "HTML"],
)  # fmt: skip
def test_bad_answers_are_one_line_errors_with_exit_2(serve, capsys, respond, message):
    url = serve(respond)
    code = main(["rollout", "analyze", "--prometheus-url", url, "--canary-version", "2",
                 "--stable-version", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_too_many_samples_are_refused_before_use(serve):
    with pytest.raises(rollout.RolloutError, match="20000 samples, over the 5000"):
        rollout.Prometheus(serve(many_small)).query("up")


def dripping(handler, query, stop):
    """Headers at once, then one byte of a valid answer every 0.1 s (over 2 minutes in all)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    for byte in b'{"status":"success","data":{"resultType":"vector","result":[]}}' * 20:
        if stop.is_set():
            return
        try:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        except OSError:
            return
        time.sleep(0.1)


@pytest.mark.timeout(60)  # the answer alone takes over 2 minutes: a hang fails here
def test_a_dripping_server_cannot_hold_the_analysis_past_its_deadline(serve, capsys):
    url = serve(dripping)
    code = main(["rollout", "analyze", "--prometheus-url", url, "--canary-version", "2",
                 "--stable-version", "1", "--wait", "1", "--interval", "0.1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "did not answer" in err


def test_auto_canary_rolls_back_when_the_analysis_fails(monkeypatch):
    """An analysis that cannot finish (here: Prometheus answers garbage) must not leave the canary
    at its share of traffic with nothing deciding."""
    from snapcat.rollout import auto

    calls = []
    monkeypatch.setattr(auto, "canary", lambda *a, **k: "started")
    monkeypatch.setattr(auto, "rollback", lambda *a, **k: calls.append("rollback") or "rolled")

    def broken(*args, **kwargs):
        raise rollout.RolloutError("Prometheus answered garbage")

    monkeypatch.setattr(auto, "analyze", broken)
    analysis = rollout.AutoAnalysis(prometheus_url="http://127.0.0.1:9", timeout=1)
    with pytest.raises(rollout.RolloutError, match="the canary was rolled back"):
        auto.auto_canary("n", "ns", "gs://m", 10, analysis, cluster=object())
    assert calls == ["rollback"]
