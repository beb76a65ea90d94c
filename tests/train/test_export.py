"""The export contract with TF Serving: signature names and dtypes, class order, the files beside
the graph, and a version folder that appears atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["_training_fixtures"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def test_records(prepared):
    from snapcat.dataset.shards import read_split

    return read_split(str(prepared), "test")


def _tiny_model(size: int, classes: int):
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


# ------------------------------------------------------------------------------ the trained model
def test_signature_loads_with_plain_tensorflow(trained, test_records, prepared_stats):
    import tensorflow as tf

    from snapcat.contract.signature import INPUT_NAME, OUTPUT_NAME, SIGNATURE_NAME

    assert (SIGNATURE_NAME, INPUT_NAME, OUTPUT_NAME) == (
        "serving_default",
        "image_bytes",
        "probabilities",
    )
    loaded = tf.saved_model.load(str(trained.version_dir))
    assert sorted(loaded.signatures) == ["explain", "serving_default"]
    signature = loaded.signatures["serving_default"]
    args, kwargs = signature.structured_input_signature
    assert args == ()
    assert list(kwargs) == ["image_bytes"]
    assert kwargs["image_bytes"].dtype == tf.string
    assert kwargs["image_bytes"].shape.as_list() == [None]
    classes = len(prepared_stats["classes"])
    outputs = signature.structured_outputs
    assert sorted(outputs) == [
        "classes",
        "confidence_threshold",
        "image_size",
        "jpeg_quality",
        "labels",
        "model_version",
        "probabilities",
    ]
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, classes]
    # the answer labels itself: per row the class slugs and the model version
    assert outputs["classes"].dtype == tf.string
    assert outputs["model_version"].dtype == tf.int64
    # ... and everything the transformer needs to answer, so it downloads no model files
    assert outputs["labels"].dtype == tf.string
    assert outputs["confidence_threshold"].dtype == tf.float64
    assert outputs["image_size"].dtype == outputs["jpeg_quality"].dtype == tf.int64

    images = [r["image"] for r in test_records[:7]]
    result = signature(image_bytes=tf.constant(images))
    probabilities = result["probabilities"].numpy()
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (7, classes)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    slugs = [[c.decode() for c in row] for row in result["classes"].numpy()]
    assert slugs == [prepared_stats["classes"]] * 7
    version = int(Path(trained.version_dir).name)
    assert result["model_version"].numpy().tolist() == [version] * 7
    from snapcat.contract.model_info import load_model_info
    from snapcat.contract.taxonomy import Taxonomy

    info = load_model_info(str(trained.version_dir))
    taxonomy = Taxonomy.load()
    labels = [[c.decode() for c in row] for row in result["labels"].numpy()]
    assert labels == [[taxonomy[s].label for s in prepared_stats["classes"]]] * 7
    threshold = -1.0 if info.confidence_threshold is None else info.confidence_threshold
    assert result["confidence_threshold"].numpy().tolist() == [threshold] * 7
    assert result["image_size"].numpy().tolist() == [prepared_stats["image_size"]] * 7
    assert result["jpeg_quality"].numpy().tolist() == [prepared_stats["jpeg_quality"]] * 7
    # One image alone gets the same answer as inside a batch.
    alone = signature(image_bytes=tf.constant(images[3:4]))["probabilities"].numpy()
    np.testing.assert_allclose(alone[0], probabilities[3], atol=1e-5)


def test_explain_signature_matches_the_contract(trained, test_records, prepared_stats):
    """The ``explain`` signature TF Serving calls (``"signature_name": "explain"``): the names,
    dtypes and shapes :mod:`snapcat.contract.signature` promises, predict's scores for the same
    photos, a heat map in [0, 1] and the requested (or top-1) class."""
    import tensorflow as tf

    from snapcat.contract import signature as contract

    loaded = tf.saved_model.load(str(trained.version_dir))
    explain = loaded.signatures[contract.EXPLAIN_SIGNATURE_NAME]
    args, kwargs = explain.structured_input_signature
    assert args == ()
    assert sorted(kwargs) == sorted([contract.INPUT_NAME, contract.CLASS_INDEX_INPUT])
    assert kwargs[contract.INPUT_NAME].dtype == tf.string
    assert kwargs[contract.CLASS_INDEX_INPUT].dtype == tf.int32
    assert kwargs[contract.CLASS_INDEX_INPUT].shape.as_list() == [None]
    outputs = explain.structured_outputs
    predict_outputs = loaded.signatures[contract.SIGNATURE_NAME].structured_outputs
    assert sorted(outputs) == sorted([*predict_outputs, *contract.EXPLAIN_OUTPUTS])
    side = contract.HEAT_MAP_SIZE
    assert outputs[contract.HEAT_MAP_OUTPUT].dtype == tf.float32
    assert outputs[contract.HEAT_MAP_OUTPUT].shape.as_list() == [None, side, side]
    assert outputs[contract.EXPLAINED_CLASS_OUTPUT].dtype == tf.int64
    for name, spec in predict_outputs.items():
        assert (outputs[name].dtype, outputs[name].shape) == (spec.dtype, spec.shape), name

    images = [r["image"] for r in test_records[:5]]
    classes = len(prepared_stats["classes"])
    asked = [contract.TOP_CLASS, 1, classes + 3, 0, -7]  # out of range: the top-1
    answer = explain(image_bytes=tf.constant(images), class_index=tf.constant(asked, tf.int32))
    predicted = loaded.signatures[contract.SIGNATURE_NAME](image_bytes=tf.constant(images))
    scores = answer[contract.OUTPUT_NAME].numpy()
    np.testing.assert_allclose(scores, predicted[contract.OUTPUT_NAME].numpy(), atol=1e-5)
    top3 = np.argsort(-scores, axis=1)[:, :3]
    assert (top3 == np.argsort(-predicted[contract.OUTPUT_NAME].numpy(), axis=1)[:, :3]).all()
    top1 = scores.argmax(axis=1)
    assert answer[contract.EXPLAINED_CLASS_OUTPUT].numpy().tolist() == [
        top1[0],
        1,
        top1[2],
        0,
        top1[4],
    ]
    heat = answer[contract.HEAT_MAP_OUTPUT].numpy()
    assert heat.shape == (5, side, side)
    assert heat.min() >= 0 and heat.max() <= 1
    for row in heat:  # the peak is 1, unless nothing raised the class score
        assert row.max() == pytest.approx(1.0, abs=1e-5) or row.max() == 0


def test_class_order_is_the_taxonomy_order(trained, prepared_stats, test_records, taxonomy):
    from snapcat.contract.model_info import load_model_info

    info = load_model_info(str(trained.output))  # MODEL_DIR: its highest version
    assert info.version == int(trained.version_dir.name)
    classes = list(info.classes)
    assert classes == prepared_stats["classes"]
    assert len(classes) == len(set(classes)) > 2
    position = {slug: i for i, slug in enumerate(taxonomy.slugs)}
    assert classes == sorted(classes, key=position.__getitem__)
    assert set(classes) == {p.name for p in _sample_dirs()}
    # The training labels index this same list, so output i is classes[i].
    assert all(classes[r["label"]] == r["slug"] for r in test_records)
    assert info.labels == {s: taxonomy[s].label for s in classes}
    assert info.names == {s: taxonomy[s].name for s in classes}
    assert info.image_size == prepared_stats["image_size"]
    assert info.jpeg_quality == prepared_stats["jpeg_quality"]
    assert info.backbone == "xception"


def _sample_dirs():
    from conftest import SAMPLE_DIR

    return [p for p in SAMPLE_DIR.iterdir() if p.is_dir()]


def test_version_folder_layout_and_model_card(trained, prepared_stats):
    import tensorflow as tf

    from snapcat.contract.taxonomy import Taxonomy

    entries = sorted(p.name for p in trained.output.iterdir())
    versions = [n for n in entries if n.isdigit()]
    assert versions == [trained.version_dir.name]
    assert set(entries) == {trained.version_dir.name, "training"}  # no .staging-* left
    assert not [p for p in trained.output.rglob(".staging-*")]

    version = trained.version_dir
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables").is_dir()
    model_json = version / "assets" / "snapcat" / "model.json"
    info = json.loads(model_json.read_text("utf-8"))
    assert info["classes"] == prepared_stats["classes"]
    assert info["version"] == int(version.name)
    snapshot = Taxonomy.load(version / "assets" / "snapcat" / "taxonomy.yaml")
    assert snapshot.version == info["taxonomy_version"] == prepared_stats["taxonomy_version"]
    assert set(info["classes"]) <= set(snapshot.slugs)

    card = json.loads((version / "model_card.json").read_text("utf-8"))
    assert card["version"] == int(version.name)
    assert card["tensorflow_version"] == tf.__version__
    packages = card["packages"]
    assert {"python", "keras", "numpy", "snapcat"} <= set(packages)
    assert "tensorflow" in packages or "tensorflow-cpu" in packages
    assert card["model"]["classes"] == prepared_stats["classes"]
    assert card["signature"] == {
        "name": "serving_default",
        "input": "image_bytes",
        "outputs": [
            "probabilities",
            "classes",
            "model_version",
            "labels",
            "confidence_threshold",
            "image_size",
            "jpeg_quality",
        ],
        "explain": {
            "name": "explain",
            "inputs": ["image_bytes", "class_index"],
            "outputs": [
                "probabilities",
                "classes",
                "model_version",
                "labels",
                "confidence_threshold",
                "image_size",
                "jpeg_quality",
                "heat_map",
                "explained_class",
            ],
            "method": "Grad-CAM on the backbone's last feature map",
        },
    }
    assert card["warmup"] == {
        "file": "assets.extra/tf_serving_warmup_requests",
        "batch_sizes": [1, 8, 16, 32],
        "explain_batch_sizes": [1],
    }
    assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert card["training"]["mode"] == "two-phase"
    assert card["training"]["weights"] == str(trained.weights_file)
    assert card["training"]["image_size"] == prepared_stats["image_size"]
    assert card["data"]["classes"] == prepared_stats["classes"]
    assert card["result"]["best_epoch"] == trained.summary["best_epoch"]


def test_serving_model_reads_model_dir_or_version(trained, test_records):
    from snapcat.train.export import ServingModel

    by_dir = ServingModel(str(trained.output))
    by_version = ServingModel(str(trained.version_dir))
    assert by_dir.version_dir == by_version.version_dir == str(trained.version_dir)
    images = [r["image"] for r in test_records[:4]]
    np.testing.assert_allclose(by_dir.predict(images), by_version.predict(images), atol=1e-6)
    assert by_dir.predict([]).shape == (0, len(by_dir.info.classes))


# ------------------------------------------------------------------------------ atomicity
def test_export_appears_atomically_and_bumps_the_version(tmp_path, prepared, test_records):
    import keras

    from snapcat.contract.model_info import list_versions
    from snapcat.train.export import ServingModel, export_model

    classes = ["digital-devices", "furniture-interior", "plants"]
    model = _tiny_model(71, len(classes))
    root = tmp_path / "models"
    archive_class = type(keras.export.ExportArchive())  # the backend's own subclass
    original = archive_class.write_out

    def write_half_then_die(self, filepath, **kwargs):
        original(self, filepath, **kwargs)
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(archive_class, "write_out", write_half_then_die)
        with pytest.raises(OSError, match="disk full"):
            export_model(
                model,
                str(root),
                classes=classes,
                image_size=71,
                jpeg_quality=90,
                backbone="tiny",
                taxonomy_dir=str(prepared),
            )
    # TF Serving only loads integer folders: the failed export is invisible to it, and its
    # half-written staging folder is cleaned up.
    assert list_versions(str(root)) == []
    assert list(root.iterdir()) == []

    # Issue 10, finding 7: the staging folder of an export that was killed (its process gone)
    # stayed for good; the next export removes it.
    (root / ".staging-999999999-1700000000").mkdir()
    first = export_model(
        model, str(root), classes=classes, image_size=71, jpeg_quality=90, backbone="tiny"
    )
    second = export_model(
        model, str(root), classes=classes, image_size=71, jpeg_quality=90, backbone="tiny"
    )
    versions = [int(v.rsplit("/", 1)[1]) for v in (first, second)]
    assert versions[1] > versions[0]
    assert list_versions(str(root)) == versions
    assert not list(root.glob(".staging-*"))
    served = ServingModel(str(root))
    assert served.version_dir == second
    assert list(served.info.classes) == classes
    probabilities = served.predict([r["image"] for r in test_records[:3]])
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_next_version_is_past_any_existing_one(tmp_path):
    from snapcat.train.export import next_version

    (tmp_path / "99999999999").mkdir()
    (tmp_path / ".staging-99999999999999").mkdir()  # not a version
    assert next_version(str(tmp_path)) == 100000000000
    assert next_version(str(tmp_path / "absent")) > 1_700_000_000


# ------------------------------------------------------------------------------ calibration
def test_calibrated_export_serves_temperature_scaled_scores(tmp_path, test_records):
    """The signature applies the temperature: served probabilities are softmax(log p / T) of the
    Keras model's, on the same decoded pixels; model.json and the card record it."""
    import tensorflow as tf

    from snapcat.contract.confidence import is_confident
    from snapcat.stats import scale
    from snapcat.train.calibration_fit import Calibration
    from snapcat.train.export import ServingModel, export_model
    from snapcat.train.tf_image import decode_canonical

    classes = ["digital-devices", "furniture-interior", "plants", "beauty"]
    model = _tiny_model(71, len(classes))
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 40, bias])  # sharpen: an over-confident model
    calibration = Calibration(temperature=2.5, confidence_threshold=0.97, fitted_on="validation")
    calibrated = export_model(
        model, str(tmp_path / "cal"), classes=classes, image_size=71, jpeg_quality=90,
        backbone="tiny", calibration=calibration,
    )  # fmt: skip
    plain = export_model(
        model, str(tmp_path / "plain"), classes=classes, image_size=71, jpeg_quality=90,
        backbone="tiny",
    )  # fmt: skip
    images = [r["image"] for r in test_records[:6]]
    pixels = tf.stack([decode_canonical(tf.constant(b), 71) for b in images])
    raw = model.predict(pixels, verbose=0)
    served = ServingModel(calibrated)
    np.testing.assert_allclose(served.predict(images), scale(raw, 2.5), atol=1e-5)
    np.testing.assert_allclose(ServingModel(plain).predict(images), raw, atol=1e-5)
    assert served.predict(images).max() < raw.max()  # softer than the raw scores

    assert served.info.temperature == 2.5 and served.info.confidence_threshold == 0.97
    assert is_confident(served.predict(images), 0.97).dtype == bool
    card = json.loads(Path(calibrated, "model_card.json").read_text("utf-8"))
    assert card["calibration"]["temperature"] == 2.5
    assert card["calibration"]["fitted_on"] == "validation"
    plain_info = ServingModel(plain).info
    assert (plain_info.temperature, plain_info.confidence_threshold) == (1.0, None)
    plain_card = json.loads(Path(plain, "model_card.json").read_text("utf-8"))
    assert plain_card["calibration"]["fitted_on"] is None
    assert "uncalibrated" in plain_card["calibration"]["note"]


