"""The training pipeline: fingerprint -> prepare -> train and evaluate each candidate -> select
the best -> (if the gate blessed it) deploy as a canary.

No ``from __future__ import annotations`` here: KFP reads the pipeline signature's real types.

Run-time choices (data, hyper-parameters, gate tolerances, where to deploy) are pipeline
parameters whose defaults are the library's own (:class:`PrepareConfig`, :class:`TrainConfig`,
:class:`GateConfig`). Cluster placement (images, GPUs, node selectors, tolerations, the storage
secret, timeouts, the workspace volume) is fixed at compile time by :class:`ClusterSettings`,
because KFP resolves those when it compiles.

How it behaves on a cluster:

- *Resume*: the run has a workspace volume (a PVC that lives as long as the run); training
  checkpoints go there, so a retried (preempted) train attempt resumes from its last epoch.
- *Caching*: only prepare is cached, and its inputs include the fingerprint of the input
  listing (or an explicit ``data_version``) and of the reviewed label audit (``relabel``,
  ``exclude``), so new photos or an edited review mean a new cache key.
- *Gate*: evaluate compares the candidate with the production model on the same photos.
- *Workspace*: KFP's Argo compiler creates the workspace PVC only from an explicit spec, and
  refuses one without ``accessModes`` unless the API server's config sets a default (KFP's
  manifests do not). ``ClusterSettings.workspace_access_mode`` is ``ReadWriteMany`` by default:
  candidates train in parallel, possibly on different GPU nodes, on one shared volume. On a
  cluster without an RWX storage class, choose ``ReadWriteOnce``: candidates then run one after
  another (``ParallelFor`` parallelism 1), so the volume is attached to one node at a time.
  The compiled spec is checked against the compiler's rules by :mod:`pipelines.kfp_backend`.
- *Deadlines*: every step's ``activeDeadlineSeconds`` is derived from what it waits for; the
  deploy step's from the readiness waits, the longest canary analysis the settings allow and a
  margin (:func:`deploy_deadline`). A run asking for a longer analysis than the compiled spec
  leaves room for is refused by the deploy step before it starts a canary.
"""

from dataclasses import dataclass, field

from kfp import dsl, kubernetes

from components import deploy, evaluate, fingerprint, prepare, select, train
from components.images import default_light_image, default_train_image
from snapcat.contract.service_name import DEFAULT_MODEL_NAME
from snapcat.dataset.prepare import PrepareConfig
from snapcat.evaluate.gate import GateConfig
from snapcat.rollout.analysis import DEFAULT_WINDOW
from snapcat.rollout.apply import DEFAULT_TIMEOUT as ROLLOUT_READY_TIMEOUT
from snapcat.train.trainer import TrainConfig

PIPELINE_NAME = "snapcat-training"
#: The library's defaults, which the pipeline parameters repeat (a test checks they agree).
PREPARE = PrepareConfig(input="", output="")
TRAIN = TrainConfig(data="", output="")
GATE = GateConfig()
#: One candidate by default: the seed's best (Xception fine-tuned after a frozen-head phase),
#: TrainConfig's backbone and mode.
DEFAULT_CANDIDATES = [f"{TRAIN.backbone}:{TRAIN.mode}"]
#: Access modes a workspace can have (Kubernetes' own list, ReadOnlyMany excluded: training
#: writes its checkpoints there).
WORKSPACE_ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
#: Seconds added to what the deploy step waits for: pod start, image pull, the API calls.
DEPLOY_MARGIN = 600


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
    # Steps that only call APIs or list object storage (fingerprint, select, deploy): no TensorFlow/CUDA.
    light_image: str = field(default_factory=default_light_image)
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
    # Pod deadlines (seconds): a hung step fails instead of holding a GPU node forever. Train's is
    # per attempt; a retried attempt resumes from the workspace.
    fingerprint_timeout: int = 30 * 60
    prepare_timeout: int = 6 * 3600
    train_timeout: int = 24 * 3600
    evaluate_timeout: int = 4 * 3600
    select_timeout: int = 30 * 60
    # What the deploy step waits for; its deadline is derived from these (deploy_deadline):
    # each readiness wait (the canary, then its promotion or rollback) and the longest canary
    # analysis a run may ask for (the pipeline's ``analysis_timeout`` default is this).
    rollout_ready_timeout: int = int(ROLLOUT_READY_TIMEOUT)
    analysis_timeout: int = 3600
    analysis_interval: int = 60
    # The run's workspace volume, where training checkpoints live (KFP >= 2.15 backend). KFP's
    # compiler needs accessModes; storageClassName None is the cluster's default class (KFP
    # 2.17+; KFP 2.15-2.16 need it named).
    workspace_size: str = "20Gi"
    workspace_storage_class: str | None = None
    workspace_access_mode: str = "ReadWriteMany"
    storage_secret: str = "snapcat-storage"
    # secret key -> environment variable (S3-compatible stores; fsspec/s3fs and TF read these)
    storage_secret_env: tuple[tuple[str, str], ...] = (
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )

    def __post_init__(self) -> None:
        if self.workspace_access_mode not in WORKSPACE_ACCESS_MODES:
            raise ValueError(
                f"workspace access mode {self.workspace_access_mode!r}: choose one of "
                f"{', '.join(WORKSPACE_ACCESS_MODES)}"
            )
        if self.workspace_storage_class == "":
            raise ValueError("workspace storage class: a name, or None for the cluster default")
        if min(self.rollout_ready_timeout, self.analysis_timeout, self.analysis_interval) <= 0:
            raise ValueError("the rollout and analysis timeouts must be positive")

    @property
    def shared_workspace(self) -> bool:
        """Whether pods on different nodes can mount the workspace at the same time."""
        return self.workspace_access_mode == "ReadWriteMany"

    @property
    def deploy_timeout(self) -> int:
        return deploy_deadline(self)


