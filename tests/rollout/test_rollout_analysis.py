"""``snapcat rollout analyze`` and ``rollout canary --auto`` against a fake Prometheus.

The fake serves Prometheus's HTTP API (``GET /api/v1/query``) on 127.0.0.1 and answers each query
the analysis sends from canned per-version numbers, computed the way PromQL would (``increase``
over the window, ``sum by``, ``histogram_quantile``). It refuses queries it does not recognise, so
a change to the queries fails here instead of in production.
"""

from __future__ import annotations

import json

import pytest
from _fake_kserve import FAST, NAME, NEW_URI, NS, FakeKServe, live_object  # noqa: F401
from _fake_prometheus import CATEGORIES, STABLE, FakePrometheus, version  # noqa: F401

from snapcat import rollout
from snapcat.cli import main
from snapcat.rollout import RolloutError, Thresholds
from snapcat.rollout.analysis import jensen_shannon, score_shift

# fixtures: fake_api (a fake Kubernetes API server), prometheus (a fake Prometheus)
pytest_plugins = ["_fake_kserve", "_fake_prometheus"]


def analyze_cli(capsys, url, *extra):
    code = main(["rollout", "analyze", "--prometheus-url", url, "--canary-version", "2",
                 "--stable-version", "1", "--json", *extra])  # fmt: skip
    out = capsys.readouterr().out
    return code, json.loads(out) if code in (0, 3, 4) else out


def failed_checks(decision: dict) -> list[str]:
    return [c["name"] for c in decision["checks"] if c["passed"] is False]


@pytest.mark.parametrize(
    ("canary", "decision", "failed"),
    [
        (version(errors=1, feedback=(60, 35, 52)), "promote", []),
        (version(errors=60), "rollback", ["error rate"]),
        (version(overload=50), "rollback", ["error rate"]),
        (version(p95=0.45), "rollback", ["p95 latency"]),
        (
            version(categories={"digital": 5, "furniture": 5, "clothing": 80, "books": 10}),
            "rollback",
            ["category mix"],
        ),  # fmt: skip
        (version(confident=0.2), "rollback", ["top-1 scores"]),
        (version(feedback=(100, 40, 70)), "rollback", ["top-1 agreement", "top-3 agreement"]),
        (version(requests=120), "wait", []),
    ],
    ids=["promote", "errors", "overload", "latency", "categories", "scores", "agreement", "wait"],
)
def test_every_decision_path_end_to_end(prometheus, capsys, canary, decision, failed):
    fake, url = prometheus({"1": STABLE, "2": canary})
    code, result = analyze_cli(capsys, url)
    assert result["decision"] == decision
    assert code == {"promote": 0, "rollback": 3, "wait": 4}[decision]
    assert failed_checks(result) == failed
    assert result["canary"]["version"] == "2" and result["stable"]["version"] == "1"
    assert all('model_version=~"2|1"' in q for q in fake.queries)
    assert len(fake.queries) == 9  # 7, and the confident answers' two (issue 22)


def test_explanation_in_words(prometheus, capsys):
    _, url = prometheus({"1": STABLE, "2": version(errors=60)})
    code = main(["rollout", "analyze", "--prometheus-url", url])  # versions found in Prometheus
    text = capsys.readouterr().out
    assert code == 3
    assert "decision: ROLLBACK (canary version 2, stable version 1, last 10m)" in text
    assert "because error rate failed: canary 6.06% vs stable 0.10%" in text
    assert "[skip] sellers' agreement: 0 canary / 400 stable sellers' answers" in text
    assert "[ok  ] p95 latency: canary 200 ms vs stable 200 ms (x1.00, limit x1.5)" in text


def test_feedback_below_minimum_is_skipped_not_failed(prometheus, capsys):
    _, url = prometheus({"1": STABLE, "2": version(feedback=(10, 1, 2))})
    code, result = analyze_cli(capsys, url)
    assert (code, result["decision"]) == (0, "promote")
    skipped = [c for c in result["checks"] if c["passed"] is None]
    # and no confident answer with feedback yet: the promise check waits too (issue 22)
    assert [c["name"] for c in skipped] == ["sellers' agreement", "confident promise"]


def test_thresholds_are_flags(prometheus, capsys):
    _, url = prometheus({"1": STABLE, "2": version(p95=0.45)})
    code, result = analyze_cli(capsys, url, "--max-latency-ratio", "3", "--window", "5m")
    assert (code, result["decision"], result["window"]) == (0, "promote", "5m")
    code, result = analyze_cli(capsys, url, "--min-requests", "5000")
    assert (code, result["decision"]) == (4, "wait")
    assert "served 990 of the 5000 requests needed" in result["reasons"][0]


