"""``POST /v1/models/<name>:explain``: the transformer's side of explanations, without TensorFlow.

The predictor computes them: the exported SavedModel's ``explain`` signature
(:mod:`snapcat.train.gradcam`) answers predict's outputs plus a Grad-CAM heat map per photo, and
TF Serving runs it through its REST predict verb with ``"signature_name": "explain"``. This module

- reads the optional class to explain of each V1 instance (``class_index``: a column of the
  model's classes; absent or ``-1``: the top-1) (:func:`class_indices`),
- builds TF Serving's request for the signature (:func:`predictor_body`),
- reads the heat maps back (:func:`read_explanations`), and
- answers predict's V1 response (same top-k, ``confident``, ``prediction_id``) with, per photo,
  an ``explanation``: the explained class, the heat map as numbers and a PNG overlay, the heat
  map blended on the canonical photo the model saw (:mod:`snapcat.imaging.heat_overlay`).

Cost (``benchmarks/explain_cost_bench.py``): the predictor's share is about one prediction
(Grad-CAM's gradient runs only from the class logit back through the head to the last feature
map, never through the backbone), but the transformer encodes a PNG overlay per photo (~10-20 ms
at 224-299 px on the dev machine: several times the ~8-10 CPU-ms it spends on a
predicted photo) and answers ~5x the bytes. So admission counts each explained photo as
:data:`EXPLAIN_SLOTS` photo slots of the in-flight allowance (:mod:`snapcat.serve.admission`):
explain traffic fills a replica at half the photos predict traffic does, and the same per-request
caps (photos, bytes, decode budget) apply before anything is decoded.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from snapcat.contract.signature import (
    CLASS_INDEX_INPUT,
    EXPLAIN_SIGNATURE_NAME,
    EXPLAINED_CLASS_OUTPUT,
    HEAT_MAP_OUTPUT,
    HEAT_MAP_SIZE,
    INPUT_NAME,
    TOP_CLASS,
)
from snapcat.imaging.heat_overlay import overlay_png
from snapcat.serve.errors import BadRequestError, PredictorResponseError
from snapcat.serve.responses import ResponseBuilder
from snapcat.serve.transformer_core import PredictorAnswer

#: Photo slots one explained photo takes of the admission allowance (see the module docstring).
EXPLAIN_SLOTS = 2
METHOD = "grad-cam"


@dataclass(frozen=True)
class Explanation:
    """One photo's heat map (``HEAT_MAP_SIZE`` rows of floats in [0, 1]) and the column it
    explains."""

    heat_map: tuple[tuple[float, ...], ...]
    class_index: int


def class_indices(body: Any, count: int, classes: int | None) -> list[int]:
    """Each V1 instance's ``class_index`` (absent or :data:`TOP_CLASS`: the top-1). ``classes``:
    how many the served model has, when known: an index past it is a 400, not a silent top-1."""
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or len(instances) != count:
        return [TOP_CLASS] * count
    indices = []
    for index, instance in enumerate(instances):
        value = instance.get(CLASS_INDEX_INPUT, TOP_CLASS) if isinstance(instance, dict) else None
        if value is None:
            value = TOP_CLASS
        valid = isinstance(value, int) and not isinstance(value, bool) and value >= TOP_CLASS
        if valid and classes is not None and value >= classes:
            valid = False
        if not valid:
            limit = f"0..{classes - 1}" if classes else "a class's column"
            raise BadRequestError(
                f"instance {index}: '{CLASS_INDEX_INPUT}' must be {TOP_CLASS} (the top-1) or "
                f"{limit}, got {json.dumps(value)[:40]}",
                reason="bad-field",
            )
        indices.append(value)
    return indices


def predictor_body(canonical: Sequence[bytes], indices: Sequence[int]) -> bytes:
    """TF Serving's REST request for the ``explain`` signature (row format: each instance names
    both inputs)."""
    instances = [
        {INPUT_NAME: {"b64": base64.b64encode(image).decode("ascii")}, CLASS_INDEX_INPUT: index}
        for image, index in zip(canonical, indices, strict=True)
    ]
    body = {"signature_name": EXPLAIN_SIGNATURE_NAME, "instances": instances}
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def read_explanations(response: Any, count: int) -> list[Explanation]:
    """The heat maps of the predictor's answer (whose scores
    :meth:`~snapcat.serve.transformer_core.TransformerCore.read_predictions` reads). An answer
    without them (a model exported before the signature answers 400 instead) or with malformed
    ones is the predictor's fault: 500."""
    rows = response.get("predictions") if isinstance(response, dict) else None
    if not isinstance(rows, list) or len(rows) != count:
        raise PredictorResponseError("the predictor's explain answer has no rows", status=500)
    found = []
    for row in rows:
        heat = row.get(HEAT_MAP_OUTPUT) if isinstance(row, dict) else None
        explained = row.get(EXPLAINED_CLASS_OUTPUT) if isinstance(row, dict) else None
        if not _is_heat_map(heat) or not isinstance(explained, int):
            raise PredictorResponseError(
                f"the predictor's answer has no {HEAT_MAP_SIZE}x{HEAT_MAP_SIZE} "
                f"'{HEAT_MAP_OUTPUT}' and '{EXPLAINED_CLASS_OUTPUT}' per photo",
                status=500,
                reason="model-mismatch",
            )
        clipped = tuple(tuple(min(1.0, max(0.0, float(v))) for v in line) for line in heat)
        found.append(Explanation(clipped, explained))
    return found


def _is_heat_map(heat: Any) -> bool:
    return (
        isinstance(heat, list)
        and len(heat) == HEAT_MAP_SIZE
        and all(
            isinstance(line, list)
            and len(line) == HEAT_MAP_SIZE
            and all(isinstance(v, int | float) and math.isfinite(v) for v in line)
            for line in heat
        )
    )


def v1_response(
    responses: ResponseBuilder,
    answer: PredictorAnswer,
    explanations: Sequence[Explanation],
    photos: Sequence[bytes],
) -> dict[str, Any]:
    """Predict's V1 response with an ``explanation`` per prediction."""
    response = responses.v1_response(answer)
    for prediction, explanation, photo, classes, labels in zip(
        response["predictions"], explanations, photos, answer.classes, answer.labels, strict=True
    ):
        column = explanation.class_index
        known = 0 <= column < len(classes)
        prediction["explanation"] = {
            "method": METHOD,
            "slug": classes[column] if known else None,
            "label": labels[column] if known else None,
            "class_index": column,
            "heat_map": [[round(v, 3) for v in line] for line in explanation.heat_map],
            "overlay_png": base64.b64encode(overlay_png(photo, explanation.heat_map)).decode(),
        }
    return response