def deploy_deadline(settings: ClusterSettings) -> int:
    """The deploy step's deadline: the canary's readiness wait, the longest analysis (plus one
    interval: the analysis may be mid-sleep at its deadline), the promotion's or rollback's
    readiness wait (a failed canary's rollback waits as long), and a margin for the pod itself."""
    return (
        2 * settings.rollout_ready_timeout
        + settings.analysis_timeout
        + settings.analysis_interval
        + DEPLOY_MARGIN
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


def storage_credentials(task: dsl.PipelineTask, settings) -> None:
    """Credentials come from a Kubernetes secret at run time, never from the image (``settings``:
    any pipeline's settings with ``storage_secret`` and ``storage_secret_env``)."""
    if settings.storage_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=settings.storage_secret,
            secret_key_to_env=dict(settings.storage_secret_env),
            optional=True,
        )


def _workspace(settings: ClusterSettings) -> dsl.PipelineConfig:
    """The workspace PVC as KFP's Argo compiler builds it: ``accessModes`` always (it refuses a
    workspace without), ``storageClassName`` only when named (else the cluster's default)."""
    patch: dict = {"accessModes": [settings.workspace_access_mode]}
    if settings.workspace_storage_class:
        patch["storageClassName"] = settings.workspace_storage_class
    return dsl.PipelineConfig(
        workspace=dsl.WorkspaceConfig(
            size=settings.workspace_size,
            kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch),
        )
    )