# ------------------------------------------------------------------------------ one copy of weights
@pytest.mark.parametrize(
    "backbone", sorted(__import__("snapcat.train.modeling").train.modeling.BACKBONES)
)
def test_every_weight_is_stored_once(backbone, tmp_path, prepared):
    """keras-team/keras#23553: a tracked ExportArchive stores each weight twice, and TF Serving
    loads both copies. The checkpoint must hold exactly the model's parameters."""
    from snapcat.contract.signature import DESCRIPTION_OUTPUTS, OUTPUT_NAME
    from snapcat.train.export import ServingModel, export_model, stored_values
    from snapcat.train.modeling import ModelSpec, build_model, get_backbone

    classes = ["digital-devices", "furniture-interior", "plants"]
    size = get_backbone(backbone).min_size
    model, _ = build_model(
        ModelSpec(backbone=backbone, num_classes=len(classes), image_size=size, weights="none")
    )
    version_dir = export_model(
        model,
        str(tmp_path / "m"),
        classes=classes,
        image_size=size,
        jpeg_quality=90,
        backbone=backbone,
        taxonomy_dir=str(prepared),
    )
    assert stored_values(version_dir) == model.count_params()
    served = ServingModel(version_dir)
    assert served.output_names == sorted([OUTPUT_NAME, *DESCRIPTION_OUTPUTS])
    # every backbone's export carries warm-up records its own signature runs
    assert_warmup_records_replay(version_dir, served, len(classes))


