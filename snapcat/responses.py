"""The transformer's answers: the top-k categories of each photo, labelled with the taxonomy saved
beside the model (never from code), in the V1 form (``{"predictions": [{"categories": [...]}],
"model_version": ...}``) and the V2 form (outputs ``slug`` / ``label`` / ``score``, each
``[N, k]``), each photo with ``confident`` (:mod:`snapcat.calibration`). A new response field
belongs here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from snapcat.calibration import is_confident
from snapcat.transformer_core import PredictorAnswer


class ResponseBuilder:
    """Shapes a :class:`PredictorAnswer` for one model's labels and ``top_k``."""

    def __init__(
        self, labels: Mapping[str, str], top_k: int, confidence_threshold: float | None = None
    ):
        self.labels = labels
        self.top_k = top_k
        self.confidence_threshold = confidence_threshold

    def confident(self, probabilities: Sequence[float]) -> bool:
        """Whether the app may show just the top 3: their summed (calibrated) score reaches the
        threshold stored with the model. A model without one (no validation split, or exported
        before calibration) is never confident. Mid-canary the threshold is this transformer's
        model's, applied to whichever version answered."""
        return bool(is_confident([probabilities], self.confidence_threshold)[0])

    def label(self, slug: str) -> str:
        """The Korean label from the model's saved taxonomy; a slug this model's taxonomy does not
        know (a newer model's new category, mid-canary) is shown as itself."""
        return self.labels.get(slug, slug)

    def categories(
        self, probabilities: Sequence[float], classes: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The top-k ``{"slug", "label", "score"}`` of one image, best first."""
        order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i])
        return [
            {
                "slug": classes[i],
                "label": self.label(classes[i]),
                "score": round(float(probabilities[i]), 4),
            }
            for i in order[: self.top_k]
        ]

    def _tops(self, answer: PredictorAnswer) -> list[list[dict[str, Any]]]:
        return [
            self.categories(row, classes)
            for row, classes in zip(answer.probabilities, answer.classes, strict=True)
        ]

    def v1_response(self, answer: PredictorAnswer) -> dict[str, Any]:
        return {
            "predictions": [
                {"categories": top, "confident": self.confident(row)}
                for top, row in zip(self._tops(answer), answer.probabilities, strict=True)
            ],
            "model_version": answer.version,
        }

    def v2_outputs(self, answer: PredictorAnswer) -> list[dict[str, Any]]:
        """V2 outputs ``slug`` / ``label`` (BYTES) and ``score`` (FP64), each ``[N, k]``, and
        ``confident`` (BOOL, ``[N]``)."""
        tops = self._tops(answer)
        shape = [len(tops), self.top_k]
        confident = {
            "name": "confident",
            "datatype": "BOOL",
            "shape": [len(tops)],
            "data": [self.confident(row) for row in answer.probabilities],
        }
        return [
            {
                "name": key,
                "datatype": datatype,
                "shape": shape,
                "data": [c[key] for top in tops for c in top],
            }
            for key, datatype in (("slug", "BYTES"), ("label", "BYTES"), ("score", "FP64"))
        ] + [confident]
