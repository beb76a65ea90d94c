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
    confident_precision: float,
    workspace: str,
    model: Output[Model],
):
    """Runs ``snapcat train`` for one ``backbone:mode`` candidate. ``image_size`` 0 means the
    dataset's size; ``head_epochs`` 0 and ``fine_tune_learning_rate`` 0, the backbone's recipe.

    Checkpoints go to the run's workspace volume (``workspace``, KFP's workspace path), not to
    the Model artifact's folder: that is scratch space of the pod and a failed attempt uploads
    nothing, so only the workspace survives into a retried (preempted) attempt, which then
    resumes from its last finished epoch. Each candidate (each set of settings) gets its own
    folder, so the parallel training steps of one run do not share checkpoints."""
    import dataclasses
    import hashlib
    import json

    from snapcat.evaluate.comparison import Candidate
    from snapcat.train.trainer import TrainConfig, train

    chosen = Candidate.parse(candidate)
    config = TrainConfig(
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
        fine_tune_learning_rate=fine_tune_learning_rate or None,
        seed=seed,
        early_stopping_patience=early_stopping_patience,
        confident_precision=confident_precision,
    )
    if workspace:
        key = hashlib.sha256(json.dumps(config.resume_key(), sort_keys=True).encode()).hexdigest()
        config = dataclasses.replace(
            config, checkpoint_dir=f"{workspace.rstrip('/')}/snapcat-train/{key[:16]}"
        )
    summary = train(config)
    model.metadata.update(
        framework="tensorflow",
        candidate=candidate,
        backbone=chosen.backbone,
        mode=chosen.mode,
        version_dir=summary["version_dir"],
        best_epoch=summary["best_epoch"],
        temperature=(summary.get("calibration") or {}).get("temperature"),
    )


def build(image: str):
    return dsl.component(train, base_image=image, install_kfp_package=False)
