"""Classification metrics and the release gate, on plain numpy arrays (no TensorFlow).

Everything is computed in slug space, not index space: a candidate model and the production model
may have different class lists (a category was added), and evaluation data may name a category a
model does not have (which then always counts as a miss).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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


@dataclass(frozen=True)
class GateConfig:
    """How much worse than production a candidate may be, and the floors for a first model.

    With the production model evaluated on the same photos (:func:`snapcat.paired.paired_gate`)
    a drop beyond a tolerance refuses the candidate only when it is more than noise; with only a
    stored metrics.json (:func:`gate`, the fallback) the figures are compared as they are, except
    ECE, which is compared with the candidate's own bootstrap interval."""

    max_top1_drop: float = 0.01
    max_top3_drop: float = 0.01
    max_class_recall_drop: float = 0.10
    min_class_support: int = 5  # recall of rarer classes in the test split is too noisy to gate on
    min_top1: float = 0.60
    min_top3: float = 0.85
    #: how much higher than production's the expected calibration error may be (snapcat.calibration)
    max_ece_increase: float = 0.02
    # Champion vs challenger (snapcat.paired): paired bootstrap resamples for the 95 % intervals
    # and their seed, so a re-evaluation gives the same intervals.
    resamples: int = 2000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def gate(candidate: dict, baseline: dict | None, config: GateConfig) -> tuple[bool, list[str]]:
    """Blesses ``candidate`` or not; the reasons say why either way, for people and the pipeline."""
    reasons: list[str] = []
    ok = True
    if baseline is None:
        for metric, floor in (("top1", config.min_top1), ("top3", config.min_top3)):
            passed = candidate[metric] >= floor
            ok &= passed
            reasons.append(
                f"{metric} {candidate[metric]:.4f} {'>=' if passed else '<'} floor {floor:.4f} "
                "(no baseline: first model)"
            )
        return ok, reasons

    for metric, tolerance in (("top1", config.max_top1_drop), ("top3", config.max_top3_drop)):
        limit = baseline[metric] - tolerance
        passed = candidate[metric] >= limit
        ok &= passed
        reasons.append(
            f"{metric} {candidate[metric]:.4f} vs baseline {baseline[metric]:.4f} "
            f"({'within' if passed else 'beyond'} tolerance {tolerance:.4f})"
        )
    drops = []
    for slug, base in baseline.get("per_class", {}).items():
        mine = candidate.get("per_class", {}).get(slug)
        # Symmetric: a category is gated only where *both* runs had enough photos of it (the
        # stored baseline's photos are not this run's; 0-1 test photos give recall 0 or 1).
        if mine is None or min(base.get("support", 0), mine.get("support", 0)) < (
            config.min_class_support
        ):
            continue
        drop = base["recall"] - mine["recall"]
        if drop > config.max_class_recall_drop:
            drops.append(
                f"{slug} recall {mine['recall']:.3f} < baseline {base['recall']:.3f} "
                f"by {drop:.3f} (max {config.max_class_recall_drop:.3f}; "
                f"{mine['support']} vs {base['support']} photos)"
            )
    if drops:
        ok = False
        reasons.extend(drops)
    else:
        reasons.append(
            f"no category's recall dropped by more than {config.max_class_recall_drop:.3f} "
            f"(of those with at least {config.min_class_support} photos in both runs)"
        )
    calibrated = _ece_rule(candidate, baseline, config.max_ece_increase)
    if calibrated is not None:
        ok &= calibrated[0]
        reasons.append(calibrated[1])
    return ok, reasons


def _ece_rule(candidate: dict, baseline: dict, tolerance: float) -> tuple[bool, str] | None:
    """ECE against a stored figure: refused only when the candidate's ECE is above the baseline's
    plus the tolerance across its whole 95 % bootstrap interval (``calibration.ece_ci95``; the
    stored figure has no interval: its photos are not here). ``None``: nothing to compare."""
    mine = (candidate.get("calibration") or {}).get("ece")
    theirs = (baseline.get("calibration") or {}).get("ece")
    if mine is None or theirs is None:
        return None
    interval = (candidate.get("calibration") or {}).get("ece_ci95")
    figures = f"ECE {mine:.4f} vs baseline {theirs:.4f}"
    if interval:
        figures += f" (candidate's 95% interval {interval[0]:.4f} to {interval[1]:.4f})"
    if mine <= theirs + tolerance:
        return True, f"{figures}: within tolerance {tolerance:.4f}"
    if interval is None or interval[0] > theirs + tolerance:
        return False, f"{figures}: beyond tolerance {tolerance:.4f}, and not noise"
    return True, (
        f"{figures}: beyond tolerance {tolerance:.4f} on these photos, but the interval reaches "
        "it, so it is not distinguishable from noise"
    )
