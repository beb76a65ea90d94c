"""Compile, submit and run the training pipeline: what ``snapcat pipeline`` calls.

The same pipeline function is compiled for the cluster and executed by ``kfp.local`` on one
machine; only two defaults differ locally: the deploy step's ``deploy_dry_run`` (it writes the
manifest it would apply instead of calling a cluster) and ``baseline_from_isvc`` (no live
InferenceService is asked for the production model unless the run says so). The run's workspace
is ``WORKDIR/workspace``: a run killed mid-training and started again with the same workdir
resumes from its checkpoints there, as a retried pod does on a cluster.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from pathlib import Path

from pipelines.local_run_guard import kfp_local_leaves_no_trace, kfp_local_notices_ignored
from pipelines.training_pipeline import PIPELINE_NAME, ClusterSettings, build_pipeline
from snapcat.errors import SnapcatError
from snapcat.evaluate.comparison import CandidateError, parse_candidates

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = Path(__file__).with_name("training_pipeline.yaml")


class PipelineParameterError(SnapcatError, ValueError):
    """A ``--param`` that the pipeline does not have, or whose value does not fit its type."""


class PipelineSubmitError(SnapcatError, ValueError):
    """No KFP API to submit to (host unset or unreachable), or one that refused the run: the
    message is one line, for the command line to print without a traceback."""


#: Pipeline parameters naming what a step reads (a path or an object storage URI): a cluster's
#: pods read only URIs; a local run resolves paths from the caller's folder.
LOCATION_PARAMETERS = (
    "input_uri",
    "relabel",
    "exclude",
    "baseline_model_uri",
    "baseline_metrics_uri",
)


def pipeline_parameters(settings: ClusterSettings | None = None) -> dict[str, inspect.Parameter]:
    pipeline = build_pipeline(settings)
    return dict(inspect.signature(pipeline.pipeline_func).parameters)


def parse_params(
    pairs: list[str],
    settings: ClusterSettings | None = None,
    *,
    parameters: dict[str, inspect.Parameter] | None = None,
) -> dict:
    """``["epochs=2", "weights=none"]`` -> typed values, checked against the pipeline signature:
    ``parameters`` (another pipeline's), else the training pipeline's for ``settings``."""
    known = parameters if parameters is not None else pipeline_parameters(settings)
    values: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise PipelineParameterError(f"--param {pair!r}: expected NAME=VALUE")
        if key not in known:
            raise PipelineParameterError(
                f"--param {key}: the pipeline has no such parameter; it has {', '.join(known)}"
            )
        kind = known[key].annotation
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
        try:
            if getattr(kind, "__origin__", kind) is list:
                values[key] = _parse_list(raw)
            elif kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("true", "1", "yes")
            else:
                values[key] = kind(raw)
        except ValueError as exc:
            raise PipelineParameterError(
                f"--param {key}={raw}: not a valid {kind.__name__}"
            ) from exc
    if "candidates" in values:
        try:
            parse_candidates(values["candidates"])
        except CandidateError as exc:
            raise PipelineParameterError(f"--param candidates: {exc}") from exc
    return values


def require_parameters(params: dict, parameters: dict[str, inspect.Parameter]) -> None:
    """Refuses, before anything runs or is sent, a run missing a parameter without a default."""
    missing = [
        name
        for name, parameter in parameters.items()
        if parameter.default is inspect.Parameter.empty and name not in params
    ]
    if missing:
        raise PipelineParameterError(
            "missing " + ", ".join(f"--param {name}=..." for name in missing)
        )


def refuse_local_paths(params: dict, locations: tuple[str, ...]) -> None:
    """Refuses, before a run is sent to a cluster, a location parameter (``locations``) naming a
    path on this machine: no step's pod can read it (they read object storage)."""
    for name in locations:
        value = params.get(name)
        if isinstance(value, str) and value and "://" not in value:
            raise PipelineParameterError(
                f"--param {name}={value}: a path on this machine, which the cluster's steps "
                "cannot read; give an object storage URI (s3://..., gs://..., az://...)"
            )


def _parse_list(raw: str) -> list[str]:
    """A JSON list (``["a:b", "c:d"]``) or comma-separated items (``a:b,c:d``)."""
    if raw.strip().startswith("["):
        parsed = json.loads(raw)
        if not isinstance(parsed, list):
            raise ValueError(raw)
        return [str(item) for item in parsed]
    return [item.strip() for item in raw.split(",") if item.strip()]


def compile_pipeline(output: str | Path, settings: ClusterSettings | None = None) -> Path:
    from kfp import compiler

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(settings), package_path=str(output))
    return output