# ------------------------------------------------------------------------------ warm-up records
def assert_warmup_records_replay(version_dir: str, served, num_classes: int) -> None:
    """Reads assets.extra/tf_serving_warmup_requests back with TF Serving's own protos: one
    PredictLog per warm-up batch size, each a valid request for serving_default that the
    exported signature runs, then the explain records (top-1 class), which the explain
    signature runs."""
    import tensorflow as tf
    from PIL import Image
    from tensorflow_serving.apis import prediction_log_pb2

    from snapcat.train.warmup import EXPLAIN_WARMUP_BATCH_SIZES, WARMUP_BATCH_SIZES

    path = Path(version_dir, "assets.extra", "tf_serving_warmup_requests")
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(path))
    ]
    count = len(WARMUP_BATCH_SIZES) + len(EXPLAIN_WARMUP_BATCH_SIZES)
    assert [r.WhichOneof("log_type") for r in records] == ["predict_log"] * count
    explained = []
    for record in records[len(WARMUP_BATCH_SIZES) :]:
        request = record.predict_log.request
        assert request.model_spec.signature_name == "explain"
        assert sorted(request.inputs) == ["class_index", "image_bytes"]
        images = tf.make_ndarray(request.inputs["image_bytes"]).tolist()
        indices = tf.make_ndarray(request.inputs["class_index"]).tolist()
        assert request.inputs["class_index"].dtype == tf.int32.as_datatype_enum
        assert indices == [-1] * len(images)  # the top-1 class
        outputs = served.explain(images, indices)
        assert outputs["heat_map"].shape[0] == len(images)
        explained.append(len(images))
    assert tuple(explained) == EXPLAIN_WARMUP_BATCH_SIZES
    sizes = []
    for record in records[: len(WARMUP_BATCH_SIZES)]:
        request = record.predict_log.request
        assert request.model_spec.name == "listing-category"
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["image_bytes"]
        tensor = request.inputs["image_bytes"]
        assert tf.dtypes.as_dtype(tensor.dtype) == tf.string
        assert [d.size for d in tensor.tensor_shape.dim] == [len(tensor.string_val)]
        images = tf.make_ndarray(tensor).tolist()
        # canonical images: JPEGs at the model's input size, as the transformer sends
        assert {Image.open(io.BytesIO(i)).size for i in images} == {(served.info.image_size,) * 2}
        outputs = served.run(images)
        assert outputs["probabilities"].shape == (len(images), num_classes)
        assert np.isfinite(outputs["probabilities"]).all()
        sizes.append(len(images))
    assert tuple(sizes) == WARMUP_BATCH_SIZES
    images_in_file = sum(WARMUP_BATCH_SIZES) + sum(EXPLAIN_WARMUP_BATCH_SIZES)
    assert path.stat().st_size < 32 * 1024 * images_in_file  # a few KB per image
