"""Batch split: a folder, bucket prefix or manifest -> shard manifests for the ParallelFor."""

from kfp import dsl
from kfp.dsl import Dataset, Output


def batch_split(input_uri: str, shard_count: int, shards: Output[Dataset]) -> list:
    """Deals the input's photos round-robin into ``shard-NNNNN.csv`` manifests in the ``shards``
    artifact (:func:`snapcat.batch.sharding.split_input`); returns the non-empty shards' indices,
    which the pipeline's ParallelFor fans out over."""
    from snapcat.batch.sharding import split_input

    indices = split_input(input_uri, shards.path, shard_count)
    shards.metadata.update(shards=len(indices), input_uri=input_uri)
    return indices


def build(image: str):
    return dsl.component(batch_split, base_image=image, install_kfp_package=False)
