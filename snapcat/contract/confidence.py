"""The ``confident`` rule and the bound it promises: the part of calibration that crosses processes.

A served answer is ``confident`` when its top-3 probability mass reaches the model's threshold
(:func:`is_confident`, applied by :mod:`snapcat.serve.responses`); the threshold was chosen in
training (:mod:`snapcat.train.calibration_fit`) where the one-sided Clopper-Pearson lower bound
(:func:`clopper_pearson_lower`) of top-3 precision reaches the target. The feedback sink and the
canary analysis check that promise against sellers' choices with the same bound
(:mod:`snapcat.feedback.promise`). Plain numpy and the standard library.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_TARGET_PRECISION = 0.95


#: One-sided confidence of the lower bound that the ``confident`` threshold must clear.
CONFIDENCE_LEVEL = 0.95


def top3_mass(probabilities: np.ndarray, k: int = 3) -> np.ndarray:
    """Per row, the summed probability of the k best categories (what the app shows)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = min(k, probabilities.shape[1])
    return -np.sort(-probabilities, axis=1)[:, :k].sum(axis=1)


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


def is_confident(probabilities, threshold: float | None) -> np.ndarray:
    """Per row, whether the top-3 mass reaches the model's threshold (never, without one)."""
    mass = top3_mass(np.atleast_2d(np.asarray(probabilities, dtype=np.float64)))
    if threshold is None:
        return np.zeros(len(mass), dtype=bool)
    # float32 serving vs float64 fitting: a photo exactly at the threshold stays confident.
    return mass >= threshold - 1e-6