def test_waits_until_enough_canary_traffic(prometheus):
    fake, url = prometheus({"1": STABLE, "2": version(requests=50)})
    grown = iter([version(requests=150), version(requests=400)])
    decision = rollout.analyze(
        rollout.Prometheus(url), canary_version="2", stable_version="1", wait_timeout=30,
        interval=0.01, sleep=lambda s: fake.versions.update({"2": next(grown)}),
    )  # fmt: skip
    assert decision.decision == "promote"
    assert len(fake.queries) == 3 * 9


def test_prometheus_problems_are_user_errors(prometheus, capsys):
    fake, url = prometheus({"1": STABLE})
    assert main(["rollout", "analyze", "--prometheus-url", url]) == 2
    assert "saw 1 model version(s) serving in the last 10m (1)" in capsys.readouterr().err
    fake.down = True
    assert main(["rollout", "analyze", "--prometheus-url", url, "--canary-version", "2",
                 "--stable-version", "1"]) == 2  # fmt: skip
    assert "Prometheus refused the query" in capsys.readouterr().err
    assert main(["rollout", "analyze", "--prometheus-url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach Prometheus" in capsys.readouterr().err
    assert main(["rollout", "analyze", "--prometheus-url", url, "--window", "ten"]) == 2
    assert "not a Prometheus duration" in capsys.readouterr().err
    with pytest.raises(RolloutError, match="must be a number >= 0"):
        Thresholds(max_latency_ratio=-1)


def test_divergence_and_shift_measures():
    assert jensen_shannon({"a": 5, "b": 5}, {"a": 50, "b": 50}) == pytest.approx(0.0)
    assert jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    inf = float("inf")
    assert score_shift({0.5: 50, inf: 100}, {0.5: 10, inf: 100}) == pytest.approx(0.4)
    assert score_shift({inf: 0}, {0.5: 1, inf: 1}) is None


# ------------------------------------------------------------------------------ --auto
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("canary", "writes"),
    [(version(), ["PATCH", "PUT"]), (version(p95=0.9), ["PATCH", "PATCH"])],
    ids=["promoted", "rolled-back"],
)
def test_auto_canary_acts_on_the_decision(fake_api, prometheus, capsys, canary, writes):
    """The real KServe client against the fake API server (tests/rollout/test_rollout.py), the analysis
    against the fake Prometheus: the canary is started, judged, then promoted or rolled back."""
    fake = FakeKServe(live_object())
    kubeconfig = fake_api(fake)
    _, url = prometheus({"1": STABLE, "2": canary})
    code = main(["rollout", "canary", "-n", NS, "--model-uri", NEW_URI, "--percent", "10",
                 "--auto", "--prometheus-url", url, "--kubeconfig", kubeconfig,
                 "--poll", "0.01", "--interval", "0.01"])  # fmt: skip
    out = capsys.readouterr().out
    assert [method for method, _ in fake.writes()] == writes
    if writes[-1] == "PUT":
        assert code == 0 and "decision: PROMOTE" in out
        assert "canaryTrafficPercent" not in fake.obj["spec"]["predictor"]
    else:
        assert code == 3 and "decision: ROLLBACK" in out and "p95 latency failed" in out
        assert fake.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0


@pytest.mark.timeout(120)
def test_auto_canary_undecided_is_rolled_back(fake_api, prometheus):
    fake = FakeKServe(live_object())
    cluster = rollout.Cluster.connect(fake_api(fake))
    _, url = prometheus({"1": STABLE, "2": version(requests=20)})
    analysis = rollout.AutoAnalysis(prometheus_url=url, timeout=0.05, interval=0.01)
    outcome = rollout.auto_canary(NAME, NS, NEW_URI, 10, analysis, cluster=cluster, **FAST)
    assert outcome.decision.decision == "wait"
    assert outcome.final.action == "rollback"
    keep = rollout.AutoAnalysis(prometheus_url=url, timeout=0.05, interval=0.01, undecided="keep")
    third = "gs://snapcat-models/listing-category-v3"
    outcome = rollout.auto_canary(NAME, NS, third, 10, keep, cluster=cluster, **FAST)
    assert outcome.final is None
    assert fake.obj["spec"]["predictor"]["canaryTrafficPercent"] == 10


@pytest.mark.parametrize(
    ("confident_feedback", "decision", "passed"),
    [((100, 97), "promote", True), ((100, 85), "rollback", False), ((10, 5), "promote", None)],
    ids=["kept", "broken", "too-few"],
)
def test_confident_answers_that_break_their_promise_roll_the_canary_back(
    prometheus, capsys, confident_feedback, decision, passed
):
    """85 of 100 confident answers right: the 95 % upper bound (91 %) is below the promised
    95 %, so the canary's ``confident`` flag does not keep its promise (issue 22)."""
    canary = {**version(errors=1, feedback=(60, 35, 52)), "confident_feedback": confident_feedback}
    _, url = prometheus({"1": STABLE, "2": canary})
    _, result = analyze_cli(capsys, url)
    (check,) = [c for c in result["checks"] if c["name"] == "confident promise"]
    assert check["passed"] is passed and result["decision"] == decision
