"""The batch prediction pipeline: split the input into shards -> predict each shard (a
``dsl.ParallelFor``, one pod per shard on as many nodes as the cluster gives) -> merge, and rank
the listings probably posted in the wrong category.

No ``from __future__ import annotations`` here: KFP reads the pipeline signature's real types.

Each step is a thin adapter over :mod:`snapcat.batch` (components ``batch_split``,
``batch_predict``, ``batch_merge``); ``snapcat predict`` runs the same core on one machine. The
split runs in the light image (it only lists storage); predict and merge need TensorFlow and
cleanlab, so they run in the training image. Predict steps ask for no GPU: the Lite0/Xception
signatures run fast enough on CPU nodes, which a cluster has more of; a retried predict pod
resumes its shard's output (:func:`snapcat.batch.results.resume`).

``snapcat batch-pipeline compile | submit | run-local`` (:mod:`snapcat.commands.batch_pipeline`)
compiles it (the committed YAML is checked to be up to date), submits it to Kubeflow, or runs it
on one machine through ``kfp.local`` (:func:`run_local`).
"""

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from kfp import dsl, kubernetes

from components import batch_merge, batch_predict, batch_split
from components.images import default_light_image, default_train_image
from pipelines.local_run_guard import kfp_local_leaves_no_trace, kfp_local_notices_ignored
from pipelines.training_pipeline import storage_credentials
from snapcat.batch.predict import DEFAULT_BATCH_SIZE

PIPELINE_NAME = "snapcat-batch-prediction"
DEFAULT_PACKAGE = Path(__file__).with_name("batch_prediction_pipeline.yaml")
#: Parameters naming what a step reads: object storage URIs on a cluster; a local run resolves
#: paths from the caller's folder.
LOCATION_PARAMETERS = ("model_uri", "input_uri")


@dataclass(frozen=True)
class BatchSettings:
    """Where the steps run (fixed at compile time, as KFP resolves them then)."""

    image: str = field(default_factory=default_train_image)
    light_image: str = field(default_factory=default_light_image)
    predict_cpu: tuple[str, str] = ("2", "4")  # request, limit
    predict_memory: tuple[str, str] = ("4G", "8G")
    merge_memory: tuple[str, str] = ("2G", "8G")
    predict_retries: int = 3
    #: shards predicted at once (0: as many as the cluster schedules)
    parallelism: int = 0
    split_timeout: int = 3600
    predict_timeout: int = 12 * 3600
    merge_timeout: int = 3600
    storage_secret: str = "snapcat-storage"
    storage_secret_env: tuple[tuple[str, str], ...] = (
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )


def build_pipeline(settings: BatchSettings | None = None):
    """Returns the ``@dsl.pipeline`` function for these settings."""
    settings = settings or BatchSettings()
    split_op = batch_split.build(settings.light_image)
    predict_op = batch_predict.build(settings.image)
    merge_op = batch_merge.build(settings.image)

    def credentials(task: dsl.PipelineTask) -> None:
        storage_credentials(task, settings)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Batch prediction: the exported model over a folder, manifest or bucket "
        "prefix, sharded, with the listings probably posted in the wrong category ranked.",
    )
    def batch_prediction_pipeline(
        model_uri: str,
        input_uri: str,
        shard_count: int = 8,
        batch_size: int = DEFAULT_BATCH_SIZE,
        rank_disagreements: bool = True,
    ):
        split = split_op(input_uri=input_uri, shard_count=shard_count)
        split.set_display_name("split into shards").set_caching_options(False)
        kubernetes.set_timeout(split, settings.split_timeout)
        credentials(split)

        with dsl.ParallelFor(
            split.outputs["Output"], name="shards", parallelism=settings.parallelism
        ) as shard:
            predicted = predict_op(
                model_uri=model_uri,
                input_uri=input_uri,
                shards=split.outputs["shards"],
                shard=shard,
                batch_size=batch_size,
            )
            predicted.set_display_name("predict shard").set_caching_options(False)
            predicted.set_retry(settings.predict_retries, backoff_duration="60s")
            predicted.set_cpu_request(settings.predict_cpu[0])
            predicted.set_cpu_limit(settings.predict_cpu[1])
            predicted.set_memory_request(settings.predict_memory[0])
            predicted.set_memory_limit(settings.predict_memory[1])
            kubernetes.set_timeout(predicted, settings.predict_timeout)
            credentials(predicted)

        merged = merge_op(
            results=dsl.Collected(predicted.outputs["results"]),
            rank_disagreements=rank_disagreements,
        )
        merged.set_display_name("merge and rank disagreements").set_caching_options(False)
        merged.set_memory_request(settings.merge_memory[0])
        merged.set_memory_limit(settings.merge_memory[1])
        kubernetes.set_timeout(merged, settings.merge_timeout)
        credentials(merged)

    return batch_prediction_pipeline


def pipeline_parameters(settings: BatchSettings | None = None) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(build_pipeline(settings).pipeline_func).parameters)


def compile_pipeline(output: str | Path, settings: BatchSettings | None = None) -> Path:
    from kfp import compiler

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(settings), package_path=str(output))
    return output


def run_local(workdir: str | Path, **arguments) -> dict[str, str]:
    """Runs the pipeline through ``kfp.local`` (every step a subprocess of this Python
    environment); returns the merge step's outputs (``merged``, ``summary``) and the run folder.
    kfp 2.17's local orchestrator runs ``dsl.ParallelFor`` and ``dsl.Collected``."""
    import os

    from kfp import local

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(workdir).resolve() / "pipeline_root"
    root.mkdir(parents=True, exist_ok=True)
    for key in LOCATION_PARAMETERS:
        if key in arguments and "://" not in arguments[key]:
            arguments[key] = str(Path(arguments[key]).resolve())
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    before = set(root.iterdir())
    with kfp_local_leaves_no_trace(), kfp_local_notices_ignored():
        build_pipeline()(**arguments)
    runs = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"kfp.local produced no run folder under {root}")
    found = {"run": str(runs[-1])}
    for output in ("merged", "summary"):
        matches = sorted(runs[-1].glob(f"batch-merge*/{output}"))
        if matches:
            found[output] = str(matches[0])
    return found
