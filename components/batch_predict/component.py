"""Batch predict: one shard manifest -> its results.jsonl (``snapcat predict`` on the shard)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output


def batch_predict(
    model_uri: str,
    input_uri: str,
    shards: Input[Dataset],
    shard: int,
    batch_size: int,
    results: Output[Dataset],
):
    """Runs :func:`snapcat.batch.predict.run_predict` over shard ``shard`` of ``shards`` into
    ``results/results.jsonl``. A retried attempt that finds its own partial output resumes it.
    The shard names photos below the pipeline's input: that is the one root it may read."""
    import pathlib

    from snapcat.batch.inputs import input_root
    from snapcat.batch.predict import PredictConfig, run_predict
    from snapcat.batch.sharding import shard_name

    pathlib.Path(results.path).mkdir(parents=True, exist_ok=True)
    summary = run_predict(
        PredictConfig(
            model=model_uri,
            input=str(pathlib.Path(shards.path, shard_name(shard))),
            output=str(pathlib.Path(results.path, "results.jsonl")),
            batch_size=batch_size,
            progress=False,
            allow_roots=(input_root(input_uri),),
        )
    )
    results.metadata.update(shard=shard, **summary)


def build(image: str):
    return dsl.component(batch_predict, base_image=image, install_kfp_package=False)
