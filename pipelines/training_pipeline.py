"""The training pipeline: prepare -> train and evaluate each candidate -> select the best ->
(if the gate blessed it) deploy as a canary.

No ``from __future__ import annotations`` here: KFP reads the pipeline signature's real types.

Run-time choices (data, hyper-parameters, gate tolerances, where to deploy) are pipeline
parameters. Cluster placement (image, GPUs, node selectors, tolerations, the storage secret) is
fixed at compile time by :class:`ClusterSettings`, because KFP resolves those when it compiles.
"""

from dataclasses import dataclass, field

from kfp import dsl, kubernetes

from components import deploy, evaluate, prepare, select, train
from components.images import default_train_image

PIPELINE_NAME = "snapcat-training"
#: One candidate by default: the seed's best (Xception fine-tuned after a frozen-head phase).
DEFAULT_CANDIDATES = ["xception:two-phase"]


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"

    @classmethod
    def parse(cls, text: str) -> "Toleration":
        """``key[=value][:Effect]``, e.g. ``nvidia.com/gpu:NoSchedule`` or ``pool=gpu:NoSchedule``."""
        spec, _, effect = text.partition(":")
        key, eq, value = spec.partition("=")
        return cls(
            key=key,
            operator="Equal" if eq else "Exists",
            value=value or None,
            effect=effect or None,
        )


@dataclass(frozen=True)
class ClusterSettings:
    """Where the steps run. Defaults fit a GPU node pool tainted ``nvidia.com/gpu:NoSchedule``
    and labelled by NVIDIA's GPU feature discovery (``nvidia.com/gpu.present=true``)."""

    image: str = field(default_factory=default_train_image)
    gpu_type: str = "nvidia.com/gpu"
    gpu_count: int = 1
    node_selector: tuple[tuple[str, str], ...] = (("nvidia.com/gpu.present", "true"),)
    tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    train_cpu: tuple[str, str] = ("4", "8")  # request, limit
    train_memory: tuple[str, str] = ("16G", "32G")
    evaluate_cpu: tuple[str, str] = ("2", "4")
    evaluate_memory: tuple[str, str] = ("8G", "16G")
    prepare_cpu: tuple[str, str] = ("4", "8")
    prepare_memory: tuple[str, str] = ("8G", "16G")
    train_retries: int = 3
    storage_secret: str = "snapcat-storage"
    # secret key -> environment variable (S3-compatible stores; fsspec/s3fs and TF read these)
    storage_secret_env: tuple[tuple[str, str], ...] = (
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )


def _on_gpu(task: dsl.PipelineTask, settings: ClusterSettings) -> None:
    task.set_accelerator_type(settings.gpu_type).set_accelerator_limit(settings.gpu_count)
    for key, value in settings.node_selector:
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in settings.tolerations:
        kubernetes.add_toleration(
            task, key=t.key, operator=t.operator, value=t.value, effect=t.effect
        )


def _resources(task: dsl.PipelineTask, cpu: tuple[str, str], memory: tuple[str, str]) -> None:
    task.set_cpu_request(cpu[0]).set_cpu_limit(cpu[1])
    task.set_memory_request(memory[0]).set_memory_limit(memory[1])


def _storage_credentials(task: dsl.PipelineTask, settings: ClusterSettings) -> None:
    """Credentials come from a Kubernetes secret at run time, never from the image."""
    if settings.storage_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=settings.storage_secret,
            secret_key_to_env=dict(settings.storage_secret_env),
            optional=True,
        )


def build_pipeline(settings: ClusterSettings | None = None):
    """Returns the ``@dsl.pipeline`` function for these cluster settings."""
    settings = settings or ClusterSettings()
    prepare_op = prepare.build(settings.image)
    train_op = train.build(settings.image)
    evaluate_op = evaluate.build(settings.image)
    deploy_op = deploy.build(settings.image)
    select_op = select.build(settings.image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Listing-photo category classifier: prepare, train and evaluate candidates, "
        "select the best, gate, canary.",
    )
    def training_pipeline(
        input_uri: str,
        image_size: int = 299,
        seed: int = 0,
        test_fraction: float = 0.2,
        validation_fraction: float = 0.1,
        min_images_per_class: int = 10,
        candidates: list[str] = DEFAULT_CANDIDATES,
        weights: str = "imagenet",
        epochs: int = 12,
        head_epochs: int = 0,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        fine_tune_learning_rate: float = 1e-5,
        early_stopping_patience: int = 4,
        baseline_metrics_uri: str = "",
        max_top1_drop: float = 0.01,
        max_top3_drop: float = 0.01,
        max_class_recall_drop: float = 0.10,
        min_top1: float = 0.60,
        min_top3: float = 0.85,
        isvc_name: str = "listing-category",
        isvc_namespace: str = "snapcat",
        canary_percent: int = 10,
        deploy_dry_run: bool = False,
        canary_auto: bool = False,
        prometheus_url: str = "",
        analysis_window: str = "10m",
        analysis_timeout: float = 3600.0,
    ):
        prepared = prepare_op(
            input_uri=input_uri,
            image_size=image_size,
            seed=seed,
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            min_images_per_class=min_images_per_class,
        )
        prepared.set_display_name("prepare").set_caching_options(True)
        _resources(prepared, settings.prepare_cpu, settings.prepare_memory)

        # The seed's experiment as a run: every backbone:mode candidate is trained and evaluated
        # on the same test split, side by side; only the best goes on.
        with dsl.ParallelFor(candidates, name="candidates") as candidate:
            trained = train_op(
                dataset=prepared.outputs["dataset"],
                candidate=candidate,
                weights=weights,
                image_size=image_size,
                epochs=epochs,
                head_epochs=head_epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                fine_tune_learning_rate=fine_tune_learning_rate,
                seed=seed,
                early_stopping_patience=early_stopping_patience,
            )
            # Preemptible GPU nodes: a retried attempt resumes from its last finished epoch.
            trained.set_display_name("train").set_caching_options(False)
            trained.set_retry(
                num_retries=settings.train_retries,
                backoff_duration="60s",
                backoff_factor=2,
                backoff_max_duration="3600s",
            )
            _resources(trained, settings.train_cpu, settings.train_memory)
            _on_gpu(trained, settings)

            evaluated = evaluate_op(
                dataset=prepared.outputs["dataset"],
                model=trained.outputs["model"],
                baseline_metrics_uri=baseline_metrics_uri,
                max_top1_drop=max_top1_drop,
                max_top3_drop=max_top3_drop,
                max_class_recall_drop=max_class_recall_drop,
                min_top1=min_top1,
                min_top3=min_top3,
            )
            evaluated.set_display_name("evaluate and gate").set_caching_options(False)
            _resources(evaluated, settings.evaluate_cpu, settings.evaluate_memory)
            _on_gpu(evaluated, settings)

        selected = select_op(
            models=dsl.Collected(trained.outputs["model"]),
            evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
        )
        selected.set_display_name("select the best candidate").set_caching_options(False)

        with dsl.If(selected.outputs["Output"] == True, name="blessed"):  # noqa: E712
            deployed = deploy_op(
                model=selected.outputs["best_model"],
                isvc_name=isvc_name,
                isvc_namespace=isvc_namespace,
                canary_percent=canary_percent,
                dry_run=deploy_dry_run,
                canary_auto=canary_auto,
                prometheus_url=prometheus_url,
                analysis_window=analysis_window,
                analysis_timeout=analysis_timeout,
            )
            deployed.set_display_name("deploy canary").set_caching_options(False)

        for task in (prepared, trained, evaluated, selected, deployed):
            _storage_credentials(task, settings)

    return training_pipeline
