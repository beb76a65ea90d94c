"""Train: prepared Dataset -> Model (a TF Serving model folder; its URI becomes storageUri)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output


def train(
    dataset: Input[Dataset],
    candidate: str,
    weights: str,
    image_size: int,
    epochs: int,
    head_epochs: int,
    batch_size: int,
    learning_rate: float,
    fine_tune_learning_rate: float,
    seed: int,
    early_stopping_patience: int,
    model: Output[Model],
):
    """Runs ``snapcat train`` for one ``backbone:mode`` candidate. A retried (preempted) attempt
    writes to the same artifact path and so resumes from its last finished epoch.
    ``image_size`` 0 means the dataset's size; ``head_epochs`` 0, a third of ``epochs``."""
    from snapcat.comparison import Candidate
    from snapcat.training import TrainConfig, train

    chosen = Candidate.parse(candidate)
    summary = train(
        TrainConfig(
            data=dataset.path,
            output=model.path,
            backbone=chosen.backbone,
            mode=chosen.mode,
            weights=weights,
            image_size=image_size or None,
            epochs=epochs,
            head_epochs=head_epochs or None,
            batch_size=batch_size,
            learning_rate=learning_rate,
            fine_tune_learning_rate=fine_tune_learning_rate,
            seed=seed,
            early_stopping_patience=early_stopping_patience,
        )
    )
    model.metadata.update(
        framework="tensorflow",
        candidate=candidate,
        backbone=chosen.backbone,
        mode=chosen.mode,
        version_dir=summary["version_dir"],
        best_epoch=summary["best_epoch"],
    )


def build(image: str):
    return dsl.component(train, base_image=image, install_kfp_package=False)
