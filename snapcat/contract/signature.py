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

#: The ``explain`` signature (:mod:`snapcat.train.gradcam`): the same ``image_bytes`` plus one
#: ``class_index`` per photo (``int32 [N]``; :data:`TOP_CLASS` or any index outside the model's
#: classes explains the top-1 class). It answers every output of :data:`SIGNATURE_NAME`, computed
#: by the same forward pass (so its top-3 are predict's), plus a Grad-CAM heat map per photo
#: (``float32 [N, HEAT_MAP_SIZE, HEAT_MAP_SIZE]``, in [0, 1], its peak 1 unless nothing in the photo
#: raised the class score: then all 0) over the canonical square the model saw, and the class it
#: explains (``int64 [N]``, a column of ``probabilities``). TF Serving computes it: clients call it
#: through the REST predict verb with ``"signature_name": "explain"``.
EXPLAIN_SIGNATURE_NAME = "explain"
CLASS_INDEX_INPUT = "class_index"
TOP_CLASS = -1
HEAT_MAP_OUTPUT = "heat_map"
EXPLAINED_CLASS_OUTPUT = "explained_class"
#: The heat map's side: the backbones' last feature maps are 7x7 to 10x10 at their usual input
#: sizes, resampled (bilinear) to one size so every model answers the same shape.
HEAT_MAP_SIZE = 14
EXPLAIN_OUTPUTS = (HEAT_MAP_OUTPUT, EXPLAINED_CLASS_OUTPUT)
