"""Evaluate + gate: Model and Dataset -> metrics, confusion matrix, HTML report, blessed flag."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    baseline_model_uri: str,
    baseline_from_isvc: bool,
    isvc_name: str,
    isvc_namespace: str,
    baseline_metrics_uri: str,
    max_top1_drop: float,
    max_top3_drop: float,
    max_class_recall_drop: float,
    min_class_support: int,
    min_top1: float,
    min_top3: float,
    max_ece_increase: float,
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
) -> bool:
    """Runs ``snapcat evaluate`` on the test split; returns whether the gate blessed the model.

    The production model (``baseline_model_uri``, else with ``baseline_from_isvc`` the live
    InferenceService's storageUri) is evaluated on the same photos and the gate reads the paired
    differences. Only when neither is available does a stored metrics.json
    (``baseline_metrics_uri``) serve, labelled as a fallback; without any, the floors decide."""
    import pathlib
    import shutil

    from snapcat.evaluate.evaluation import EvaluateConfig, evaluate, find_production_model
    from snapcat.evaluate.gate import GateConfig

    champion, lookup = baseline_model_uri or None, None
    if not champion and baseline_from_isvc and isvc_name:
        champion, lookup = find_production_model(isvc_name, isvc_namespace)
    result = evaluate(
        EvaluateConfig(
            data=dataset.path,
            model=model.path,
            output=evaluation.path,
            baseline_model=champion,
            baseline_metrics=baseline_metrics_uri or None,
            baseline_lookup=lookup,
            progress=False,
            gate=GateConfig(
                max_top1_drop=max_top1_drop,
                max_top3_drop=max_top3_drop,
                max_class_recall_drop=max_class_recall_drop,
                min_class_support=min_class_support,
                min_top1=min_top1,
                min_top3=min_top3,
                max_ece_increase=max_ece_increase,
            ),
        )
    )
    for name in ("top1", "top3", "macro_f1", "n"):
        metrics.log_metric(name, result[name])
    if result.get("comparison"):
        for name in ("top1", "top3"):
            paired = result["comparison"][name]
            metrics.log_metric(f"production_{name}", paired["baseline"])
            metrics.log_metric(f"{name}_difference", paired["difference"])
            metrics.log_metric(f"{name}_difference_ci95_low", paired["ci95"][0])
            metrics.log_metric(f"{name}_difference_ci95_high", paired["ci95"][1])
    metrics.log_metric("ece", result["calibration"]["ece"])
    metrics.log_metric("confident_coverage", result["calibration"]["confidence"]["coverage"])
    metrics.log_metric("blessed", float(result["blessed"]))
    labels = result["confusion_matrix"]["labels"]
    confusion_matrix.log_confusion_matrix(labels, result["confusion_matrix"]["matrix"])
    shutil.copyfile(pathlib.Path(evaluation.path, "report.html"), report.path)
    baseline = result.get("baseline") or {}
    evaluation.metadata.update(
        blessed=result["blessed"],
        reasons=result["reasons"],
        baseline_source=baseline.get("source", "none"),
        baseline_uri=baseline.get("uri") or "",
        candidate=model.metadata.get("candidate"),
    )
    return bool(result["blessed"])


def build(image: str):
    return dsl.component(evaluate, base_image=image, install_kfp_package=False)
