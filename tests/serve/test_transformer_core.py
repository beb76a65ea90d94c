"""The serving core without servers: request parsing, per-instance errors, the TF Serving request
(snapcat.serve.transformer_core), top-k shaping (snapcat.serve.responses), and the local predictor's request
parsing (snapcat.local.predictor), all without KServe or TensorFlow."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import REPO_ROOT, make_image_bytes

from snapcat.contract.image_spec import ImageSpec
from snapcat.contract.model_info import ModelInfo
from snapcat.imaging.normalize import normalize_image
from snapcat.local.predictor import RestError, parse_predict_request
from snapcat.serve.errors import (
    BadRequestError,
    InstanceError,
    PayloadTooLargeError,
    PredictorResponseError,
)
from snapcat.serve.responses import ResponseBuilder
from snapcat.serve.transformer_core import TransformerConfig, TransformerCore, decode_base64


@dataclass(frozen=True)
class V2Input:
    """One V2 input as ``kserve.InferInput`` carries it (without importing KServe)."""

    name: str
    datatype: str
    shape: list
    data: Any = None


def normalize_all(core: TransformerCore, items) -> list[bytes]:
    """What the transformer does per request: normalize every parsed photo, one error for all."""
    return core.collect(
        [
            item if isinstance(item, InstanceError) else core.normalize(i, item)
            for i, item in enumerate(items)
        ]
    )


def described(info: ModelInfo, scores, **override) -> dict:
    """One row of a snapcat model's answer: the scores and the model's description of itself."""
    row = {
        "probabilities": scores,
        "classes": list(info.classes),
        "labels": [info.labels[s] for s in info.classes],
        "confidence_threshold": -1.0
        if info.confidence_threshold is None
        else info.confidence_threshold,
        "model_version": info.version,
        "image_size": info.image_size,
        "jpeg_quality": info.jpeg_quality,
    }
    return {**row, **override}


def answer_of(core: TransformerCore, rows, info: ModelInfo | None = None, **override):
    """Score rows as the answer of ``info``'s model (default: :func:`make_info`'s)."""
    info = info or make_info()
    body = {"predictions": [described(info, r, **override) for r in rows]}
    return core.read_predictions(body, len(rows))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): a decompression bomb
    as far as any decoder reading the header can tell."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def make_info() -> ModelInfo:
    """A 5-class model's info at 96 px, with labels that are not the packaged ones."""
    from snapcat.contract.taxonomy import Taxonomy

    taxonomy = Taxonomy.load()
    classes = taxonomy.trainable_slugs[:5]
    return ModelInfo(
        classes=tuple(classes),
        # Deliberately not the packaged labels: the core must use the model's own.
        labels={slug: f"라벨-{i}" for i, slug in enumerate(classes)},
        names={slug: taxonomy[slug].name for slug in classes},
        taxonomy_version=taxonomy.version,
        image_size=96,
        jpeg_quality=90,
        backbone="xception",
        version=1234567890,
    )


@pytest.fixture(scope="module")
def info() -> ModelInfo:
    return make_info()


@pytest.fixture(scope="module")
def core(info) -> TransformerCore:
    return TransformerCore(TransformerConfig(max_batch=4, max_image_bytes=200_000), spec=info.spec)


def v1(*photos: bytes) -> dict:
    return {"instances": [{"image_bytes": {"b64": b64(p)}} for p in photos]}


# ------------------------------------------------------------------------------- V1 parsing
def test_v1_parses_every_accepted_instance_form(core):
    photo = make_image_bytes("JPEG", seed=1)
    body = {
        "instances": [
            {"image_bytes": {"b64": b64(photo)}},
            {"b64": b64(photo)},  # TF Serving's plain form for a single-input signature
            {"image_bytes": {"b64": base64.urlsafe_b64encode(photo).decode().rstrip("=")}},
            {"image_bytes": {"b64": "data:image/jpeg;base64," + b64(photo)}},
        ]
    }
    assert core.parse_v1(body) == [photo] * 4
    assert core.parse_v1(json.dumps(body).encode()) == [photo] * 4  # raw bytes body too


@pytest.mark.parametrize(
    ("body", "reason", "fragment"),
    [
        (b"{not json", "invalid-json", "invalid JSON"),
        ([1, 2], "missing-field", "JSON object"),
        ({"inputs": []}, "missing-field", "missing field 'instances'"),
        ({"instances": {"image_bytes": 1}}, "bad-field", "must be a list"),
        ({"instances": []}, "empty-request", "no images"),
        ({"instances": [{"image_bytes": {"b64": "x"}}] * 5}, "too-many-instances", "limit of 4"),
    ],
)
def test_v1_request_level_errors(core, body, reason, fragment):
    with pytest.raises(BadRequestError) as caught:
        core.parse_v1(body)
    assert caught.value.status == 400
    assert caught.value.reason == reason
    assert fragment in caught.value.message


