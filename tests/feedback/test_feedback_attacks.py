"""Issue 25: the feedback loop as an attacker on the same network tried it, against a real
``snapcat feedback serve`` on 127.0.0.1. Each test is one finding of the issue; each failed on the
code before it (the sink took anyone's labels, any bytes as photos, and answered 500 when full)."""

from __future__ import annotations

import base64
import csv
import uuid

import httpx
import pytest
from _feedback_fixtures import Sink, logger_event
from conftest import make_image_bytes

from snapcat.cli import main
from snapcat.feedback.events import REQUEST_TYPE, RESPONSE_TYPE

pytestmark = pytest.mark.timeout(300)
TOP = ["digital-devices", "home-appliances", "furniture-interior"]


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attacked-sink")
    s = Sink(folder / "store", folder / "sink.log").start()
    yield s
    s.kill()


def _request(photos: list[bytes]) -> dict:
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(p).decode()}} for p in photos]}


def _response(ids: list[str], version: str, top=TOP) -> dict:
    return {
        "predictions": [
            {
                "prediction_id": pid,
                "categories": [{"slug": s, "label": s, "score": 0.3} for s in top],
            }
            for pid in ids
        ],
        "model_version": version,
    }


def _real_call(s: Sink, seed: int, version: str = "7") -> str:
    """One answer the transformer (these keys) gave, logged as KServe's logger does."""
    call = str(uuid.uuid4())
    pid = s.sign(version, TOP)
    assert (
        logger_event(s.logger_url, RESPONSE_TYPE, call, _response([pid], version)).status_code
        == 200
    )
    photo = make_image_bytes(seed=seed)
    assert logger_event(s.logger_url, REQUEST_TYPE, call, _request([photo])).status_code == 200
    return pid