def build_pipeline(settings: ClusterSettings | None = None):
    """Returns the ``@dsl.pipeline`` function for these cluster settings."""
    settings = settings or ClusterSettings()
    fingerprint_op = fingerprint.build(settings.light_image)
    prepare_op = prepare.build(settings.image)
    train_op = train.build(settings.image)
    evaluate_op = evaluate.build(settings.image)
    deploy_op = deploy.build(settings.light_image)
    select_op = select.build(settings.light_image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Listing-photo category classifier: prepare, train and evaluate candidates, "
        "select the best, gate, canary.",
        pipeline_config=_workspace(settings),
    )
    def training_pipeline(
        input_uri: str,
        data_version: str = "",
        image_size: int = PREPARE.image_size,
        seed: int = PREPARE.seed,
        test_fraction: float = PREPARE.test_fraction,
        validation_fraction: float = PREPARE.validation_fraction,
        min_images_per_class: int = PREPARE.min_images_per_class,
        relabel: str = "",
        exclude: str = "",
        ignore_unknown: bool = PREPARE.ignore_unknown,
        candidates: list[str] = DEFAULT_CANDIDATES,
        weights: str = TRAIN.weights,
        epochs: int = TRAIN.epochs,
        head_epochs: int = 0,  # 0: the backbone's recipe (snapcat.train.trainer.RECIPES)
        batch_size: int = TRAIN.batch_size,
        learning_rate: float = TRAIN.learning_rate,
        fine_tune_learning_rate: float = 0.0,  # 0: the backbone's recipe (snapcat.train.trainer)
        early_stopping_patience: int = TRAIN.early_stopping_patience,
        confident_precision: float = TRAIN.confident_precision,
        baseline_model_uri: str = "",
        baseline_from_isvc: bool = True,
        baseline_metrics_uri: str = "",
        max_top1_drop: float = GATE.max_top1_drop,
        max_top3_drop: float = GATE.max_top3_drop,
        max_class_recall_drop: float = GATE.max_class_recall_drop,
        min_class_support: int = GATE.min_class_support,
        min_top1: float = GATE.min_top1,
        min_top3: float = GATE.min_top3,
        max_ece_increase: float = GATE.max_ece_increase,
        isvc_name: str = DEFAULT_MODEL_NAME,
        isvc_namespace: str = "snapcat",
        canary_percent: int = 10,
        deploy_dry_run: bool = False,
        canary_auto: bool = False,
        prometheus_url: str = "",
        analysis_window: str = DEFAULT_WINDOW,
        analysis_timeout: float = float(settings.analysis_timeout),
    ):
        # Never cached: it is what tells whether the photos changed since the cached prepare.
        listed = fingerprint_op(
            input_uri=input_uri, data_version=data_version, relabel=relabel, exclude=exclude
        )
        listed.set_display_name("fingerprint data").set_caching_options(False)
        kubernetes.set_timeout(listed, settings.fingerprint_timeout)

        prepared = prepare_op(
            input_uri=input_uri,
            image_size=image_size,
            seed=seed,
            test_fraction=test_fraction,
            validation_fraction=validation_fraction,
            min_images_per_class=min_images_per_class,
            relabel=relabel,
            exclude=exclude,
            ignore_unknown=ignore_unknown,
            data_version=listed.output,
        )
        prepared.set_display_name("prepare").set_caching_options(True)
        _resources(prepared, settings.prepare_cpu, settings.prepare_memory)
        kubernetes.set_timeout(prepared, settings.prepare_timeout)

        # The seed's experiment as a run: every backbone:mode candidate is trained and evaluated
        # on the same test split, side by side; only the best goes on.
        # One volume attached to one node at a time (ReadWriteOnce): one candidate at a time.
        parallelism = 0 if settings.shared_workspace else 1
        with dsl.ParallelFor(candidates, name="candidates", parallelism=parallelism) as candidate:
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
                confident_precision=confident_precision,
                workspace=dsl.WORKSPACE_PATH_PLACEHOLDER,
            )
            # Preemptible GPU nodes: a retried attempt resumes from the checkpoints in the
            # workspace.
            trained.set_display_name("train").set_caching_options(False)
            trained.set_retry(
                num_retries=settings.train_retries,
                backoff_duration="60s",
                backoff_factor=2,
                backoff_max_duration="3600s",
            )
            _resources(trained, settings.train_cpu, settings.train_memory)
            _on_gpu(trained, settings)
            kubernetes.set_timeout(trained, settings.train_timeout)

            evaluated = evaluate_op(
                dataset=prepared.outputs["dataset"],
                model=trained.outputs["model"],
                baseline_model_uri=baseline_model_uri,
                baseline_from_isvc=baseline_from_isvc,
                isvc_name=isvc_name,
                isvc_namespace=isvc_namespace,
                baseline_metrics_uri=baseline_metrics_uri,
                max_top1_drop=max_top1_drop,
                max_top3_drop=max_top3_drop,
                max_class_recall_drop=max_class_recall_drop,
                min_class_support=min_class_support,
                min_top1=min_top1,
                min_top3=min_top3,
                max_ece_increase=max_ece_increase,
            )
            evaluated.set_display_name("evaluate and gate").set_caching_options(False)
            _resources(evaluated, settings.evaluate_cpu, settings.evaluate_memory)
            _on_gpu(evaluated, settings)
            kubernetes.set_timeout(evaluated, settings.evaluate_timeout)

        selected = select_op(
            models=dsl.Collected(trained.outputs["model"]),
            evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
        )
        selected.set_display_name("select the best candidate").set_caching_options(False)
        kubernetes.set_timeout(selected, settings.select_timeout)

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
                max_analysis_timeout=float(settings.analysis_timeout),
                analysis_interval=float(settings.analysis_interval),
                ready_timeout=float(settings.rollout_ready_timeout),
            )
            deployed.set_display_name("deploy canary").set_caching_options(False)
            kubernetes.set_timeout(deployed, settings.deploy_timeout)

        for task in (listed, prepared, trained, evaluated, selected, deployed):
            storage_credentials(task, settings)

    return training_pipeline
