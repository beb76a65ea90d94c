"""Calibration statistics shared by training, evaluation and the gate: plain numpy, no TensorFlow.

Temperature scaling (:func:`scale`), negative log-likelihood, expected calibration error over
:data:`ECE_BINS` equal-width bins with its reliability bins, top-3 hits, and the share of photos
answered confidently with its Clopper-Pearson bound. Training fits with them
(:mod:`snapcat.train.calibration_fit`), evaluation reports them (:mod:`snapcat.evaluate.metrics`);
it sits beside ``snapcat/contract`` so that both floors can import it without importing each other.
"""

from __future__ import annotations

import numpy as np

from snapcat.contract.confidence import (
    CONFIDENCE_LEVEL,
    clopper_pearson_lower,
    is_confident,
)

ECE_BINS = 15


_TINY = 1e-12  # float32 probabilities can underflow to 0; log(0) would poison the fit


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _TINY, None))


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the temperature-scaled probabilities, float64."""
    z = log_probabilities(probabilities) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (labels index the columns)."""
    labels = np.asarray(labels, dtype=np.int64)
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, _TINY, None))))


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[dict]:
    """Per equal-width bin of the top-1 score: photos, mean score and accuracy (empty bins too,
    with ``None``), what a reliability diagram draws."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for i in range(bins):
        mask = which == i
        count = int(mask.sum())
        out.append(
            {
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "count": count,
                "confidence": float(confidence[mask].mean()) if count else None,
                "accuracy": float(correct[mask].mean()) if count else None,
            }
        )
    return out


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Photo-weighted mean |accuracy - confidence| over the top-1 score's bins."""
    table = reliability_bins(probabilities, labels, bins)
    n = sum(b["count"] for b in table)
    if n == 0:
        return 0.0
    return float(
        sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table if b["count"]) / n
    )


def top3_hits(probabilities: np.ndarray, labels: np.ndarray, k: int = 3) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return (top == np.asarray(labels)[:, None]).any(axis=1)


def precision_lower_bound(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float | None,
    confidence: float = CONFIDENCE_LEVEL,
) -> float | None:
    """The Clopper-Pearson lower bound of top-3 precision of the photos answered confidently."""
    confident = is_confident(probabilities, threshold)
    if not confident.any():
        return None
    hits = top3_hits(probabilities, labels)[confident]
    return round(clopper_pearson_lower(int(hits.sum()), len(hits), confidence), 6)


def confident_share(probabilities: np.ndarray, labels: np.ndarray, threshold: float | None) -> dict:
    """Coverage (share answered confidently) and top-3 accuracy on that share and on the rest."""
    confident = is_confident(probabilities, threshold)
    hits = top3_hits(probabilities, labels)
    n = len(hits)
    return {
        "threshold": threshold,
        "coverage": round(float(confident.mean()), 6) if n else 0.0,
        "confident": int(confident.sum()),
        "top3_confident": round(float(hits[confident].mean()), 6) if confident.any() else None,
        # what the promise is worth on these photos: Clopper-Pearson 95 % lower bound
        "top3_confident_lower_bound": round(
            clopper_pearson_lower(int(hits[confident].sum()), int(confident.sum())), 6
        )
        if confident.any()
        else None,
        "top3_not_confident": round(float(hits[~confident].mean()), 6)
        if (~confident).any()
        else None,
    }
