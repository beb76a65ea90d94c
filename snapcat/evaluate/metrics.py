"""Classification metrics and the release gate, on plain numpy arrays (no TensorFlow).

Everything is computed in slug space, not index space: a candidate model and the production model
may have different class lists (a category was added), and evaluation data may name a category a
model does not have (which then always counts as a miss).
"""

from __future__ import annotations

import numpy as np

from snapcat.stats import (
    ECE_BINS,
    confident_share,
    expected_calibration_error,
    nll,
    reliability_bins,
    scale,
)


def topk_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (stable for ties)."""
    k = min(k, probabilities.shape[1])
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


def classification_metrics(
    true_slugs: list[str],
    probabilities: np.ndarray,
    model_classes: list[str],
    label_order: list[str],
) -> dict:
    """Top-1/top-3 accuracy, per-class precision/recall/F1/support and the confusion matrix.

    ``label_order`` fixes the rows/columns of the confusion matrix (the union of the data's and
    the model's classes, in taxonomy order).
    """
    n = len(true_slugs)
    if n == 0:
        raise ValueError("no photos to evaluate")
    top = topk_indices(probabilities, 3)
    predicted = [model_classes[i] for i in top[:, 0]]
    top3_hits = [
        t in {model_classes[i] for i in row} for t, row in zip(true_slugs, top, strict=True)
    ]
    position = {slug: i for i, slug in enumerate(label_order)}
    confusion = np.zeros((len(label_order), len(label_order)), dtype=np.int64)
    for t, p in zip(true_slugs, predicted, strict=True):
        confusion[position[t], position[p]] += 1

    per_class = {}
    for slug in label_order:
        i = position[slug]
        tp = int(confusion[i, i])
        support = int(confusion[i].sum())
        predicted_as = int(confusion[:, i].sum())
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if support or predicted_as:
            per_class[slug] = {
                "precision": round(precision, 6),
                "recall": round(recall, 6),
                "f1": round(f1, 6),
                "support": support,
            }
    supported = [m["f1"] for m in per_class.values() if m["support"]]
    return {
        "n": n,
        "top1": round(
            float(np.mean([t == p for t, p in zip(true_slugs, predicted, strict=True)])), 6
        ),
        "top3": round(float(np.mean(top3_hits)), 6),
        "macro_f1": round(float(np.mean(supported)), 6) if supported else 0.0,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(label_order), "matrix": confusion.tolist()},
    }


def calibration_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    threshold: float | None,
    classes: list[str],
) -> dict:
    """Evaluation's calibration section, from the *served* (already calibrated) probabilities.

    The uncalibrated scores are recovered exactly by undoing the temperature
    (``softmax(T * log p_served)``), so "before" needs no second model. Labels of ``-1`` (a
    category the model does not have) count as wrong and are excluded from NLL.
    """
    labels = np.asarray(labels, dtype=np.int64)
    raw = scale(probabilities, 1.0 / temperature)
    known = labels >= 0
    result = {
        "temperature": temperature,
        "bins": ECE_BINS,
        "ece_before": round(expected_calibration_error(raw, labels), 6),
        "ece": round(expected_calibration_error(probabilities, labels), 6),
        "nll_before": round(nll(raw[known], labels[known]), 6) if known.any() else None,
        "nll": round(nll(probabilities[known], labels[known]), 6) if known.any() else None,
        "reliability_before": reliability_bins(raw, labels),
        "reliability": reliability_bins(probabilities, labels),
        "confidence": confident_share(probabilities, labels, threshold),
    }
    top1 = np.asarray(probabilities).argmax(axis=1)
    per_class = {}
    for index, slug in enumerate(classes):
        mask = top1 == index
        if mask.any():
            per_class[slug] = {
                "predicted": int(mask.sum()),
                "confidence_before": round(float(raw[mask].max(axis=1).mean()), 6),
                "confidence": round(float(np.asarray(probabilities)[mask].max(axis=1).mean()), 6),
                "accuracy": round(float((labels[mask] == index).mean()), 6),
                "ece_before": round(expected_calibration_error(raw[mask], labels[mask]), 6),
                "ece": round(expected_calibration_error(probabilities[mask], labels[mask]), 6),
            }
    result["per_class"] = per_class
    return result


def calibration_summary(metrics: dict) -> dict:
    """The headline figures of :func:`calibration_metrics` (for the model card)."""
    keys = ("temperature", "ece_before", "ece", "nll_before", "nll")
    return {**{k: metrics[k] for k in keys}, **metrics["confidence"]}
