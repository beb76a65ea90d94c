"""Evaluate component: interface (its run is covered by the pipeline's local end-to-end test)."""

from components.evaluate import build


def test_interface():
    spec = build("example.org/train:1").component_spec
    assert spec.inputs["model"].type == "system.Model@0.0.1"
    assert spec.inputs["dataset"].type == "system.Dataset@0.0.1"
    assert {
        "baseline_metrics_uri",
        "baseline_model_uri",
        "baseline_from_isvc",
        "min_class_support",
        "max_top1_drop",
        "max_top3_drop",
        "max_class_recall_drop",
        "min_top1",
        "min_top3",
    } <= set(spec.inputs)
    assert {n: o.type for n, o in spec.outputs.items()} == {
        "metrics": "system.Metrics@0.0.1",
        "confusion_matrix": "system.ClassificationMetrics@0.0.1",
        "report": "system.HTML@0.0.1",
        "evaluation": "system.Artifact@0.0.1",
        "Output": "Boolean",
    }