def check_package(
    package: str | Path | None,
    settings: ClusterSettings | None = None,
    *,
    kfp_version: tuple[int, int] = (2, 17),
) -> tuple[Path, list[str]]:
    """The package to submit (compiled now unless given) and what a KFP backend of
    ``kfp_version`` would refuse in it (:mod:`pipelines.kfp_backend`), plus a deploy deadline
    shorter than what the deploy step waits for."""
    import tempfile

    from pipelines import kfp_backend
    from pipelines.training_pipeline import ClusterSettings, deploy_deadline

    settings = settings or ClusterSettings()
    if package is None:
        package = compile_pipeline(Path(tempfile.mkdtemp()) / "pipeline.yaml", settings)
    package = Path(package)
    if not package.is_file():
        raise PipelineSubmitError(f"no compiled pipeline at {package}")
    try:
        problems = kfp_backend.problems(package, kfp_version=kfp_version)
        platform = kfp_backend.load(package)
    except (OSError, ValueError) as exc:  # yaml.YAMLError is a ValueError
        raise PipelineSubmitError(f"cannot read the compiled pipeline {package}: {exc}") from exc
    deploy = kfp_backend.deadlines(platform).get("deploy")
    if deploy is not None and deploy < deploy_deadline(settings):
        problems.append(
            f"the deploy step's deadline ({deploy} s) is shorter than what it waits for "
            f"({deploy_deadline(settings)} s: readiness waits, analysis, margin)"
        )
    return package, problems


def describe_submission(
    package: Path,
    params: dict,
    args,
    parameters: dict[str, inspect.Parameter],
    *,
    checks: str,
    caching: str | None = None,
) -> str:
    """What ``submit`` would send, as YAML: where, the run, its parameters (given and defaulted
    from the pipeline's ``parameters``), the workspace PVC KFP will create (when the pipeline
    has one), every step's deadline and the ``checks`` it passed; ``caching`` when a flag chose
    it."""
    import yaml

    from pipelines import kfp_backend

    platform = kfp_backend.load(package)
    defaults = {
        name: p.default for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty
    }  # fmt: skip
    try:
        host = resolve_host(args.host)
    except PipelineSubmitError as exc:
        host = f"(none: {exc})"
    summary = {
        "dry_run": True,
        "host": host or "(kfp.Client discovery: in-cluster service or kubeconfig proxy)",
        "experiment": args.experiment,
        "namespace": args.namespace,
        "run_name": args.run_name,
        "schedule": args.schedule,
        **({"caching": caching} if caching else {}),
        "package": str(package),
        "parameters": {**defaults, **params},
        **({"workspace": w} if (w := kfp_backend.workspace_pvc(platform)) else {}),
        "deadlines_seconds": kfp_backend.deadlines(platform),
        "checks": checks,
    }
    return yaml.safe_dump(summary, sort_keys=False)


def resolve_host(host: str | None) -> str | None:
    """The KFP API to submit to: ``host``, else ``$KF_PIPELINES_ENDPOINT``; None when kfp.Client
    can find one itself (in a pod: the in-cluster service; with a kubeconfig: its API server's
    proxy). Without any of them kfp.Client would quietly try http://localhost:80: refused."""
    host = host or os.environ.get("KF_PIPELINES_ENDPOINT") or None
    if host:
        if not host.startswith(("http://", "https://")):
            raise PipelineSubmitError(f"KFP host {host!r} must start with http:// or https://")
        return host
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
        return None
    raise PipelineSubmitError(
        "no Kubeflow Pipelines host: pass --host URL (e.g. http://localhost:8080 after "
        "`kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80`), set "
        "KF_PIPELINES_ENDPOINT, or run where a kubeconfig reaches the cluster"
    )


def _probe(host: str) -> None:
    """One quick request to the API's health endpoint, so an unreachable host is one line, not
    kfp.Client's retries and a urllib3 traceback."""
    import requests

    url = f"{host.rstrip('/')}/apis/v2beta1/healthz"
    try:
        status = requests.get(url, timeout=10, allow_redirects=False).status_code
    except requests.RequestException as exc:
        found = re.search(r"\[Errno -?\d+\] [^'\")]+|Read timed out|timed out", str(exc))
        reason = found.group(0) if found else type(exc).__name__
        raise PipelineSubmitError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from exc
    # 401/403/302 may be an auth proxy kfp.Client authenticates with; 404 or 5xx is not KFP.
    if status == 404 or status >= 500:
        raise PipelineSubmitError(
            f"{host} answered HTTP {status} to {url}: not a Kubeflow Pipelines API there (behind "
            "the central dashboard it is usually https://HOST/pipeline)"
        )


