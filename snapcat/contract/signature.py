"""The serving signature: the names a predictor's answer and a transformer's request agree on.

Written by the TensorFlow export (:mod:`snapcat.train.export`), read by the transformer
(:mod:`snapcat.serve.transformer_core`), the local predictor and the warm-up records; kept here,
without TensorFlow, so that both sides of the process boundary import one definition.
"""

from __future__ import annotations

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "image_bytes"
OUTPUT_NAME = "probabilities"
#: Per row, the slugs of the probabilities' columns and the model version that answered: a
#: transformer labels a predictor's answer by what the predictor says it is, so during a canary
#: (KServe splits transformer and predictor traffic independently) an old transformer talking to
#: a new predictor, or the reverse, still labels every score correctly.
CLASSES_OUTPUT = "classes"
VERSION_OUTPUT = "model_version"
#: Per row, the display (Korean) label of each column, the top-3 mass at or above which the answer
#: is ``confident`` (:data:`NO_THRESHOLD` when the model was not calibrated: never confident), and
#: the normalization the model was trained on (canonical JPEG side and quality). Models exported
#: before these outputs existed answer without them; the transformer then falls back to the
#: packaged taxonomy's labels and is never confident.
LABELS_OUTPUT = "labels"
THRESHOLD_OUTPUT = "confidence_threshold"
IMAGE_SIZE_OUTPUT = "image_size"
JPEG_QUALITY_OUTPUT = "jpeg_quality"
#: The confidence threshold of an uncalibrated model (JSON has no NaN or infinity).
NO_THRESHOLD = -1.0
DESCRIPTION_OUTPUTS = (
    CLASSES_OUTPUT,
    VERSION_OUTPUT,
    LABELS_OUTPUT,
    THRESHOLD_OUTPUT,
    IMAGE_SIZE_OUTPUT,
    JPEG_QUALITY_OUTPUT,
)