def test_v1_instance_errors_name_index_and_reason(core):
    good = make_image_bytes("JPEG", seed=2)
    items = core.parse_v1(
        {
            "instances": [
                {"image_bytes": {"b64": b64(good)}},
                {"image": {"b64": b64(good)}},
                {"image_bytes": b64(good)},
                {"image_bytes": {"b64": "%%%not base64%%%"}},
            ]
        }
    )
    assert items[0] == good
    errors = items[1:]
    assert [(e.index, e.reason) for e in errors] == [
        (1, "missing-field"),
        (2, "bad-field"),
        (3, "bad-base64"),
    ]
    assert str(errors[2]).startswith("instance 3: bad-base64: ")
    with pytest.raises(BadRequestError) as caught:
        normalize_all(core, items)
    message = caught.value.message
    assert "instance 1: missing-field" in message and "instance 3: bad-base64" in message
    assert caught.value.status == 400
    assert [e["instance"] for e in caught.value.to_dict()["errors"]] == [1, 2, 3]


def test_oversized_photo_is_413_before_and_after_decoding(core):
    big = b"\xff\xd8" + bytes(300_000)
    items = core.parse_v1(v1(big))
    assert isinstance(items[0], InstanceError)
    assert (items[0].reason, items[0].status) == ("too-large", 413)
    with pytest.raises(PayloadTooLargeError) as caught:
        normalize_all(core, items)
    assert caught.value.status == 413
    assert caught.value.message.startswith("instance 0: too-large: the file is 293 KB")
    # Raw bytes (V2 over gRPC) are checked by their length.
    raw = core.parse_v2([V2Input("image_bytes", "BYTES", [1], [big])])
    assert raw[0].status == 413


def test_mixed_errors_are_400(core):
    items = core.parse_v1(v1(b"\xff\xd8" + bytes(300_000), b"not an image at all"))
    with pytest.raises(BadRequestError) as caught:
        normalize_all(core, items)
    assert caught.value.status == 400
    assert "instance 0: too-large" in caught.value.message
    assert "instance 1: unsupported-format" in caught.value.message


# ------------------------------------------------------------------------------- normalization
@pytest.mark.parametrize(
    ("photo", "reason"),
    [
        (b"", "empty"),
        (b"%PDF-1.7 not a photo", "unsupported-format"),
        (make_image_bytes("JPEG", size=(200, 150))[:300], "corrupt"),
        (png_header_only(30000, 30000), "decompression-bomb"),
        (make_image_bytes("PNG", size=(8, 8)), "too-small"),
    ],
)
def test_image_errors_keep_the_imaging_reason(core, photo, reason):
    result = core.normalize(2, photo)
    assert isinstance(result, InstanceError)
    assert (result.index, result.reason, result.status) == (2, reason, 400)
    assert str(result).startswith(f"instance 2: {reason}: ")


def test_normalization_is_the_shared_module(core, info):
    photos = [
        make_image_bytes("JPEG", size=(640, 480), seed=3),
        make_image_bytes("PNG", size=(300, 200), mode="RGBA", seed=4),
        make_image_bytes("WEBP", size=(200, 320), seed=5),
        make_image_bytes("HEIF", size=(256, 192), seed=6),
        make_image_bytes("JPEG", size=(320, 240), seed=7, orientation=6),
    ]
    canonical = normalize_all(core, core.parse_v1(v1(*photos[:4]))) + normalize_all(
        core, core.parse_v1(v1(photos[4]))
    )
    spec = ImageSpec(size=info.image_size, jpeg_quality=info.jpeg_quality)
    assert canonical == [normalize_image(p, spec) for p in photos]


def test_self_test_passes(core):
    core.self_test()


