"""Evaluate + gate: Model and Dataset -> metrics, confusion matrix, HTML report, blessed flag."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    baseline_metrics_uri: str,
    max_top1_drop: float,
    max_top3_drop: float,
    max_class_recall_drop: float,
    min_top1: float,
    min_top3: float,
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    report: Output[HTML],
    evaluation: Output[Artifact],
) -> bool:
    """Runs ``snapcat evaluate`` on the test split; returns whether the gate blessed the model.
    The ``evaluation`` folder's metrics.json is what a later run passes as its baseline."""
    import pathlib
    import shutil

    from snapcat.evaluation import EvaluateConfig, evaluate
    from snapcat.metrics import GateConfig

    result = evaluate(
        EvaluateConfig(
            data=dataset.path,
            model=model.path,
            output=evaluation.path,
            baseline=baseline_metrics_uri or None,
            progress=False,
            gate=GateConfig(
                max_top1_drop=max_top1_drop,
                max_top3_drop=max_top3_drop,
                max_class_recall_drop=max_class_recall_drop,
                min_top1=min_top1,
                min_top3=min_top3,
            ),
        )
    )
    for name in ("top1", "top3", "macro_f1", "n"):
        metrics.log_metric(name, result[name])
    metrics.log_metric("blessed", float(result["blessed"]))
    labels = result["confusion_matrix"]["labels"]
    confusion_matrix.log_confusion_matrix(labels, result["confusion_matrix"]["matrix"])
    shutil.copyfile(pathlib.Path(evaluation.path, "report.html"), report.path)
    evaluation.metadata.update(
        blessed=result["blessed"],
        reasons=result["reasons"],
        candidate=model.metadata.get("candidate"),
    )
    return bool(result["blessed"])


def build(image: str):
    return dsl.component(evaluate, base_image=image, install_kfp_package=False)
