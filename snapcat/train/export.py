"""Export: the contract between training and TF Serving.

``MODEL_DIR/<version>/`` is a SavedModel whose ``serving_default`` signature takes ``image_bytes``
(``tf.string [N]``, canonical image bytes; TF Serving's REST API carries them as
``{"b64": ...}``), decodes and preprocesses inside the graph, and returns ``probabilities``
(``float32 [N, C]``, temperature-scaled when the model was calibrated: :mod:`snapcat.train.calibration_fit`)
with, per row, the class slugs and the model version. Beside the graph:
``assets/snapcat/model.json`` (class order, labels, image spec: :mod:`snapcat.contract.model_info`), the
taxonomy snapshot, ``model_card.json``, and TF Serving's warm-up records
(``assets.extra/tf_serving_warmup_requests``, :mod:`snapcat.train.warmup`).

Every answer describes the model that computed it (:data:`DESCRIPTION_OUTPUTS`): the serving
transformer downloads no model files, it learns labels, confidence threshold and image spec from
the predictor's answers (see :mod:`snapcat.serve.transformer_core`).

The version folder is written under a non-integer temporary name and renamed into place, so TF
Serving (which only loads integer folders) never picks up a half-written model.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from snapcat import storage
from snapcat.contract.model_info import (
    MODEL_CARD_FILE,
    ModelInfo,
    assets_dir,
    info_path,
    list_versions,
    load_model_info,
    resolve_version_dir,
    taxonomy_path,
)
from snapcat.contract.service_name import DEFAULT_MODEL_NAME
from snapcat.contract.signature import (
    CLASS_INDEX_INPUT,
    CLASSES_OUTPUT,
    DESCRIPTION_OUTPUTS,
    EXPLAIN_OUTPUTS,
    EXPLAIN_SIGNATURE_NAME,
    EXPLAINED_CLASS_OUTPUT,
    HEAT_MAP_OUTPUT,
    IMAGE_SIZE_OUTPUT,
    INPUT_NAME,
    JPEG_QUALITY_OUTPUT,
    LABELS_OUTPUT,
    NO_THRESHOLD,
    OUTPUT_NAME,
    SIGNATURE_NAME,
    THRESHOLD_OUTPUT,
    TOP_CLASS,
    VERSION_OUTPUT,
)
from snapcat.contract.taxonomy import Taxonomy
from snapcat.train.calibration_fit import Calibration
from snapcat.train.gradcam import GradCam
from snapcat.train.warmup import (
    EXPLAIN_WARMUP_BATCH_SIZES,
    WARMUP_BATCH_SIZES,
    WARMUP_FILE,
    write_warmup_requests,
)

_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "pillow", "pillow-heif", "snapcat")


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def next_version(model_dir: str) -> int:
    """Seconds since the epoch, bumped past any existing version: TF Serving serves the highest."""
    existing = list_versions(model_dir)
    return max(int(time.time()), (existing[-1] + 1) if existing else 0)


def export_model(
    model,
    model_dir: str,
    *,
    classes: list[str],
    image_size: int,
    jpeg_quality: int,
    backbone: str,
    taxonomy_dir: str | None = None,
    card: dict | None = None,
    calibration: Calibration | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
) -> str:
    """Writes ``model`` as a new version under ``model_dir``; returns the version folder.

    ``calibration`` (fitted on the validation split) puts its temperature into the signature, so
    TF Serving returns calibrated probabilities, and its confidence threshold into model.json;
    without one the model is exported uncalibrated and its card says so. ``model_name`` goes into
    the warm-up requests' model_spec (TF Serving replays them whatever the name)."""
    import keras
    import tensorflow as tf

    from snapcat.train.tf_image import decode_canonical

    taxonomy = (
        Taxonomy.load(Path(taxonomy_dir, "taxonomy.yaml"))
        if taxonomy_dir and Path(taxonomy_dir, "taxonomy.yaml").exists()
        else Taxonomy.load()
    )
    version = next_version(model_dir)
    info = ModelInfo(
        classes=tuple(classes),
        labels={s: taxonomy[s].label for s in classes},
        names={s: taxonomy[s].name for s in classes},
        taxonomy_version=taxonomy.version,
        image_size=image_size,
        jpeg_quality=jpeg_quality,
        backbone=backbone,
        version=version,
        temperature=calibration.temperature if calibration else 1.0,
        confidence_threshold=calibration.confidence_threshold if calibration else None,
        calibration=calibration.to_dict() if calibration else None,
    )
    temperature = info.temperature
    threshold = NO_THRESHOLD if info.confidence_threshold is None else info.confidence_threshold
    description = {  # (value, dtype): one copy per answered row
        CLASSES_OUTPUT: (list(classes), tf.string),
        VERSION_OUTPUT: (version, tf.int64),
        LABELS_OUTPUT: ([info.labels[s] for s in classes], tf.string),
        THRESHOLD_OUTPUT: (float(threshold), tf.float64),
        IMAGE_SIZE_OUTPUT: (image_size, tf.int64),
        JPEG_QUALITY_OUTPUT: (jpeg_quality, tf.int64),
    }

    def decode(image_bytes):
        return tf.map_fn(
            lambda b: decode_canonical(b, image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )

    def answer(probabilities, rows):
        if temperature != 1.0:  # softmax(logits / T), log p standing in for the logits
            logits = tf.math.log(tf.maximum(probabilities, 1e-12))
            probabilities = tf.nn.softmax(logits / temperature, axis=-1)
        outputs = {OUTPUT_NAME: probabilities}
        for name, (value, dtype) in description.items():
            constant = tf.constant(value, dtype)
            if isinstance(value, list):
                outputs[name] = tf.tile(constant[tf.newaxis], [rows, 1])
            else:
                outputs[name] = tf.fill([rows], constant)
        return outputs

    def serve(image_bytes):
        probabilities = tf.cast(model(decode(image_bytes), training=False), tf.float32)
        return answer(probabilities, tf.shape(image_bytes)[0])

    grad_cam = GradCam(model)

    def explain(image_bytes, class_index):
        # The same forward pass gives the scores and the heat map: its top-3 are predict's.
        probabilities, heat_map, explained = grad_cam(decode(image_bytes), class_index)
        outputs = answer(probabilities, tf.shape(image_bytes)[0])
        outputs[HEAT_MAP_OUTPUT] = heat_map
        outputs[EXPLAINED_CLASS_OUTPUT] = explained
        return outputs

    # Not ``archive.track(model)``: tracking stores every weight a second time (under
    # ``variables/`` and ``_all_variables/``, keras-team/keras#23553) and TF Serving loads both,
    # doubling each replica's memory. The endpoint captures every variable the signature uses,
    # which is all serving needs.
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
    )
    archive.add_endpoint(
        name=EXPLAIN_SIGNATURE_NAME,
        fn=explain,
        input_signature=[
            tf.TensorSpec([None], tf.string, name=INPUT_NAME),
            tf.TensorSpec([None], tf.int32, name=CLASS_INDEX_INPUT),
        ],
    )
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    storage.sweep_stale_staging(root, ".staging-")  # left by exports that were killed
    staging = root / f".staging-{os.getpid()}-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    target = root / str(version)
    try:
        archive.write_out(str(staging), verbose=False)
        Path(assets_dir(str(staging))).mkdir(parents=True, exist_ok=True)
        Path(info_path(str(staging))).write_text(
            json.dumps(info.to_dict(), ensure_ascii=False, indent=2)
        )
        taxonomy.dump(taxonomy_path(str(staging)))
        write_warmup_requests(
            staging, image_size=image_size, jpeg_quality=jpeg_quality, model_name=model_name
        )
        model_card = {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": info.to_dict(),
            "signature": {
                "name": SIGNATURE_NAME,
                "input": INPUT_NAME,
                "outputs": [OUTPUT_NAME, *DESCRIPTION_OUTPUTS],
                "explain": {
                    "name": EXPLAIN_SIGNATURE_NAME,
                    "inputs": [INPUT_NAME, CLASS_INDEX_INPUT],
                    "outputs": [OUTPUT_NAME, *DESCRIPTION_OUTPUTS, *EXPLAIN_OUTPUTS],
                    "method": "Grad-CAM on the backbone's last feature map",
                },
            },
            "warmup": {
                "file": str(WARMUP_FILE),
                "batch_sizes": list(WARMUP_BATCH_SIZES),
                "explain_batch_sizes": list(EXPLAIN_WARMUP_BATCH_SIZES),
            },
            # TF Serving must be at least this TensorFlow version to load the graph (manifests
            # pin it).
            "tensorflow_version": tf.__version__,
            "packages": package_versions(),
            "calibration": calibration.to_dict()
            if calibration
            else {"fitted_on": None, "note": "no validation split: exported uncalibrated"},
            **(card or {}),
        }
        (staging / MODEL_CARD_FILE).write_text(
            json.dumps(model_card, ensure_ascii=False, indent=2, default=str)
        )
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed export leaves nothing behind
    return str(target)


