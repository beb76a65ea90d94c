"""KServe's model routes the transformer serves, written once.

The HTTP guard admits a body only on :data:`BODY_PATH` (any other path is 404 before its body is
read), the per-version metrics count :data:`INFERENCE_PATH`, and the ``model_name`` label of
every metric comes from :data:`MODEL_IN_PATH`. V1 protocol: ``POST /v1/models/<name>:predict``
(and ``:explain``, Grad-CAM heat maps under the same admission: :mod:`snapcat.serve.explain`); V2 (open
inference) protocol: ``POST /v2/models/<name>[/versions/<v>]/infer``.
"""

from __future__ import annotations

import re

#: A model name in a path: no slash, no colon (the V1 verb follows one).
MODEL_NAME = r"[^/:]+"
_PREDICT_V1 = rf"/v1/models/{MODEL_NAME}:predict"
_EXPLAIN_V1 = rf"/v1/models/{MODEL_NAME}:explain"
_INFER_V2 = rf"/v2/models/{MODEL_NAME}(?:/versions/[^/]+)?/infer"

#: The routes that run a prediction.
INFERENCE_PATH = re.compile(rf"^(?:{_PREDICT_V1}|{_INFER_V2})$")
#: The routes that take a request body: the predictions and KServe's explain.
BODY_PATH = re.compile(rf"^(?:{_PREDICT_V1}|{_EXPLAIN_V1}|{_INFER_V2})$")
#: Any route about one model; group 1 is its name.
MODEL_IN_PATH = re.compile(rf"^/v[12]/models/({MODEL_NAME})")
