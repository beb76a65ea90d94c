"""KServe's routes, one definition for the guard, the metrics' model label and inference counts."""

import pytest

from snapcat.serve.routes import BODY_PATH, INFERENCE_PATH, MODEL_IN_PATH


@pytest.mark.parametrize(
    "path",
    ["/v1/models/m:predict", "/v2/models/m/infer", "/v2/models/listing-category/versions/7/infer"],
)
def test_predictions_take_a_body_and_count(path):
    assert BODY_PATH.match(path) and INFERENCE_PATH.match(path)
    assert MODEL_IN_PATH.match(path).group(1) in ("m", "listing-category")


def test_explain_takes_a_body_but_is_no_prediction():
    assert BODY_PATH.match("/v1/models/m:explain")
    assert not INFERENCE_PATH.match("/v1/models/m:explain")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/m",
        "/v1/models/m:classify",
        "/v1/models/m/versions/7:predict",
        "/v2/models/m/generate",
        "/v2/models/m:predict",
        "/v2/models/m/infer/x",
        "/v1/models/m:predict/x",
    ],
)
def test_other_routes_take_no_body(path):
    assert not BODY_PATH.match(path) and not INFERENCE_PATH.match(path)
