"""The transformer's answers: the top-k categories of each photo, labelled with the labels the
model that answered carries (never from this package's code, except for models exported before
answers carried labels: :func:`snapcat.serve.transformer_core.packaged_labels`), in the V1 form
(``{"predictions": [{"categories": [...]}], "model_version": ...}``) and the V2 form (outputs
``slug`` / ``label`` / ``score``, each ``[N, k]``), each photo with ``confident``
(:mod:`snapcat.train.calibration_fit`) and a ``prediction_id`` (V1: a field of each prediction;
V2: a ``prediction_id`` BYTES output of shape [N]): the id the app backend reports the seller's
final category with, and the feedback sink joins on (docs/deploy.md, feedback loop). Each id is
signed (:mod:`snapcat.contract.prediction_signing`, key from ``SNAPCAT_PREDICTION_KEYS``) over the
answer's version, slugs and ``confident`` flag, so the sink takes labels only for real answers.

A new response field belongs here: the answer is built once, and nothing downstream (the live
metrics middleware, serving/version_metrics.py) parses or rewrites it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from snapcat.contract.confidence import is_confident
from snapcat.contract.prediction_signing import KEYS_ENV, KeyRing
from snapcat.serve.transformer_core import PredictorAnswer

log = logging.getLogger(__name__)


def default_signer() -> KeyRing:
    """The key ring named by ``SNAPCAT_PREDICTION_KEYS`` (the mounted Secret). Without one the
    answers still carry ids, signed with a random key: the feedback sink refuses them (loudly, in
    this log) rather than anyone being able to forge them."""
    ring = KeyRing.from_env()
    if ring is None:
        log.warning(
            "%s is not set: prediction ids are signed with a random key, and the feedback sink "
            "will refuse labels for them (docs/deploy.md, feedback loop)",
            KEYS_ENV,
        )
        ring = KeyRing.ephemeral()
    return ring


class ResponseBuilder:
    """Shapes a :class:`PredictorAnswer` as the top ``top_k`` categories per photo."""

    #: The V2 outputs holding the top-k of each photo, and their datatypes.
    _RANKED = (("slug", "BYTES"), ("label", "BYTES"), ("score", "FP64"))

    def __init__(self, top_k: int, signer: KeyRing | None = None):
        self.top_k = top_k
        self.signer = signer or default_signer()

    def prediction_ids(self, version: str, rows: list) -> list[str]:
        """One signed id per answered photo (:data:`snapcat.feedback.events.PREDICTION_ID`)."""
        return [
            self.signer.sign(str(version), [c["slug"] for c in top], confident)
            for top, confident in rows
        ]

    @staticmethod
    def confident(probabilities: Sequence[float], threshold: float | None) -> bool:
        """Whether the app may show just the top 3: their summed (calibrated) score reaches the
        threshold the answering model carries. A model without one (no validation split, or
        exported before calibration or before answers carried it) is never confident."""
        return bool(is_confident([probabilities], threshold)[0])

    def width(self, answer: PredictorAnswer) -> int:
        """Categories per photo: ``top_k``, or fewer when the model has fewer classes."""
        return min([self.top_k, *(len(c) for c in answer.classes)])

    def categories(
        self, probabilities: Sequence[float], classes: Sequence[str], labels: Sequence[str], k: int
    ) -> list[dict[str, Any]]:
        """The top-k ``{"slug", "label", "score"}`` of one image, best first."""
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
        return [
            {"slug": classes[i], "label": labels[i], "score": round(float(probabilities[i]), 4)}
            for i in order[:k]
        ]

    def _rows(self, answer: PredictorAnswer):
        """Per photo: its top-k categories and whether it is confident."""
        k = self.width(answer)
        for row, classes, labels, threshold in zip(
            answer.probabilities, answer.classes, answer.labels, answer.thresholds, strict=True
        ):
            yield self.categories(row, classes, labels, k), self.confident(row, threshold)

    def tops(self, answer: PredictorAnswer) -> list[tuple[str, float]]:
        """(top-1 slug, its score as answered) of each photo: what the live metrics count."""
        tops = []
        for row, classes in zip(answer.probabilities, answer.classes, strict=True):
            best = max(range(len(row)), key=lambda i: row[i])
            tops.append((classes[best], round(float(row[best]), 4)))
        return tops

    def v1_response(self, answer: PredictorAnswer) -> dict[str, Any]:
        rows = list(self._rows(answer))
        return {
            "predictions": [
                {"categories": top, "confident": confident, "prediction_id": pid}
                for (top, confident), pid in zip(
                    rows, self.prediction_ids(answer.version, rows), strict=True
                )
            ],
            "model_version": answer.version,
        }

    def v2_output_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata of :meth:`v2_outputs` (``-1``: the number of photos; top-k is at
        most ``top_k``, fewer when the model has fewer classes)."""
        ranked = [
            {"name": key, "datatype": datatype, "shape": [-1, self.top_k]}
            for key, datatype in self._RANKED
        ]
        return ranked + [
            {"name": "confident", "datatype": "BOOL", "shape": [-1]},
            {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]},
        ]

    def v2_outputs(self, answer: PredictorAnswer) -> list[dict[str, Any]]:
        """V2 outputs ``slug`` / ``label`` (BYTES) and ``score`` (FP64), each ``[N, k]``,
        ``confident`` (BOOL, ``[N]``) and ``prediction_id`` (BYTES, ``[N]``)."""
        rows = list(self._rows(answer))
        shape = [len(rows), self.width(answer)]
        confident = {
            "name": "confident",
            "datatype": "BOOL",
            "shape": [len(rows)],
            "data": [sure for _, sure in rows],
        }
        ids = {
            "name": "prediction_id",
            "datatype": "BYTES",
            "shape": [len(rows)],
            "data": self.prediction_ids(answer.version, rows),
        }
        return [
            {
                "name": key,
                "datatype": datatype,
                "shape": shape,
                "data": [c[key] for top, _ in rows for c in top],
            }
            for key, datatype in self._RANKED
        ] + [confident, ids]
