"""Calibration fit: the temperature and the "not sure" threshold a model ships with.

Plain numpy, no TensorFlow. The statistics it fits with live in :mod:`snapcat.stats`, the serving
rule and its Clopper-Pearson bound in :mod:`snapcat.contract.confidence`.

- **Temperature scaling** (Guo et al., 2017): one scalar ``T`` divides the logits before the
  softmax. The model ends in a softmax, so ``log p`` stands in for the logits (they differ by a
  per-row constant, which the softmax ignores): ``calibrated = softmax(log p / T)``. ``T`` is
  fitted on the validation split by minimising the negative log-likelihood; it never changes the
  ranking, so top-1/top-3 accuracy stay exactly the same.
- **ECE** (expected calibration error, 15 equal-width bins of the top-1 score): how far "0.8"
  is from being right 80 % of the time, averaged over photos.
- **Confidence threshold**: the app shows three suggestions; a seller is served well when the
  true category is among them. The threshold on the top-3 cumulative probability is the lowest
  one at which the one-sided 95 % Clopper-Pearson *lower bound* of the top-3 precision of the
  validation photos at or above it reaches ``target_precision``: a promise that holds beyond the
  luck of a few photos (all of 59 right is the least that can promise 95 %). When no threshold
  reaches it, nothing is marked confident. Answers below it are flagged ``confident: false``.
- **Only where it helps**: the temperature is fitted only on at least
  :data:`MIN_CALIBRATION_PHOTOS` validation photos, and kept only when it lowers validation NLL
  *out of sample* (two-fold cross-fitting over the validation photos: a temperature fitted on one
  half must beat ``T = 1`` on the other); otherwise the model ships ``T = 1``, marked
  uncalibrated with the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from snapcat.contract.confidence import (
    CONFIDENCE_LEVEL,
    DEFAULT_TARGET_PRECISION,
    binomial_upper_tail,
    is_confident,
    top3_mass,
)
from snapcat.stats import (
    expected_calibration_error,
    log_probabilities,
    nll,
    precision_lower_bound,
    scale,
    top3_hits,
)

#: Fewer validation photos than this and the temperature is not fitted (T = 1): on 17 photos a
#: fitted T made test ECE worse (issue 22); one parameter still needs a few dozen labels.
MIN_CALIBRATION_PHOTOS = 50


#: log T is searched in [ln 0.05, ln 20]: far wider than any network's miscalibration.
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, iterations: int = 60) -> float:
    """The ``T`` minimising validation NLL: golden-section search over ``log T``.

    NLL is convex in ``1/T`` (the scaled logits are linear in it), hence unimodal in ``log T``,
    so a bounded 1-D search finds the optimum without an optimiser library.
    """
    if len(labels) == 0:
        raise ValueError("no photos to fit a temperature on")
    log_p = log_probabilities(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))

    def loss(log_t: float) -> float:
        z = log_p / math.exp(log_t)
        top = z.max(axis=1)
        return float(np.mean(top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - z[rows, labels]))

    lo, hi = _LOG_T_BOUNDS
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    best = (lo + hi) / 2
    # An already-calibrated model (or too few photos to tell) keeps T = 1 unless fitting helps.
    return math.exp(best) if loss(best) < loss(0.0) else 1.0


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    target_precision: float,
    confidence: float = CONFIDENCE_LEVEL,
) -> float | None:
    """The lowest top-3 mass at which the photos at or above it have a top-3 precision whose
    one-sided Clopper-Pearson lower bound reaches ``target_precision`` (the most photos
    answered confidently under a promise that holds with ``confidence``); ``None`` when no
    threshold reaches it: then nothing is marked confident.

    ``lower bound >= target`` is tested as ``P(X >= hits | n, target) <= 1 - confidence``
    (the bound rises with ``hits``), one incomplete-beta evaluation per candidate."""
    if not 0.0 < target_precision <= 1.0:
        raise ValueError("target precision must be in (0, 1]")
    mass = top3_mass(probabilities)
    hits = top3_hits(probabilities, labels)
    order = np.argsort(-mass, kind="stable")
    mass, hits = mass[order], hits[order]
    cumulative = np.cumsum(hits)
    # A threshold can only sit where the mass changes: ties are all in or all out.
    last_of_tie = np.append(mass[1:] < mass[:-1], True)
    alpha = 1.0 - confidence
    best = None
    for i in np.flatnonzero(last_of_tie):
        k, n = int(cumulative[i]), int(i + 1)
        if target_precision >= 1.0:
            ok = False  # no finite sample bounds precision at 1
        else:
            ok = binomial_upper_tail(k, n, target_precision) <= alpha
        if ok:
            best = float(mass[i])
    return best


@dataclass(frozen=True)
class Calibration:
    """What export stores beside the model (model.json, model card)."""

    temperature: float = 1.0
    confidence_threshold: float | None = None
    target_precision: float = DEFAULT_TARGET_PRECISION
    fitted_on: str | None = None  # "validation" or None: uncalibrated
    photos: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    validation_coverage: float | None = None
    #: why T = 1 shipped (too few validation photos, or T did not help out of sample)
    uncalibrated_reason: str | None = None
    #: Clopper-Pearson lower bound of validation top-3 precision above the threshold
    validation_precision_lower_bound: float | None = None
    confidence_level: float = CONFIDENCE_LEVEL

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def calibrated(self) -> bool:
        return self.fitted_on is not None


def cross_fitted_nll(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Out-of-sample validation NLL with a fitted temperature vs with ``T = 1``: two folds (by
    position, every other photo), each scaled by the temperature fitted on the other."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    folds = [np.arange(len(labels)) % 2 == i for i in (0, 1)]
    scaled = 0.0
    for held, fit in ((folds[0], folds[1]), (folds[1], folds[0])):
        t = fit_temperature(probabilities[fit], labels[fit])
        scaled += nll(scale(probabilities[held], t), labels[held]) * held.sum()
    return scaled / len(labels), nll(probabilities, labels)


def fit_calibration(
    probabilities: np.ndarray,
    labels: np.ndarray,
    target_precision: float,
    min_photos: int = MIN_CALIBRATION_PHOTOS,
    confidence: float = CONFIDENCE_LEVEL,
) -> Calibration:
    """Temperature and confidence threshold from held-out (validation) predictions.

    The temperature is kept only with at least ``min_photos`` photos and only when it lowers
    cross-fitted validation NLL (:func:`cross_fitted_nll`); otherwise ``T = 1`` with
    ``uncalibrated_reason`` saying why. The threshold is chosen either way
    (:func:`choose_threshold`): its lower-bound rule is safe on any number of photos, it just
    cannot promise anything on few."""
    n = len(labels)
    reason = None
    temperature = 1.0
    if n < min_photos:
        reason = f"uncalibrated: too few validation photos ({n} < {min_photos})"
    else:
        fitted = fit_temperature(probabilities, labels)
        held_out, plain = cross_fitted_nll(probabilities, labels)
        if fitted != 1.0 and held_out < plain:
            temperature = fitted
        else:
            reason = (
                f"uncalibrated: a fitted temperature did not lower held-out validation NLL "
                f"({held_out:.4f} vs {plain:.4f} at T = 1)"
            )
    calibrated = scale(probabilities, temperature)
    threshold = choose_threshold(calibrated, labels, target_precision, confidence)
    return Calibration(
        temperature=round(temperature, 6),
        confidence_threshold=threshold,
        target_precision=target_precision,
        fitted_on=None if reason else "validation",
        uncalibrated_reason=reason,
        validation_precision_lower_bound=precision_lower_bound(
            calibrated, labels, threshold, confidence
        ),
        confidence_level=confidence,
        photos=n,
        nll_before=round(nll(probabilities, labels), 6),
        nll_after=round(nll(calibrated, labels), 6),
        ece_before=round(expected_calibration_error(probabilities, labels), 6),
        ece_after=round(expected_calibration_error(calibrated, labels), 6),
        validation_coverage=round(float(is_confident(calibrated, threshold).mean()), 6),
    )


def predict_labelled(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """A Keras model's float probabilities and the labels over a ``(pixels, label)`` batched
    dataset (duck-typed: no TensorFlow import here)."""
    probabilities, labels = [], []
    for pixels, label in dataset.as_numpy_iterator():
        probabilities.append(np.asarray(model.predict_on_batch(pixels), dtype=np.float64))
        labels.append(np.asarray(label, dtype=np.int64))
    if not probabilities:
        return np.zeros((0, 0)), np.zeros((0,), dtype=np.int64)
    return np.concatenate(probabilities), np.concatenate(labels)