def submit(
    host: str | None,
    params: dict,
    *,
    package: str | Path | None = None,
    experiment: str = "snapcat",
    run_name: str | None = None,
    namespace: str | None = None,
    schedule: str | None = None,
    settings: ClusterSettings | None = None,
    enable_caching: bool | None = None,
    pipeline_name: str = PIPELINE_NAME,
) -> str:
    """Submits a run, or with ``schedule`` (a cron expression) a recurring run; returns its ID.
    ``package``: a compiled pipeline (default: the training pipeline compiled for ``settings``);
    ``pipeline_name`` names a recurring run that is given no name.

    Authentication is kfp.Client's own: in-cluster service-account tokens, ``KF_PIPELINES_*``
    environment variables, or an existing token (``KFP_TOKEN`` here). ``enable_caching=False``
    runs every step afresh; None keeps each step's compiled setting (only prepare is cached).
    """
    import tempfile

    if package is None:
        package = compile_pipeline(Path(tempfile.mkdtemp()) / "pipeline.yaml", settings)
    import kfp_server_api
    import urllib3

    host = resolve_host(host)
    if host:
        _probe(host)
    try:
        return _send(host, params, package, experiment, run_name, namespace, schedule,
                     enable_caching, pipeline_name)  # fmt: skip
    except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        where = host or "the discovered KFP API"
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise PipelineSubmitError(
            f"Kubeflow Pipelines at {where} did not take the run: {type(exc).__name__}: {reason}"
        ) from exc


def _send(
    host, params, package, experiment, run_name, namespace, schedule, enable_caching, pipeline_name
):
    import kfp

    client = kfp.Client(
        host=host, namespace=namespace, existing_token=os.environ.get("KFP_TOKEN") or None
    )
    experiment_obj = client.create_experiment(experiment, namespace=namespace)
    if schedule:
        # prepare's cache key includes the input's fingerprint, so a scheduled retrain reuses a
        # prepared dataset only when the photos are unchanged (enable_caching=False: never).
        job = client.create_recurring_run(
            experiment_id=experiment_obj.experiment_id,
            job_name=run_name or f"{pipeline_name}-scheduled",
            cron_expression=schedule,
            pipeline_package_path=str(package),
            params=params,
            enable_caching=enable_caching,
            no_catchup=True,
        )
        return job.recurring_run_id
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments=params,
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        enable_caching=enable_caching,
    )
    return run.run_id


#: How ``run_local`` runs each step: in this Python environment, or in the step's own image.
RUNNERS = ("subprocess", "docker")


def run_local(
    input_uri: str,
    workdir: str | Path,
    params: dict,
    settings: ClusterSettings | None = None,
    runner: str = "subprocess",
) -> dict[str, str]:
    """Runs the pipeline with ``kfp.local``; returns artifact paths.

    ``runner="subprocess"`` runs every step as a subprocess of this Python environment;
    ``runner="docker"`` runs each in the image its component names (``settings.image`` /
    ``settings.light_image``), as the cluster does (see :func:`docker_runner`).

    kfp.local deletes the workspace when a run ends (as a cluster deletes the run's PVC); one that
    was killed leaves it, and the next run with this workdir resumes training from it."""
    from kfp import local

    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}: choose from {', '.join(RUNNERS)}")
    settings = settings or ClusterSettings()
    # The steps are subprocesses of this one: spare their logs TensorFlow's C++ start-up chatter
    # (the training image sets the same).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir = Path(workdir).resolve()
    root = workdir / "pipeline_root"
    root.mkdir(parents=True, exist_ok=True)
    if "://" not in input_uri:
        input_uri = str(Path(input_uri).resolve())
    # The other local locations (the review's CSVs, a baseline model): absolute, since the steps
    # do not run in this folder, and mounted into the Docker runner's containers.
    files = {
        name: str(Path(params[name]).resolve())
        for name in LOCATION_PARAMETERS
        if name != "input_uri" and params.get(name) and "://" not in params[name]
    }
    params = {**params, **files}
    local.init(
        runner=(
            docker_runner(input_uri, settings, tuple(files.values()))
            if runner == "docker"
            else local.SubprocessRunner(use_venv=False)
        ),
        pipeline_root=str(root),
        workspace_root=str(workdir / "workspace"),
        raise_on_error=True,
    )
    before = set(root.iterdir())
    pipeline = build_pipeline(settings)
    with kfp_local_leaves_no_trace(), kfp_local_notices_ignored():
        pipeline(
            **{
                "baseline_from_isvc": False,
                **params,
                "input_uri": input_uri,
                "deploy_dry_run": True,
            }
        )
    runs = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"kfp.local produced no run folder under {root}")
    return locate_artifacts(runs[-1])


