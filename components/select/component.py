"""Select: every candidate's Model and evaluation -> the best one, and the comparison table."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Model, Output


def select(
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    comparison: Output[Markdown],
    best_model: Output[Model],
    best_evaluation: Output[Artifact],
) -> bool:
    """Ranks the candidates evaluated on the same test split (top-1, then top-3, then macro F1),
    writes the comparison table, and passes the best model and its evaluation on: only it goes
    to the gate's verdict and the canary. Returns the gate's verdict on the best (a single
    ``Output``: kfp.local's conditions resolve only that name of a task's outputs)."""
    import json
    import pathlib
    import shutil

    from snapcat.evaluate.comparison import check_same_test_set, markdown_table, ranked

    runs = [
        (e.metadata["candidate"], json.loads(pathlib.Path(e.path, "metrics.json").read_text()))
        for e in evaluations
    ]
    check_same_test_set(runs)  # one prepared split: a mismatch is a bug, not a ranking
    best_name, best_metrics = ranked(runs)[0]
    pathlib.Path(comparison.path).write_text(
        f"# Candidates on the same test split\n\nBest: **{best_name}**\n\n"
        + markdown_table(runs)
        + "\n",
        "utf-8",
    )
    model = next(m for m in models if m.metadata.get("candidate") == best_name)
    evaluation = next(e for e in evaluations if e.metadata["candidate"] == best_name)
    shutil.copytree(model.path, best_model.path)
    shutil.copytree(evaluation.path, best_evaluation.path)
    best_model.metadata.update(model.metadata)
    best_evaluation.metadata.update(evaluation.metadata)
    return bool(best_metrics["blessed"])


def build(image: str):
    return dsl.component(select, base_image=image, install_kfp_package=False)
