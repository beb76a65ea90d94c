"""A fake Prometheus answering the canary analysis' queries from per-version figures: shared
by the canary-analysis and evidence tests."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from snapcat.contract import metric_names as m

CATEGORIES = {"digital": 40, "furniture": 25, "clothing": 20, "books": 15}


def version(requests=1000, errors=0, overload=0, bad=10, p95=0.2, categories=None,
            confident=0.7, feedback=(0, 0, 0)) -> dict:  # fmt: skip
    """Canned window totals of one model version. ``confident``: share of top-1 scores > 0.8."""
    answered = requests - errors - overload - bad
    mix = categories or CATEGORIES
    total = sum(mix.values())
    low = round(answered * (1 - confident))
    buckets = {le: (low * min(le / 0.8, 1.0) if le <= 0.8 else low + (answered - low) *
               (le - 0.8) / 0.2) for le in m.SCORE_BUCKETS}  # fmt: skip
    buckets[float("inf")] = answered
    return {
        "outcomes": {
            m.OK: answered,
            m.CLIENT_ERROR: bad,
            m.PREDICTOR_ERROR: errors,
            m.OVERLOAD: overload,
        },  # fmt: skip
        "p95": p95,
        "categories": {k: answered * v / total for k, v in mix.items()},
        "scores": buckets,
        "feedback": feedback,
    }


class FakePrometheus:
    def __init__(self, versions: dict[str, dict]):
        self.versions = versions
        self.queries: list[str] = []
        self.down = False

    def answer(self, query: str) -> tuple[int, dict]:
        self.queries.append(query)
        if self.down:
            return 503, {"status": "error", "errorType": "unavailable", "error": "down"}
        if "[10m]" not in query and "[5m]" not in query:
            return 400, {"status": "error", "errorType": "bad_data", "error": "unexpected window"}
        wanted = re.search(r'model_version=~"([^"]*)"', query)
        names = [v for v in self.versions if wanted is None or re.fullmatch(wanted.group(1), v)]
        result = []

        def add(value, **labels):
            result.append({"metric": labels, "value": [1.7e9, str(value)]})

        for v in names:
            data = self.versions[v]
            if query.startswith("histogram_quantile(0.95") and f"{m.LATENCY}_bucket" in query:
                add(data["p95"], model_version=v)
            elif f"{m.REQUESTS}" in query and "outcome" in query:
                for outcome, n in data["outcomes"].items():
                    add(n, model_version=v, outcome=outcome)
            elif f"{m.REQUESTS}" in query:
                add(sum(data["outcomes"].values()), model_version=v)
            elif m.PREDICTIONS in query:
                for category, n in data["categories"].items():
                    add(n, model_version=v, category=category)
            elif f"{m.TOP1_SCORE}_bucket" in query:
                for le, n in data["scores"].items():
                    add(n, model_version=v, le="+Inf" if le == float("inf") else str(le))
            elif m.FEEDBACK_CONFIDENT_TOP3 in query:  # issue 22: confident answers' promise
                add(data.get("confident_feedback", (0, 0))[1], model_version=v)
            elif m.FEEDBACK_CONFIDENT in query:
                add(data.get("confident_feedback", (0, 0))[0], model_version=v)
            elif m.FEEDBACK_TOP1 in query:
                add(data["feedback"][1], model_version=v)
            elif m.FEEDBACK_TOP3 in query:
                add(data["feedback"][2], model_version=v)
            elif m.FEEDBACK in query:
                add(data["feedback"][0], model_version=v)
            else:
                return 400, {"status": "error", "errorType": "bad_data", "error": "unknown"}
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def prometheus():
    """Starts a FakePrometheus on 127.0.0.1; yields make(versions) -> (fake, url)."""
    servers = []

    def make(versions: dict[str, dict]):
        fake = FakePrometheus(versions)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    code, body = 404, {"status": "error", "error": "not found"}
                else:
                    code, body = fake.answer(parse_qs(url.query)["query"][0])
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return fake, f"http://127.0.0.1:{server.server_port}"

    yield make
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


STABLE = version(requests=9000, bad=90, errors=9, feedback=(400, 240, 340))
