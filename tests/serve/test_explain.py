"""The transformer's explain shaping (no servers, no TensorFlow): class indices from the request,
the predictor's request and its heat maps checked."""

from __future__ import annotations

import json

import pytest

from snapcat.serve import explain
from snapcat.serve.errors import BadRequestError, PredictorResponseError


def test_class_indices_default_to_the_top1_and_refuse_what_the_model_lacks():
    body = {"instances": [{"image_bytes": {}}, {"image_bytes": {}, "class_index": 2}]}
    assert explain.class_indices(body, 2, 5) == [-1, 2]
    for bad in (5, -2, "2", True, 1.5):
        body["instances"][1]["class_index"] = bad
        with pytest.raises(BadRequestError, match="instance 1: 'class_index'"):
            explain.class_indices(body, 2, 5)


def test_predictor_body_calls_the_explain_signature():
    body = json.loads(explain.predictor_body([b"a", b"b"], [-1, 3]))
    assert body["signature_name"] == "explain"
    assert body["instances"][1] == {"image_bytes": {"b64": "Yg=="}, "class_index": 3}


def test_malformed_heat_maps_are_the_predictors_fault():
    good = {"heat_map": [[0.5] * 14] * 14, "explained_class": 1}
    found = explain.read_explanations({"predictions": [good]}, 1)
    assert found[0].class_index == 1 and len(found[0].heat_map) == 14
    for row in ({"probabilities": [1.0]}, {**good, "heat_map": [[0.5] * 7] * 7}):
        with pytest.raises(PredictorResponseError):
            explain.read_explanations({"predictions": [row]}, 1)
    with pytest.raises(PredictorResponseError):
        explain.read_explanations({"predictions": [good]}, 2)