def stored_values(version_dir: str) -> int:
    """How many numbers the SavedModel's checkpoint holds: equal to the model's parameter count
    when each weight is stored once."""
    import numpy as np
    import tensorflow as tf

    checkpoint = str(Path(version_dir, "variables", "variables"))
    return sum(
        int(np.prod(shape))
        for name, shape in tf.train.list_variables(checkpoint)
        if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    )


def update_model_card(version_dir: str, **sections) -> None:
    """Adds sections (e.g. ``evaluation``) to a version's model card, atomically."""
    path = Path(version_dir) / MODEL_CARD_FILE
    card = json.loads(path.read_text("utf-8")) if path.exists() else {}
    card.update(sections)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, ensure_ascii=False, indent=2, default=str), "utf-8")
    tmp.replace(path)


class ServingModel:
    """The exported signature, loaded in-process with plain ``tf.saved_model.load``: what
    evaluation and the local predictor run, so they measure exactly what TF Serving serves."""

    def __init__(self, model_or_version_dir: str):
        import tensorflow as tf

        self.version_dir = resolve_version_dir(model_or_version_dir)
        self.info = load_model_info(self.version_dir)
        self._loaded = tf.saved_model.load(self.version_dir)
        self._signature = self._loaded.signatures[SIGNATURE_NAME]

    def run(self, images: list[bytes]) -> dict:
        """Canonical image bytes in, every signature output (numpy arrays) out."""
        import numpy as np
        import tensorflow as tf

        if not images:
            empty = {OUTPUT_NAME: np.zeros((0, len(self.info.classes)), np.float32)}
            return {name: empty.get(name, np.zeros((0,))) for name in self.output_names}
        result = self._signature(**{INPUT_NAME: tf.constant(images, dtype=tf.string)})
        return {name: tensor.numpy() for name, tensor in result.items()}

    @property
    def output_names(self) -> list[str]:
        return sorted(self._signature.structured_outputs)

    def predict(self, images: list[bytes]):
        """Canonical image bytes in, ``float32 [N, C]`` probabilities (numpy) out."""
        return self.run(images)[OUTPUT_NAME]

    @property
    def explains(self) -> bool:
        """Whether the version has the ``explain`` signature (exported before it: no)."""
        return EXPLAIN_SIGNATURE_NAME in self._loaded.signatures

    def explain(self, images: list[bytes], class_indices: list[int] | None = None) -> dict:
        """The ``explain`` signature: canonical image bytes and one class per photo (default and
        :data:`~snapcat.contract.signature.TOP_CLASS`: the top-1) in, every output (numpy) out:
        predict's plus ``heat_map`` and ``explained_class``."""
        import tensorflow as tf

        if not self.explains:
            raise ValueError(f"{self.version_dir} was exported without an explain signature")
        indices = [TOP_CLASS] * len(images) if class_indices is None else list(class_indices)
        if len(indices) != len(images):
            raise ValueError(f"{len(images)} photos but {len(indices)} class indices")
        result = self._loaded.signatures[EXPLAIN_SIGNATURE_NAME](
            **{
                INPUT_NAME: tf.constant(images, dtype=tf.string),
                CLASS_INDEX_INPUT: tf.constant(indices, dtype=tf.int32),
            }
        )
        return {name: tensor.numpy() for name, tensor in result.items()}
