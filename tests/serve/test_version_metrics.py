"""serving/version_metrics.py in process: outcomes and bounded labels, around a small Starlette app
that answers and notes its answer like the transformer (the real one:
tests/serve/test_serving_e2e.py); the body passes through untouched (the ids are the
ResponseBuilder's: tests/serve/test_transformer_core.py)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving import version_metrics


def app_answering(status: int, version: str, slugs: list[str]):
    async def predict(request):
        if status != 200:
            return JSONResponse({"error": "no"}, status_code=status)
        predictions = [{"categories": [{"slug": s, "label": s, "score": 0.9}]} for s in slugs]
        answered = request.query_params.get("v", version)  # as a canary split would vary it
        version_metrics.note_answer(answered, [(s, 0.9) for s in slugs])  # as postprocess does
        return JSONResponse({"predictions": predictions, "model_version": answered})

    async def other(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/models/m:predict", predict, methods=["POST"]),
                            Route("/v1/models/m", other)])  # fmt: skip
    return version_metrics.VersionMetrics(app, lambda: "own", lambda: ["a", "b"])


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ok_answers_pass_untouched_and_count_per_version_and_category():
    before = value("snapcat_model_requests_total", model_version="501", outcome="ok")
    before_other = value("snapcat_model_predictions_total", model_version="501", category="other")
    client = TestClient(app_answering(200, "501", ["a", "zzz"]))
    response = client.post("/v1/models/m:predict", json={})
    predictions = [{"categories": [{"slug": s, "label": s, "score": 0.9}]} for s in ("a", "zzz")]
    assert (
        response.content == JSONResponse({"predictions": predictions, "model_version": "501"}).body
    )  # not parsed, not rewritten
    assert int(response.headers["content-length"]) == len(response.content)
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


def transformer_like_app():
    """FastAPI with the transformer's real error handlers (serving.http_layer) and its middleware
    order (the request guard inside, the version metrics outermost, as serving/server.py adds
    them); each route fails the way the transformer can."""
    from fastapi import FastAPI

    from serving.http_layer import RequestGuard, install_exception_handlers
    from snapcat.serve.errors import BadRequestError, PredictorResponseError

    app = FastAPI()
    install_exception_handlers(app)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def versioned(name: str, version: str):
        raise NotImplementedError("model versions are not served by name")  # KServe: 501

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, kind: str = ""):
        if kind == "bad":
            raise BadRequestError("instance 0: corrupt", reason="corrupt")
        if kind == "mismatch":
            raise PredictorResponseError("no classes", status=500, reason="model-mismatch")
        raise PredictorResponseError("the predictor answered HTTP 500")  # 502 predictor-error

    app.add_middleware(RequestGuard, max_request_bytes=10_000, max_requests=8,
                       max_body_bytes_in_flight=100_000)  # fmt: skip
    app.add_middleware(version_metrics.VersionMetrics, own_version=lambda: "live",
                       classes=lambda: ["a"])  # fmt: skip
    return app


def test_only_real_predictor_failures_count_as_predictor_errors():
    """Issue 23, finding 2: 100 POSTs to a route no model serves (501) added 100 predictor errors
    to the live version, enough to roll back a good canary. They are "refused" now; requests the
    transformer refuses for bad input are client errors; the predictor's failures still count."""

    def counts():
        return {o: value("snapcat_model_requests_total", model_version="live", outcome=o)
                for o in ("refused", "predictor_error", "client_error")}  # fmt: skip

    client = TestClient(transformer_like_app())
    before = counts()
    for _ in range(100):
        response = client.post("/v2/models/listing-category/versions/x/infer", json={})
        assert response.status_code == 501
    assert client.post("/v2/models/m/infer?kind=bad", json={}).status_code == 400
    assert client.post("/v2/models/m/infer", json={}).status_code == 502
    assert client.post("/v2/models/m/infer?kind=mismatch", json={}).status_code == 500
    after = counts()
    assert after["refused"] - before["refused"] == 100
    assert after["client_error"] - before["client_error"] == 1
    assert after["predictor_error"] - before["predictor_error"] == 2


def test_refused_requests_never_move_the_canarys_error_rate():
    from snapcat.contract import metric_names as m
    from snapcat.rollout.evidence import VersionEvidence

    evidence = VersionEvidence("2", {m.OK: 100, m.PREDICTOR_ERROR: 1, m.REFUSED: 100,
                                     m.CLIENT_ERROR: 50})  # fmt: skip
    assert evidence.served == 101
    assert evidence.error_rate == 1 / 101


def test_a_note_outside_a_request_is_a_no_op():
    version_metrics.note_answer("1", [("a", 0.5)])  # e.g. the readiness probe's prediction
