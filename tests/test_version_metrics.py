"""serving/version_metrics.py in process: outcomes, prediction ids and bounded labels, around a
small Starlette app that answers like the transformer (the real one: tests/test_serving_e2e.py)."""

from __future__ import annotations

import json

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving import version_metrics
from snapcat.feedback.events import PREDICTION_ID


def app_answering(status: int, version: str, slugs: list[str]):
    async def predict(request):
        if status != 200:
            return JSONResponse({"error": "no"}, status_code=status)
        predictions = [{"categories": [{"slug": s, "label": s, "score": 0.9}]} for s in slugs]
        answered = request.query_params.get("v", version)  # as a canary split would vary it
        return JSONResponse({"predictions": predictions, "model_version": answered})

    async def other(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/models/m:predict", predict, methods=["POST"]),
                            Route("/v1/models/m", other)])  # fmt: skip
    return version_metrics.VersionMetrics(app, lambda: "own", lambda: ["a", "b"])


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ok_answers_get_ids_and_count_per_version_and_category():
    before = value("snapcat_model_requests_total", model_version="501", outcome="ok")
    before_other = value("snapcat_model_predictions_total", model_version="501", category="other")
    client = TestClient(app_answering(200, "501", ["a", "zzz"]))
    response = client.post("/v1/models/m:predict", json={})
    body = response.json()
    ids = [p["prediction_id"] for p in body["predictions"]]
    assert all(PREDICTION_ID.match(i) for i in ids) and len(set(ids)) == 2
    assert int(response.headers["content-length"]) == len(response.content)
    assert json.loads(response.content)["model_version"] == "501"
    assert value("snapcat_model_requests_total", model_version="501", outcome="ok") == before + 1
    # A slug outside the model's classes is counted as "other": labels stay bounded.
    assert value("snapcat_model_predictions_total", model_version="501", category="other") == (
        before_other + 1
    )
    assert value("snapcat_model_top1_score_count", model_version="501") >= 2
    assert client.get("/v1/models/m").json() == {"ok": True}  # not an inference path


def test_errors_count_by_outcome_under_the_transformers_own_version():
    for status, outcome in ((400, "client_error"), (503, "overload"), (429, "overload"),
                            (502, "predictor_error")):  # fmt: skip
        before = value("snapcat_model_requests_total", model_version="own", outcome=outcome)
        response = TestClient(app_answering(status, "x", [])).post("/v1/models/m:predict", json={})
        assert response.status_code == status and "prediction_id" not in response.text
        after = value("snapcat_model_requests_total", model_version="own", outcome=outcome)
        assert after == before + 1


def test_model_version_label_values_are_bounded():
    middleware = app_answering(200, "v", ["a"])
    client = TestClient(middleware)
    for i in range(version_metrics.MAX_VERSIONS + 5):
        assert client.post(f"/v1/models/m:predict?v=9{i:03d}", json={}).status_code == 200
    assert len(middleware.versions) == version_metrics.MAX_VERSIONS
    assert value("snapcat_model_requests_total", model_version="other", outcome="ok") >= 5
    assert value("snapcat_model_requests_total", model_version="9020", outcome="ok") == 0
