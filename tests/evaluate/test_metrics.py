"""Classification metrics and the release gate, on hand-computed examples (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from snapcat.evaluate.gate import GateConfig, gate
from snapcat.evaluate.metrics import classification_metrics, topk_indices

MODEL = ["a", "b", "c", "d"]
ORDER = ["a", "b", "c", "d", "e", "f"]  # "e": in the data, unknown to the model; "f": in neither
TRUE = ["a", "a", "b", "c", "e", "a"]
PROBS = np.array(
    [
        [0.70, 0.10, 0.15, 0.05],  # a -> a            top-1 hit, top-3 hit
        [0.15, 0.50, 0.25, 0.10],  # a -> b (b, c, a)  top-3 hit
        [0.10, 0.20, 0.30, 0.40],  # b -> d (d, c, b)  top-3 hit
        [0.40, 0.30, 0.05, 0.25],  # c -> a (a, b, d)  miss
        [0.05, 0.05, 0.10, 0.80],  # e -> d            always a miss: the model has no "e"
        [0.60, 0.20, 0.10, 0.10],  # a -> a            top-1 hit
    ],
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def metrics():
    return classification_metrics(TRUE, PROBS, MODEL, ORDER)


def test_accuracy(metrics):
    assert metrics["n"] == 6
    assert metrics["top1"] == pytest.approx(2 / 6, abs=1e-6)
    assert metrics["top3"] == pytest.approx(4 / 6, abs=1e-6)


def test_confusion_matrix_rows_are_true_columns_predicted(metrics):
    assert metrics["confusion_matrix"]["labels"] == ORDER
    assert metrics["confusion_matrix"]["matrix"] == [
        [2, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ]


def test_per_class(metrics):
    per_class = metrics["per_class"]
    # "f" has neither photos nor predictions: not listed. "d" is predicted but has no photos.
    assert list(per_class) == ["a", "b", "c", "d", "e"]
    a = per_class["a"]
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == pytest.approx(
        (2 / 3, 2 / 3, 2 / 3, 3), abs=1e-6
    )
    assert per_class["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per_class["e"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # Macro F1 over the classes that have photos (a, b, c, e), not over "d".
    assert metrics["macro_f1"] == pytest.approx((2 / 3) / 4, abs=1e-6)


def test_precision_and_recall_differ_when_they_should():
    # x: 2 photos, both predicted x; y: 2 photos, one predicted x. precision(x) = 2/3, recall 1.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(["x", "x", "y", "y"], probs, ["x", "y"], ["x", "y"])
    assert m["per_class"]["x"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["per_class"]["x"]["recall"] == 1.0
    assert m["per_class"]["x"]["f1"] == pytest.approx(0.8, abs=1e-6)
    assert m["per_class"]["y"]["precision"] == 1.0
    assert m["per_class"]["y"]["recall"] == 0.5
    # With two classes top-3 is top-2: everything is a hit.
    assert m["top1"] == 0.75 and m["top3"] == 1.0


def test_class_order_of_the_model_is_respected():
    """Slugs, not indices: the same photos scored by a model with another class order."""
    reordered = ["d", "c", "b", "a"]
    probs = PROBS[:, [3, 2, 1, 0]]
    m = classification_metrics(TRUE, probs, reordered, ORDER)
    assert m == classification_metrics(TRUE, PROBS, MODEL, ORDER)


def test_topk_ties_are_stable():
    top = topk_indices(np.array([[0.25, 0.25, 0.25, 0.25], [0.1, 0.3, 0.3, 0.3]]), 3)
    assert top.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert topk_indices(np.array([[0.2, 0.8]]), 3).tolist() == [[1, 0]]


def test_no_photos():
    with pytest.raises(ValueError, match="no photos"):
        classification_metrics([], np.zeros((0, 4)), MODEL, ORDER)


# ------------------------------------------------------------------------------ the gate
def _m(top1, top3, **recalls):
    """A metrics dict; ``recalls`` maps a class to (recall, support)."""
    return {
        "top1": top1,
        "top3": top3,
        "per_class": {
            slug: {"precision": 0.5, "recall": r, "f1": 0.5, "support": s}
            for slug, (r, s) in recalls.items()
        },
    }


def test_without_baseline_the_floors_decide():
    config = GateConfig(min_top1=0.6, min_top3=0.85)
    ok, reasons = gate(_m(0.7, 0.9), None, config)
    assert ok
    assert len(reasons) == 2 and all("floor" in r and "first model" in r for r in reasons)
    ok, reasons = gate(_m(0.7, 0.8), None, config)
    assert not ok
    assert any(r.startswith("top3 0.8000 < floor 0.8500") for r in reasons)
    assert not gate(_m(0.5, 0.9), None, config)[0]
    assert gate(_m(0.6, 0.85), None, config)[0]  # a floor is inclusive


def test_within_tolerance_is_blessed():
    config = GateConfig(max_top1_drop=0.25, max_top3_drop=0.25, max_class_recall_drop=0.25)
    baseline = _m(0.75, 1.0, x=(1.0, 10))
    ok, reasons = gate(_m(0.5, 0.75, x=(0.75, 10)), baseline, config)  # exactly at the limits
    assert ok, reasons
    assert any("top1" in r and "within" in r for r in reasons)
    assert any("no category's recall dropped" in r for r in reasons)
    assert gate(_m(0.9, 1.0, x=(1.0, 10)), baseline, config)[0]  # better is fine too


@pytest.mark.parametrize("metric", ["top1", "top3"])
def test_a_drop_beyond_tolerance_is_refused(metric):
    config = GateConfig(max_top1_drop=0.01, max_top3_drop=0.01)
    baseline = _m(0.80, 0.95)
    candidate = _m(0.80, 0.95)
    candidate[metric] -= 0.02
    ok, reasons = gate(candidate, baseline, config)
    assert not ok
    refused = [r for r in reasons if "beyond" in r]
    assert len(refused) == 1 and refused[0].startswith(metric)


def test_a_category_recall_drop_is_refused():
    config = GateConfig(max_class_recall_drop=0.10, min_class_support=5)
    baseline = _m(0.8, 0.9, x=(0.9, 10), y=(0.8, 10))
    candidate = _m(0.85, 0.95, x=(0.7, 10), y=(0.75, 10))  # better overall, x much worse
    ok, reasons = gate(candidate, baseline, config)
    assert not ok
    drops = [r for r in reasons if "recall" in r]
    assert len(drops) == 1 and drops[0].startswith("x recall 0.700 < baseline 0.900")


def test_rare_categories_are_not_recall_gated():
    config = GateConfig(max_class_recall_drop=0.10, min_class_support=5)
    baseline = _m(0.8, 0.9, rare=(1.0, 4), gone=(1.0, 20))
    candidate = _m(0.8, 0.9, rare=(0.0, 4))  # "gone": not in this test data at all
    ok, reasons = gate(candidate, baseline, config)
    assert ok, reasons
    # The same drop with enough support refuses.
    assert not gate(_m(0.8, 0.9, rare=(0.0, 5)), _m(0.8, 0.9, rare=(1.0, 5)), config)[0]


def test_a_category_too_rare_in_the_candidates_photos_is_not_gated():
    """Issue 23, finding 3: the stored-metrics fallback reported "digital-devices recall 0.000 <
    baseline 0.846" for a category with 0-1 test photos in this run: support was checked on the
    baseline's side only. Both sides need it now."""
    config = GateConfig(max_class_recall_drop=0.10, min_class_support=5)
    baseline = _m(0.8, 0.9, **{"digital-devices": (0.846, 13)})
    for support in (0, 1, 4):
        candidate = _m(0.8, 0.9, **{"digital-devices": (0.0, support)})
        ok, reasons = gate(candidate, baseline, config)
        assert ok, reasons
        assert not any("digital-devices" in r for r in reasons)
    assert not gate(_m(0.8, 0.9, **{"digital-devices": (0.0, 5)}), baseline, config)[0]


def test_stored_ece_is_refused_only_beyond_the_candidates_interval():
    config = GateConfig(max_ece_increase=0.02)
    baseline = {**_m(0.8, 0.9), "calibration": {"ece": 0.165}}
    noisy = {**_m(0.85, 0.95), "calibration": {"ece": 0.231, "ece_ci95": [0.12, 0.34]}}
    ok, reasons = gate(noisy, baseline, config)
    assert ok and "not distinguishable from noise" in reasons[-1]
    clear = {**_m(0.85, 0.95), "calibration": {"ece": 0.331, "ece_ci95": [0.29, 0.37]}}
    ok, reasons = gate(clear, baseline, config)
    assert not ok and reasons[-1].startswith("ECE 0.3310 vs baseline 0.1650")


def test_gate_config_round_trips():
    config = GateConfig(max_top1_drop=0.02, min_class_support=3)
    assert GateConfig(**config.to_dict()) == config
