"""Out-of-sample probabilities and the confident-learning ranking of label issues.

- :func:`out_of_sample_probabilities`: k-fold (stratified) logistic regression on features, so
  each photo's probabilities come from a head that never saw its label;
- :func:`rank_issues`: cleanlab's :func:`~cleanlab.filter.find_label_issues` (confident joint,
  pruned by noise rate) flags likely mislabelled photos and
  :func:`~cleanlab.rank.get_label_quality_scores` (self-confidence: the probability of the given
  label) orders them. The same ranking serves a prepared dataset and batch prediction output,
  where the served model's probabilities are already out of sample for the catalogue.

Issue kinds: ``mislabel`` (flagged, and another category is the likelier one; also when the
given label gets under :data:`CONTRADICTED_QUALITY` while another is likeliest) and ``ambiguous``
(flagged with the given label still the likeliest, or not flagged but the given label is weak and
the two best categories are close: a photo that fits two categories, which review should decide
rather than relabel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

MISLABEL = "mislabel"
AMBIGUOUS = "ambiguous"
#: Not flagged by cleanlab, yet ambiguous: the given label under this quality and the two best
#: categories closer than this margin.
AMBIGUOUS_QUALITY = 0.6
AMBIGUOUS_MARGIN = 0.2
#: A photo whose given label gets less than this while another category is the likeliest is a
#: mislabel even when cleanlab leaves it out: its per-class thresholds are means over the photos
#: labelled so, and with few photos per class (or very sure ones) a clear contradiction can fall
#: just under the suggested class's mean.
CONTRADICTED_QUALITY = 0.1


@dataclass
class Ranked:
    """Per photo (input order): quality of the given label, suggested class, issue kind ('' for
    none); and ``order``: photo indices, worst label first (every photo, issue or not)."""

    quality: np.ndarray
    suggested: np.ndarray
    issue: list[str]
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def out_of_sample_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """``[N, num_classes]`` probabilities, each row from the fold model that held that row out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=num_classes)
    present = counts[counts > 0]
    folds = int(max(2, min(folds, present.min() if len(present) else 2)))
    head = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(head, features, labels, cv=cv, method="predict_proba")
    full = np.zeros((len(labels), num_classes))
    full[:, np.flatnonzero(counts)] = probabilities  # classes without photos: probability 0
    return full


def rank_issues(labels: np.ndarray, probabilities: np.ndarray) -> Ranked:
    """Flags and ranks label issues from out-of-sample ``probabilities`` (rows sum to 1)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    probabilities = probabilities / probabilities.sum(1, keepdims=True)
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    suggested = probabilities.argmax(1)
    flagged = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    flagged |= (suggested != labels) & (quality < CONTRADICTED_QUALITY)
    top2 = -np.sort(-probabilities, axis=1)[:, :2]
    margin = top2[:, 0] - (top2[:, 1] if probabilities.shape[1] > 1 else 0.0)
    issue = []
    for i in range(len(labels)):
        if flagged[i] and suggested[i] != labels[i]:
            issue.append(MISLABEL)
        elif flagged[i] or (quality[i] < AMBIGUOUS_QUALITY and margin[i] < AMBIGUOUS_MARGIN):
            issue.append(AMBIGUOUS)
        else:
            issue.append("")
    order = np.argsort(quality, kind="stable")
    return Ranked(quality, suggested, issue, order)


def precision_at_k(order: np.ndarray, planted: set[int], k: int) -> float:
    """Share of the ``k`` worst-ranked photos that are planted label errors."""
    top = [int(i) for i in order[:k]]
    return sum(i in planted for i in top) / max(1, len(top))
