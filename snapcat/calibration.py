"""Scores a seller can trust: temperature scaling, calibration error and the "not sure" threshold.

Plain numpy, no TensorFlow, so training, evaluation, the gate and tests share one definition.

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

ECE_BINS = 15
DEFAULT_TARGET_PRECISION = 0.95
#: One-sided confidence of the lower bound that the ``confident`` threshold must clear.
CONFIDENCE_LEVEL = 0.95
#: Fewer validation photos than this and the temperature is not fitted (T = 1): on 17 photos a
#: fitted T made test ECE worse (issue 22); one parameter still needs a few dozen labels.
MIN_CALIBRATION_PHOTOS = 50
#: log T is searched in [ln 0.05, ln 20]: far wider than any network's miscalibration.
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
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


def top3_mass(probabilities: np.ndarray, k: int = 3) -> np.ndarray:
    """Per row, the summed probability of the k best categories (what the app shows)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = min(k, probabilities.shape[1])
    return -np.sort(-probabilities, axis=1)[:, :k].sum(axis=1)


def top3_hits(probabilities: np.ndarray, labels: np.ndarray, k: int = 3) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return (top == np.asarray(labels)[:, None]).any(axis=1)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function (the Beta CDF)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def binomial_upper_tail(successes: int, n: int, p: float) -> float:
    """``P(X >= successes)`` for ``X ~ Binomial(n, p)``."""
    if successes <= 0:
        return 1.0
    if successes > n:
        return 0.0
    return regularized_beta(successes, n - successes + 1, p)


def clopper_pearson_lower(successes: int, n: int, confidence: float = CONFIDENCE_LEVEL) -> float:
    """One-sided Clopper-Pearson lower bound of a binomial proportion: the smallest ``p`` under
    which ``successes`` or more out of ``n`` is not a ``1 - confidence`` surprise
    (``Beta(1 - confidence; k, n - k + 1)``), found by bisection."""
    if n <= 0 or successes <= 0:
        return 0.0
    alpha = 1.0 - confidence
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if binomial_upper_tail(successes, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


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


def is_confident(probabilities, threshold: float | None) -> np.ndarray:
    """Per row, whether the top-3 mass reaches the model's threshold (never, without one)."""
    mass = top3_mass(np.atleast_2d(np.asarray(probabilities, dtype=np.float64)))
    if threshold is None:
        return np.zeros(len(mass), dtype=bool)
    # float32 serving vs float64 fitting: a photo exactly at the threshold stays confident.
    return mass >= threshold - 1e-6


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


def calibration_gate(
    candidate: dict, baseline: dict | None, max_ece_increase: float
) -> tuple[bool, str] | None:
    """Refuses a candidate whose ECE exceeds production's by more than the tolerance; ``None``
    when there is nothing to compare (first model, or a baseline measured before calibration)."""
    mine = (candidate.get("calibration") or {}).get("ece")
    theirs = ((baseline or {}).get("calibration") or {}).get("ece")
    if mine is None or theirs is None:
        return None
    passed = mine <= theirs + max_ece_increase
    return passed, (
        f"ECE {mine:.4f} vs baseline {theirs:.4f} "
        f"({'within' if passed else 'beyond'} tolerance {max_ece_increase:.4f})"
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


def calibration_summary(metrics: dict) -> dict:
    """The headline figures of :func:`calibration_metrics` (for the model card)."""
    keys = ("temperature", "ece_before", "ece", "nll_before", "nll")
    return {**{k: metrics[k] for k in keys}, **metrics["confidence"]}
