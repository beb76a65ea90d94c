"""Temperature scaling, ECE and the confidence threshold on synthetic scores whose true
probabilities are known: labels are drawn from ``softmax(z)``, the "model" reports
``softmax(3 z)`` (over-confident, as deep networks are)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from snapcat.contract.confidence import binomial_upper_tail, clopper_pearson_lower, is_confident
from snapcat.evaluate.metrics import calibration_metrics
from snapcat.stats import confident_share, expected_calibration_error, nll, reliability_bins, scale
from snapcat.train.calibration_fit import (
    MIN_CALIBRATION_PHOTOS,
    choose_threshold,
    cross_fitted_nll,
    fit_calibration,
    fit_temperature,
)

CLASSES = 19
OVERCONFIDENCE = 3.0


def _draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An over-confident model's probabilities and labels drawn from the true ones."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.2, size=(n, CLASSES))
    logits[np.arange(n), rng.integers(0, CLASSES, n)] += rng.uniform(1.0, 7.0, n)
    true = np.exp(logits - logits.max(axis=1, keepdims=True))
    true /= true.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(CLASSES, p=row) for row in true])
    over = np.exp(OVERCONFIDENCE * (logits - logits.max(axis=1, keepdims=True)))
    return (over / over.sum(axis=1, keepdims=True)).astype(np.float32), labels


@pytest.fixture(scope="module")
def validation():
    return _draw(4000, seed=1)


@pytest.fixture(scope="module")
def held_out():
    return _draw(4000, seed=2)


def test_temperature_scaling_lowers_nll_and_ece_of_an_overconfident_model(validation, held_out):
    probabilities, labels = validation
    temperature = fit_temperature(probabilities, labels)
    assert temperature == pytest.approx(OVERCONFIDENCE, rel=0.1)  # it finds the true distortion
    test_p, test_y = held_out
    calibrated = scale(test_p, temperature)
    assert nll(calibrated, test_y) < 0.8 * nll(test_p, test_y)
    ece_before = expected_calibration_error(test_p, test_y)
    ece_after = expected_calibration_error(calibrated, test_y)
    assert ece_before > 0.1
    assert ece_after < 0.03 < ece_before / 3
    # Ranking is untouched: top-1 and top-3 predictions are identical.
    np.testing.assert_array_equal(calibrated.argmax(axis=1), test_p.argmax(axis=1))
    np.testing.assert_allclose(scale(test_p, 1.0), test_p, atol=1e-6)


def test_a_calibrated_model_keeps_temperature_near_one(validation):
    probabilities, labels = validation
    calibrated = scale(probabilities, OVERCONFIDENCE)
    assert fit_temperature(calibrated, labels) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="no photos"):
        fit_temperature(probabilities[:0], labels[:0])


def test_reliability_bins_and_ece_by_hand():
    # Two photos at 0.9 (one right), one at 0.5 (right): bins 13 and 7 of 15.
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5]])
    y = np.array([0, 1, 0])
    bins = reliability_bins(p, y)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 3
    high = next(b for b in bins if b["lower"] <= 0.9 < b["upper"])
    assert high["count"] == 2 and high["accuracy"] == 0.5 and high["confidence"] == 0.9
    assert expected_calibration_error(p, y) == pytest.approx((2 * 0.4 + 1 * 0.5) / 3)
    assert bins[0]["confidence"] is None  # empty bins say so


def test_confident_share_meets_target_precision_on_held_out_data(validation, held_out):
    target = 0.95
    calibration = fit_calibration(*validation, target_precision=target)
    assert calibration.confidence_threshold is not None
    assert calibration.nll_after < calibration.nll_before
    assert calibration.ece_after < calibration.ece_before
    test_p, test_y = held_out
    calibrated = scale(test_p, calibration.temperature)
    share = confident_share(calibrated, test_y, calibration.confidence_threshold)
    assert 0.2 < share["coverage"] < 0.95  # a useful threshold, not all or nothing
    # within sampling error: three binomial standard errors below the target
    se = math.sqrt(target * (1 - target) / share["confident"])
    assert share["top3_confident"] >= target - 3 * se
    assert share["top3_not_confident"] < target  # the flag separates something


def test_threshold_needs_the_lower_bound_to_reach_the_target():
    # four classes: the top-3 mass is 1 - the smallest score
    p = np.array(
        [
            [0.97, 0.01, 0.01, 0.01],  # mass 0.99, hit
            [0.90, 0.04, 0.03, 0.03],  # mass 0.97, hit
            [0.40, 0.30, 0.10, 0.20],  # mass 0.90, miss (label 2)
            [0.30, 0.30, 0.15, 0.25],  # mass 0.85, hit
        ]
    )
    y = np.array([0, 0, 2, 0])
    # 2 of 2 right proves little: the 95 % lower bound is sqrt(0.05) = 0.224
    assert choose_threshold(p, y, 0.95) is None
    assert choose_threshold(p, np.array([0, 0, 2, 2]), 0.2) == pytest.approx(0.97)
    # 3 of 4 right: lower bound 0.2486, enough for a 0.24 target over all four photos
    assert choose_threshold(p, y, 0.24) == pytest.approx(0.85)
    assert choose_threshold(p, y, 1.0) is None  # no finite sample bounds precision at 1
    assert is_confident(p, 0.97).tolist() == [True, True, False, False]
    assert is_confident(p, None).tolist() == [False] * 4
    with pytest.raises(ValueError):
        choose_threshold(p, y, 0.0)


def test_threshold_on_the_photos_above_it_promises_95_percent():
    """59 of 59 right is the least that bounds precision at 95 % (0.05 ** (1/59) = 0.9505);
    58 of 58 is not enough, so fewer photos mean nothing is confident."""
    for n, expected in ((59, True), (58, False)):
        p = np.tile([0.9, 0.05, 0.03, 0.02], (n, 1))
        y = np.zeros(n, dtype=int)
        assert (choose_threshold(p, y, 0.95) is not None) is expected, n


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (59, 59, 0.05 ** (1 / 59)),  # k = n: alpha ** (1/n) exactly
        (10, 10, 0.05 ** (1 / 10)),
        (0, 10, 0.0),
        (9, 10, 0.6058367),  # Beta(0.05; 9, 2), e.g. scipy.stats.beta.ppf(0.05, 9, 2)
        (50, 100, 0.4136217),  # Beta(0.05; 50, 51)
        (1, 1, 0.05),
    ],
)
def test_clopper_pearson_lower_bound_known_values(k, n, expected):
    assert clopper_pearson_lower(k, n) == pytest.approx(expected, abs=1e-6)


def test_binomial_tail_matches_the_exact_sum():
    for n, k, q in ((20, 15, 0.7), (100, 97, 0.95), (7, 1, 0.01), (300, 280, 0.9)):
        exact = sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k, n + 1))
        assert binomial_upper_tail(k, n, q) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_too_few_validation_photos_ship_t_1_marked_uncalibrated(validation):
    probabilities, labels = validation
    few = fit_calibration(probabilities[:17], labels[:17], 0.95)
    assert few.temperature == 1.0 and few.fitted_on is None
    assert few.uncalibrated_reason == (
        f"uncalibrated: too few validation photos (17 < {MIN_CALIBRATION_PHOTOS})"
    )
    assert few.confidence_threshold is None  # 17 photos cannot promise 95 %


def test_a_temperature_that_does_not_help_out_of_sample_is_not_kept():
    """A calibrated model's fitted T is noise: cross-fitting finds it does not lower held-out
    NLL, so T = 1 ships (the guard against issue 22's 17-photo T = 0.59)."""
    rng = np.random.default_rng(5)
    n = 400
    logits = rng.normal(0.0, 2.0, size=(n, 5))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from p: already calibrated
    held_out, plain = cross_fitted_nll(p, y)
    fitted = fit_calibration(p, y, 0.95)
    if held_out >= plain:
        assert fitted.temperature == 1.0 and "did not lower" in fitted.uncalibrated_reason
    else:  # the fitted T, if kept, must be the one that lowered held-out NLL
        assert fitted.fitted_on == "validation"
    # and on an over-confident model the guard keeps the temperature
    over = scale(p, 1 / 3.0)
    kept = fit_calibration(over, y, 0.95)
    assert kept.fitted_on == "validation" and kept.temperature == pytest.approx(3.0, rel=0.25)


def test_calibration_metrics_recover_the_uncalibrated_scores(validation):
    probabilities, labels = validation
    served = scale(probabilities, OVERCONFIDENCE).astype(np.float32)
    classes = [f"c{i}" for i in range(CLASSES)]
    metrics = calibration_metrics(served, labels, OVERCONFIDENCE, 0.9, classes)
    assert metrics["ece_before"] == pytest.approx(
        expected_calibration_error(probabilities, labels), abs=1e-4
    )
    assert metrics["nll_before"] == pytest.approx(nll(probabilities, labels), rel=1e-3)
    assert metrics["ece"] < metrics["ece_before"] and metrics["nll"] < metrics["nll_before"]
    assert set(metrics["per_class"]) <= set(classes)
    some = next(iter(metrics["per_class"].values()))
    assert some["confidence_before"] > some["confidence"]  # over-confident before
    assert metrics["confidence"]["threshold"] == 0.9