# ------------------------------------------------------------------------------- V2 parsing
def test_v2_forms(core):
    photo = make_image_bytes("PNG", seed=8)
    forms = [
        V2Input("image_bytes", "BYTES", [2], [b64(photo), {"b64": b64(photo)}]),
        V2Input("image_bytes", "BYTES", [2, 1], [[b64(photo)], [b64(photo)]]),
        V2Input("image_bytes", "BYTES", [2], [photo, photo]),  # gRPC raw contents
    ]
    for form in forms:
        assert core.parse_v2([V2Input("other", "FP32", [1], [0.0]), form]) == [photo] * 2


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([V2Input("image", "BYTES", [1], ["x"])], "no input named 'image_bytes'"),
        ([V2Input("image_bytes", "FP32", [1], [1.0])], "datatype BYTES"),
        ([V2Input("image_bytes", "BYTES", [0], [])], "no images"),
    ],
)
def test_v2_request_errors(core, inputs, fragment):
    with pytest.raises(BadRequestError, match=fragment):
        core.parse_v2(inputs)


def test_v2_bad_element_is_an_instance_error(core):
    items = core.parse_v2([V2Input("image_bytes", "BYTES", [2], ["!!", 5])])
    assert [(e.index, e.reason) for e in items] == [(0, "bad-base64"), (1, "bad-field")]


# ------------------------------------------------------------------------------- predictor I/O
def test_predictor_body_is_tf_serving_row_format_with_b64(core):
    canonical = normalize_all(core, core.parse_v1(v1(make_image_bytes("JPEG", seed=9))))
    body = core.predictor_body(canonical)
    parsed = json.loads(body)
    assert parsed["signature_name"] == "serving_default"
    assert base64.b64decode(parsed["instances"][0]["image_bytes"]["b64"]) == canonical[0]
    # base64 overhead plus a few dozen bytes of JSON, nothing else
    assert len(body) < len(canonical[0]) * 4 / 3 + 100


def test_read_predictions_checks_count_and_width(core, info):
    rows = [[0.1, 0.2, 0.3, 0.25, 0.15], [0.5, 0.1, 0.1, 0.2, 0.1]]
    answer = answer_of(core, rows)
    assert answer.probabilities == rows
    assert answer.classes == [tuple(info.classes)] * 2
    assert answer.labels == [tuple(info.labels[s] for s in info.classes)] * 2
    # bare scores name no classes: nothing to label them with safely
    with pytest.raises(PredictorResponseError) as caught:
        core.read_predictions({"predictions": rows}, 2)
    assert (caught.value.status, caught.value.reason) == (500, "model-mismatch")
    assert "does not name its classes" in caught.value.message
    with pytest.raises(PredictorResponseError) as caught:
        answer_of(core, [[0.5, 0.5]])
    assert caught.value.status == 500
    assert caught.value.reason == "model-mismatch"
    assert "2 scores per image but 5 'classes'" in caught.value.message
    with pytest.raises(PredictorResponseError, match="1 predictions for 2 images"):
        core.read_predictions({"predictions": [described(info, rows[0])]}, 2)
    # Finding 6: the predictor's own error text is logged, never passed to the client.
    with pytest.raises(PredictorResponseError, match="no 'predictions'") as caught:
        core.read_predictions({"error": "boom at /srv/model/variables"}, 1)
    assert "boom" not in caught.value.message
    with pytest.raises(PredictorResponseError, match="not lists of numbers"):
        answer_of(core, [["a"] * 5])