def _collect(s: Sink, out, *extra: str) -> list[dict]:
    assert main(["feedback", "collect", "--store", str(s.store), "--output", str(out),
                 "--overwrite", *extra]) == 0  # fmt: skip
    with open(out / "manifest.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_forged_labels_are_refused_and_never_reach_training(sink, tmp_path):
    """Was: 60 of 60 forged (photo, response, label) sets accepted and collected into 60 rows."""
    s = sink
    before = {r["prediction_id"] for r in _collect(s, tmp_path / "before")}
    forged_key = Sink(tmp_path / "other-store", tmp_path / "unused.log")  # another key, same format
    refused = {"unsigned": 0, "other key": 0, "label": 0}
    for i in range(60):
        call = str(uuid.uuid4())
        pid = uuid.uuid4().hex if i % 2 else forged_key.sign("7", TOP)
        photo = make_image_bytes(seed=5000 + i)
        # The photo alone is harmless: nothing labels it.
        assert logger_event(s.logger_url, REQUEST_TYPE, call, _request([photo])).status_code == 200
        answer = logger_event(s.logger_url, RESPONSE_TYPE, call, _response([pid], "7"))
        if i % 2:
            assert answer.status_code == 400 and "prediction_id" in answer.text  # unsigned form
            refused["unsigned"] += 1
        else:
            assert answer.status_code == 403, answer.text
            assert "not signed by the transformer" in answer.json()["error"]
            refused["other key"] += 1
        # A label for it: without the token 401, with the token still refused (never stored).
        no_token = httpx.put(f"{s.url}/v1/feedback/{pid}", json={"category": "beauty"})
        assert no_token.status_code == 401 and no_token.json()["error"].startswith("authentication")
        assert no_token.headers["www-authenticate"].startswith("Bearer")
        with_token = httpx.put(f"{s.url}/v1/feedback/{pid}", json={"category": "beauty"},
                               headers=s.auth)  # fmt: skip
        assert with_token.status_code in (400, 403, 404), with_token.text
        refused["label"] += 1
    assert refused == {"unsigned": 30, "other key": 30, "label": 60}
    # A wrong token, events on the API port without one, and labels on the logger port: refused.
    real = _real_call(s, seed=1)
    wrong = httpx.put(f"{s.url}/v1/feedback/{real}", json={"category": "beauty"},
                      headers={"authorization": "Bearer " + "0" * 64})  # fmt: skip
    assert wrong.status_code == 401
    api_event = logger_event(s.url, RESPONSE_TYPE, "x", _response([s.sign("7", TOP)], "7"))
    assert api_event.status_code == 401
    on_logger = httpx.put(f"{s.logger_url}/v1/feedback/{real}", json={"category": "beauty"},
                          headers=s.auth)  # fmt: skip
    assert on_logger.status_code == 403
    after = {r["prediction_id"] for r in _collect(s, tmp_path / "after")}
    assert after == before  # not one forged row


def test_a_given_label_is_kept_and_a_change_is_a_correction(sink, tmp_path):
    """Was: a second PUT silently overwrote a real prediction's label."""
    s = sink
    pid = _real_call(s, seed=2)
    put = f"{s.url}/v1/feedback/{pid}"
    first = httpx.put(put, json={"category": "digital-devices"}, headers=s.auth)
    assert first.status_code == 200 and "correction" not in first.json()
    second = httpx.put(put, json={"category": "beauty"}, headers=s.auth).json()
    assert second["category"] == "digital-devices" and second["correction"] == "beauty"
    rows = {r["prediction_id"]: r["category"] for r in _collect(s, tmp_path / "first")}
    assert rows[pid] == "digital-devices"  # the documented default: the first label
    rows = {r["prediction_id"]: r["category"]
            for r in _collect(s, tmp_path / "latest", "--use-corrections")}  # fmt: skip
    assert rows[pid] == "beauty"


def test_fake_model_versions_cannot_take_the_metric_labels(sink):
    """Was: forty fake versions filled the 32 version labels, a real new one counted as other.
    A signature binds the version and suggestions: a real id replayed under another version or
    with other suggestions is refused, so no fake version ever reaches /metrics."""
    s = sink
    real = s.sign("7", TOP)
    for n in range(40):
        replay = logger_event(s.logger_url, RESPONSE_TYPE, str(uuid.uuid4()),
                              _response([real], f"fake-{n}"))  # fmt: skip
        assert replay.status_code == 403
    other_top = logger_event(s.logger_url, RESPONSE_TYPE, "y",
                             _response([real], "7", ["beauty", *TOP[1:]]))  # fmt: skip
    assert other_top.status_code == 403
    pid = _real_call(s, seed=3, version="2026")
    assert httpx.put(f"{s.url}/v1/feedback/{pid}", json={"category": "digital-devices"},
                     headers=s.auth).status_code == 200  # fmt: skip
    metrics = httpx.get(f"{s.url}/metrics").text
    assert "fake-" not in metrics
    assert 'snapcat_feedback_total{model_version="2026"} 1.0' in metrics


def test_the_sink_binds_loopback_unless_told(tmp_path):
    """Was: ``feedback serve`` bound 0.0.0.0 by default."""
    from snapcat.cli import build_parser

    args = build_parser().parse_args(["feedback", "serve", "--store", str(tmp_path)])
    assert args.host == "127.0.0.1"


def test_a_sink_without_its_secrets_does_not_start(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SNAPCAT_FEEDBACK_TOKEN_FILE", raising=False)
    monkeypatch.delenv("SNAPCAT_PREDICTION_KEYS", raising=False)
    assert main(["feedback", "serve", "--store", str(tmp_path)]) == 2
    assert "--token-file" in capsys.readouterr().err
    short = tmp_path / "token"
    short.write_text("short")
    keys = tmp_path / "k"
    keys.write_text("local:" + "ab" * 32)
    assert main(["feedback", "serve", "--store", str(tmp_path), "--token-file", str(short),
                 "--keys", str(keys)]) == 2  # fmt: skip
    assert "at least 32 characters" in capsys.readouterr().err