class ImageUnavailableError(SnapcatError, RuntimeError):
    """A step's image is neither on this machine nor pullable."""


def docker_runner(input_uri: str, settings: ClusterSettings, files: tuple[str, ...] = ()):
    """``kfp.local.DockerRunner`` set up to run the steps' containers as a cluster would.

    kfp mounts the pipeline root and the workspace at their paths; on top of that:

    - the input folder (when ``input_uri`` is a path) and ``files`` (absolute paths of what else
      a step reads: the review's CSVs, a baseline model) are mounted read-only at their own paths;
    - the image's ENTRYPOINT is cleared: Kubernetes replaces it with the component's command,
      whereas Docker would put that command after it as arguments (``snapcat sh -ec ...``);
    - the steps run as the calling user, so they can write the caller's pipeline root and what
      they write belongs to the caller (on a cluster KFP's launcher moves the artifacts);
    - host networking, so steps reach what this machine reaches (object storage, a cluster API);
    - storage credentials set in this environment are passed on (on a cluster they come from the
      ``storage_secret``), and nothing else of it.

    Images must be on this machine or pullable (``scripts/build-image.sh train pipeline`` builds
    them here); a missing one is reported before anything runs."""
    from docker.types import Mount
    from kfp import local

    ensure_images([settings.image, settings.light_image])
    mounts = []
    if "://" not in input_uri:
        mounts.append(Mount(target=input_uri, source=input_uri, type="bind", read_only=True))
    for path in files:
        if "://" in input_uri or not Path(path).is_relative_to(input_uri):
            mounts.append(Mount(target=path, source=path, type="bind", read_only=True))
    environment = {"HOME": "/tmp"}  # any user id has a writable home (matplotlib, fsspec)
    for _, variable in settings.storage_secret_env:
        if variable in os.environ:
            environment[variable] = os.environ[variable]
    return local.DockerRunner(
        entrypoint=[""],
        user=f"{os.getuid()}:{os.getgid()}",
        network_mode="host",
        mounts=mounts,
        environment=environment,
    )


def ensure_images(images: list[str]) -> None:
    """Pulls each image that is not on this machine; says how to build it when that fails."""
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        raise ImageUnavailableError(
            f"no Docker daemon answers ({exc}); start one (as root here: scripts/docker-daemon.sh)"
        ) from exc
    try:
        for image in dict.fromkeys(images):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                log.info("pulling %s", image)
                try:
                    client.images.pull(image)
                except docker.errors.APIError as exc:
                    raise ImageUnavailableError(
                        f"image {image} is not on this machine and cannot be pulled "
                        f"({exc.explanation or exc}); build it here with "
                        "scripts/build-image.sh train pipeline, or pass --image/--light-image"
                    ) from exc
    finally:
        client.close()


def locate_artifacts(run_dir: Path) -> dict[str, str]:
    """The interesting outputs of a local run, by name (task folders are named by KFP)."""
    wanted = {  # label: (task, output, file inside the output or "")
        "dataset": ("prepare", "dataset", ""),
        "data summary": ("prepare", "summary", ""),
        "comparison": ("select", "comparison", ""),
        "model": ("select", "best_model", ""),
        "metrics": ("select", "best_evaluation", "metrics.json"),
        "report": ("select", "best_evaluation", "report.html"),
        "deploy manifest": ("deploy", "manifest", ""),
    }
    found = {"run": str(run_dir)}
    for label, (task, output, inside) in wanted.items():
        matches = sorted(run_dir.glob(f"{task}*/{output}"))
        if matches:
            found[label] = str(matches[0] / inside) if inside else str(matches[0])
    return found


def describe_result(artifacts: dict[str, str]) -> str:
    lines = ["local pipeline run finished:"]
    lines += [f"  {name:16} {path}" for name, path in artifacts.items()]
    metrics_path = artifacts.get("metrics")
    if metrics_path and Path(metrics_path).exists():
        metrics = json.loads(Path(metrics_path).read_text("utf-8"))
        lines.append(
            f"  top1 {metrics['top1']:.4f}  top3 {metrics['top3']:.4f}  "
            f"gate {'blessed' if metrics['blessed'] else 'refused'}"
        )
    comparison = artifacts.get("comparison")
    if comparison and Path(comparison).exists():
        table = [line for line in Path(comparison).read_text("utf-8").splitlines() if "|" in line]
        lines += ["  candidates on the same test split, best first:"]
        lines += [f"  {line}" for line in table]
    if "deploy manifest" not in artifacts:
        lines.append("  (no deploy: the gate refused the model)")
    return "\n".join(lines)