def test_responses_use_the_answering_models_labels_and_top_k(core, info):
    rows = [[0.05, 0.6, 0.1, 0.2, 0.05]]
    responses = ResponseBuilder(top_k=3)
    response = responses.v1_response(answer_of(core, rows))
    assert response["model_version"] == "1234567890"
    categories = response["predictions"][0]["categories"]
    assert [c["slug"] for c in categories] == [info.classes[1], info.classes[3], info.classes[2]]
    assert [c["label"] for c in categories] == ["라벨-1", "라벨-3", "라벨-2"]
    assert [c["score"] for c in categories] == [0.6, 0.2, 0.1]
    outputs = {o["name"]: o for o in responses.v2_outputs(answer_of(core, rows))}
    assert outputs["slug"]["shape"] == [1, 3] and outputs["slug"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == ["라벨-1", "라벨-3", "라벨-2"]
    assert outputs["score"]["data"] == [0.6, 0.2, 0.1]


def test_every_answer_carries_its_prediction_ids_built_once(core, info):
    """The id the feedback loop joins on is part of the answer the ResponseBuilder builds (V1: a
    field per prediction; V2: a BYTES output of shape [N]), new per photo and per answer."""
    from snapcat.feedback.events import PREDICTION_ID

    responses = ResponseBuilder(top_k=3)
    answer = answer_of(core, [[0.05, 0.6, 0.1, 0.2, 0.05], [0.2] * 5])
    v1 = [p["prediction_id"] for p in responses.v1_response(answer)["predictions"]]
    outputs = {o["name"]: o for o in responses.v2_outputs(answer)}
    v2 = outputs["prediction_id"]
    assert (v2["datatype"], v2["shape"]) == ("BYTES", [2])
    ids = v1 + v2["data"]
    assert all(PREDICTION_ID.match(i) for i in ids) and len(set(ids)) == 4
    assert responses.tops(answer) == [(info.classes[1], 0.6), (info.classes[0], 0.2)]


def test_every_answer_says_whether_it_is_confident(core, info):
    """The threshold on the top-3 score sum comes with the answer; a model without one (not
    calibrated) is never confident."""
    sure, unsure = [0.05, 0.6, 0.1, 0.2, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2]  # top-3: 0.9, 0.6
    responses = ResponseBuilder(top_k=3)
    calibrated = answer_of(core, [sure, unsure], confidence_threshold=0.85)
    response = responses.v1_response(calibrated)
    assert [p["confident"] for p in response["predictions"]] == [True, False]
    outputs = {o["name"]: o for o in responses.v2_outputs(calibrated)}
    assert outputs["confident"] == {
        "name": "confident",
        "datatype": "BOOL",
        "shape": [2],
        "data": [True, False],
    }
    assert info.confidence_threshold is None  # exported as -1: never confident
    uncalibrated = answer_of(core, [sure])
    assert responses.v1_response(uncalibrated)["predictions"][0]["confident"] is False


def test_self_describing_answers_are_labelled_by_the_model_that_served_them(core, info):
    """Mid-canary, one transformer reaches a predictor serving two model versions: each answer's
    own classes, labels and version win, so no score is ever put under the wrong label."""
    other_order = list(reversed(info.classes))
    answer = answer_of(
        core,
        [[0.7, 0.1, 0.1, 0.05, 0.05]],
        classes=other_order,
        labels=[f"다른-{s}" for s in other_order],
        model_version=42,
    )
    assert answer.version == "42" and answer.classes == [tuple(other_order)]
    responses = ResponseBuilder(top_k=3)
    body = responses.v1_response(answer)
    assert body["model_version"] == "42"
    top = body["predictions"][0]["categories"][0]
    assert top == {"slug": other_order[0], "label": f"다른-{other_order[0]}", "score": 0.7}
    # a category no taxonomy of this package knows is shown with the label its model carries
    newer = answer_of(
        core,
        [[0.1] * 5 + [0.5]],
        classes=[*info.classes, "brand-new"],
        labels=[*(info.labels[s] for s in info.classes), "새 분류"],
        model_version=43,
    )
    (top,) = responses.v1_response(newer)["predictions"][0]["categories"][:1]
    assert top == {"slug": "brand-new", "label": "새 분류", "score": 0.5}
    # classes and scores that disagree in length are refused, not guessed at
    with pytest.raises(PredictorResponseError) as caught:
        answer_of(core, [[0.5, 0.5]], classes=["a", "b", "c"])
    assert caught.value.reason == "model-mismatch"


def test_a_model_exported_before_answers_described_it_is_served_sensibly(info):
    """An older model answers with scores, classes and version only: the labels come from the
    packaged taxonomy (an unknown slug as itself), it is never confident, and the transformer
    keeps the image spec it has (the transformer falls back to the default one)."""
    from snapcat.contract.taxonomy import Taxonomy

    core = TransformerCore(TransformerConfig())
    old = {"predictions": [
        {"probabilities": [0.9, 0.05, 0.03, 0.01, 0.01], "classes": [*info.classes[:4], "gone"],
         "model_version": 7},
    ]}  # fmt: skip
    answer = core.read_predictions(old, 1)
    assert answer.spec is None and not core.spec_learned
    taxonomy = Taxonomy.load()
    assert answer.labels == [(*(taxonomy[s].label for s in info.classes[:4]), "gone")]
    assert answer.thresholds == [None]
    body = ResponseBuilder(top_k=3).v1_response(answer)
    assert body["model_version"] == "7"
    assert body["predictions"][0]["confident"] is False
    assert body["predictions"][0]["categories"][0]["label"] == taxonomy[info.classes[0]].label
    core.use_default_spec()
    assert core.spec == ImageSpec(max_bytes=core.config.max_image_bytes)


def test_the_image_spec_is_learned_from_the_answers(info):
    """The transformer normalizes as the model that answered last was trained: a promotion to a
    model of another size switches it with the first answer."""
    core = TransformerCore(TransformerConfig(max_image_bytes=123_456))
    assert not core.spec_learned
    with pytest.raises(RuntimeError, match="spec was learned"):
        core.normalize(0, make_image_bytes("JPEG"))
    answer_of(core, [[0.2] * 5], info)
    assert core.spec == ImageSpec(size=96, jpeg_quality=90, max_bytes=123_456)
    photo = make_image_bytes("JPEG", size=(200, 150), seed=2)
    assert core.normalize(0, photo) == normalize_image(photo, ImageSpec(size=96))
    answer_of(core, [[0.2] * 5], info, image_size=128, jpeg_quality=85, model_version=9)
    assert (core.spec.size, core.spec.jpeg_quality, core.model_version) == (128, 85, "9")
    assert core.normalize(0, photo) == normalize_image(photo, ImageSpec(size=128, jpeg_quality=85))
    answer_of(core, [[0.2] * 5], info, image_size=3)  # unusable: the spec is kept
    assert core.spec.size == 128


def test_top_k_is_capped_by_the_number_of_classes(core):
    responses = ResponseBuilder(top_k=10)
    answer = answer_of(core, [[0.2] * 5])
    assert len(responses.v1_response(answer)["predictions"][0]["categories"]) == 5
    assert {o["name"]: o["shape"] for o in responses.v2_outputs(answer)}["slug"] == [1, 5]


def test_config_validation():
    with pytest.raises(ValueError):
        TransformerConfig(top_k=0)
    with pytest.raises(ValueError):
        TransformerConfig(predictor_timeout=0)


def test_decode_base64_tolerances_and_errors():
    data = bytes(range(256))
    encoded = b64(data)
    assert decode_base64(encoded) == data
    assert decode_base64("\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))) == data
    assert decode_base64(encoded.rstrip("=")) == data
    with pytest.raises(ValueError, match="not valid base64"):
        decode_base64("abc$")
    with pytest.raises(ValueError, match="expected a base64 string, got a number"):
        decode_base64(12)


def test_core_imports_neither_kserve_nor_tensorflow():
    code = (
        "import sys, snapcat.serve.transformer_core, snapcat.serve.responses, snapcat.serve.client, snapcat.local.predictor; "
        "bad = [m for m in ('tensorflow', 'keras', 'kserve') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------- local predictor
def test_predictor_parses_the_row_format_the_transformer_sends():
    a, b = b"\xff\xd8first", b"\xff\xd8second"
    row = {"instances": [{"image_bytes": {"b64": b64(a)}}, {"image_bytes": {"b64": b64(b)}}]}
    assert parse_predict_request(json.dumps(row).encode()) == [a, b]
    plain = {"signature_name": "serving_default", "instances": [{"b64": b64(a)}]}
    assert parse_predict_request(json.dumps(plain).encode()) == [a]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "not JSON"),
        (b"[1]", "must be a JSON object"),
        (b"{oops", "not JSON"),
        (b"{}", "'instances' must be a non-empty list"),
        (b'{"instances": {}}', "'instances' must be a non-empty list"),
        (b'{"instances": []}', "'instances' must be a non-empty list"),
        (b'{"inputs": {"image_bytes": []}}', "'instances' must be a non-empty list"),
        (b'{"signature_name": "other", "instances": ["x"]}', "no signature 'other'"),
        (
            b'{"instances": [{"image_bytes": {"b64": "@@"}}]}',
            "instance 0: image_bytes is not valid",
        ),
        (b'{"instances": [{"image": "x"}]}', "expected the one input 'image_bytes'"),
        (b'{"instances": ["x", {"image_bytes": 3}]}', "instance 1: image_bytes must be"),
    ],
)
def test_predictor_request_errors(body, fragment):
    with pytest.raises(RestError) as caught:
        parse_predict_request(body)
    assert caught.value.status == 400
    assert fragment in caught.value.message


def test_admission_sheds_load_and_releases_what_a_request_held():
    """At most max_photos in flight (a lone oversized request is let through); inside holding()
    the slots come back however the request ends."""
    from snapcat.serve.admission import Admission
    from snapcat.serve.errors import OverloadedError

    admission = Admission(max_photos=4)
    assert admission.admit(6) == 6 and admission.saturated  # alone: let through
    with pytest.raises(OverloadedError, match="at capacity"):
        admission.admit(1)
    admission.release(6)
    with pytest.raises(RuntimeError), admission.holding():
        assert admission.admit(3) == 0  # released by holding(), not the caller
        raise RuntimeError("a stage failed")
    assert admission.in_flight == 0 and not admission.saturated
