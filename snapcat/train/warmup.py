"""TF Serving warm-up records, written into every exported model version.

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
``PredictionLog`` protos, ``tensorflow_serving/g3doc/saved_model_warmup.md``) when it loads a
version, before the version is AVAILABLE: graph set-up, memory allocation and (on a GPU) kernel
selection for each batch shape happen then, not on the first users of a new pod or canary.

Each record is a ``PredictRequest`` for ``serving_default`` with a batch of canonical images (what
the transformer sends), one record per size in :data:`WARMUP_BATCH_SIZES`: the batch shapes
production runs; then one per size in :data:`EXPLAIN_WARMUP_BATCH_SIZES` for the ``explain``
signature (top-1 class), whose gradient graph would otherwise be set up by a replica's first
``:explain`` caller. TF Serving replays records through its batching layer one at a time, so these
must be the GPU overlay's ``allowed_batch_sizes`` (a record of N images runs as a batch of N) and
no larger than any deployment's ``max_batch_size`` (a larger record fails the model load);
``tests/contract/test_tf_serving_config.py`` checks both against the shipped batching files. The local
predictor replays the same records at load (:mod:`snapcat.local.predictor`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from snapcat.contract.image_spec import MIN_MODEL_SIZE, ImageSpec
from snapcat.contract.signature import (
    CLASS_INDEX_INPUT,
    EXPLAIN_SIGNATURE_NAME,
    INPUT_NAME,
    SIGNATURE_NAME,
    TOP_CLASS,
)
from snapcat.imaging.normalize import encode_canonical

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
#: 1: a lone photo; 8, 16, 32: the prod overlay's allowed_batch_sizes (32: its max_batch_size).
WARMUP_BATCH_SIZES = (1, 8, 16, 32)
#: 1: an ``:explain`` of one photo, the usual one (explain traffic is rare: its first call matters,
#: not each batch shape's).
EXPLAIN_WARMUP_BATCH_SIZES = (1,)
#: TF Serving's limit (WarmupConsts::kMaxNumRecords).
MAX_RECORDS = 1000


def warmup_images(size: int, jpeg_quality: int, count: int = 4) -> list[bytes]:
    """``count`` canonical images (``size`` x ``size`` RGB JPEGs encoded as the transformer
    encodes them) of smooth synthetic scenes: decoded like real photos, yet a few KB each."""

    # encode_canonical reads only the JPEG settings; the image is already at the model's size
    # (which may be below the transformer's minimum for tiny test models).
    encoding = ImageSpec(size=max(size, MIN_MODEL_SIZE), jpeg_quality=jpeg_quality)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    images = []
    for i in range(count):
        hue = np.array([(60 * i) % 256, (120 + 50 * i) % 256, (200 - 40 * i) % 256], np.float32)
        pixels = (ramp[:, None, None] * 0.5 + ramp[None, :, None] * 0.3 + hue * 0.2) % 256
        images.append(encode_canonical(Image.fromarray(pixels.astype(np.uint8), "RGB"), encoding))
    return images


def write_warmup_requests(
    version_dir: str | Path,
    *,
    image_size: int,
    jpeg_quality: int,
    model_name: str,
    batch_sizes: tuple[int, ...] = WARMUP_BATCH_SIZES,
    explain_batch_sizes: tuple[int, ...] = EXPLAIN_WARMUP_BATCH_SIZES,
) -> Path:
    """Writes the warm-up file into ``version_dir``; returns its path. ``explain_batch_sizes``:
    () for a model without the ``explain`` signature (TF Serving fails the load on a record for
    a signature the model lacks)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    records = [(SIGNATURE_NAME, n) for n in batch_sizes]
    records += [(EXPLAIN_SIGNATURE_NAME, n) for n in explain_batch_sizes]
    if not 0 < len(records) <= MAX_RECORDS:
        raise ValueError(f"between 1 and {MAX_RECORDS} warm-up records, not {len(records)}")
    images = warmup_images(image_size, jpeg_quality)
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, size in records:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            batch = [images[i % len(images)] for i in range(size)]
            request.inputs[INPUT_NAME].CopyFrom(
                tf.make_tensor_proto(batch, dtype=tf.string, shape=[size])
            )
            if signature == EXPLAIN_SIGNATURE_NAME:
                request.inputs[CLASS_INDEX_INPUT].CopyFrom(
                    tf.make_tensor_proto([TOP_CLASS] * size, dtype=tf.int32, shape=[size])
                )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir: str | Path) -> list:
    """The ``PredictRequest`` protos of a version's warm-up file ([] when it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(
                f"{path}: a {log.WhichOneof('log_type')} record; snapcat writes predict logs"
            )
        requests.append(log.predict_log.request)
        if len(requests) > MAX_RECORDS:
            raise ValueError(f"{path}: more than {MAX_RECORDS} warm-up records")
    return requests


#: The inputs of each signature a warm-up record may call.
_SIGNATURE_INPUTS = {
    SIGNATURE_NAME: [INPUT_NAME],
    EXPLAIN_SIGNATURE_NAME: sorted([INPUT_NAME, CLASS_INDEX_INPUT]),
}


def request_rows(request) -> tuple[str, list[bytes], list[int] | None]:
    """(signature, image batch, class indices: ``explain`` only, else None) of one warm-up
    ``PredictRequest`` for one of snapcat's signatures."""
    signature = request.model_spec.signature_name or SIGNATURE_NAME
    if sorted(request.inputs) != _SIGNATURE_INPUTS.get(signature):
        raise ValueError(
            f"warm-up request for signature {signature!r} with inputs {sorted(request.inputs)}; "
            f"the model serves {', '.join(f'{k!r} with {v}' for k, v in _SIGNATURE_INPUTS.items())}"
        )
    images = list(request.inputs[INPUT_NAME].string_val)
    if signature == SIGNATURE_NAME:
        return signature, images, None
    return signature, images, list(request.inputs[CLASS_INDEX_INPUT].int_val)
