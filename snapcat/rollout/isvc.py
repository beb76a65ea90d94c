"""The InferenceService object as data: its names, and reading the parts a rollout is about.

Everything here works on the plain dict the Kubernetes API returns (or the manifests render), so
bodies, checks and status formatting share one reading of it.
"""

from __future__ import annotations

from snapcat.contract.service_name import DEFAULT_MODEL_NAME
from snapcat.errors import SnapcatError

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_NAME = DEFAULT_MODEL_NAME
TRANSFORMER_CONTAINER = "kserve-container"

DEPLOYMENT_MODE_ANNOTATION = f"{GROUP}/deploymentMode"
KNATIVE_MODES = ("Knative", "Serverless")  # "Serverless" is the legacy name of the Knative mode
COMPONENTS = ("predictor", "transformer")
#: Predictor implementations that carry a storageUri; ``model`` is the current form.
PREDICTOR_IMPLEMENTATIONS = ("model", "tensorflow")
MODEL_URI_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://")
#: How Kubeflow Pipelines names artifacts in its MinIO store; KServe reads them as S3.
KFP_MINIO_SCHEME = "minio://"

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"


class RolloutError(SnapcatError):
    """A rollout that cannot start or did not finish; the message says what to do."""


class RolloutTimeout(RolloutError):
    """The InferenceService did not reach the expected state in time."""


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity (``"2"``, ``"500m"``, ``1.5``) in cores."""
    quantity = str(quantity)
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def isvc_path(name: str, namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def check_model_uri(uri: str, *, local_ok: bool = False) -> None:
    """A URI KServe's storage initializer can fetch, naming a model folder (not a version in it).
    ``local_ok`` also accepts ``file://`` URIs, which only a dry run can use (the local pipeline)."""
    schemes = MODEL_URI_SCHEMES + (("file://",) if local_ok else ())
    if not isinstance(uri, str) or not uri.startswith(schemes):
        raise RolloutError(
            f"model URI {uri!r} is not one KServe's storage initializer can fetch: use one of "
            f"{', '.join(MODEL_URI_SCHEMES)} pointing at a TF Serving model folder"
        )
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    if not tail or tail.isdigit():
        raise RolloutError(
            f"model URI {uri!r} ends in a version folder: pass the model folder above it "
            "(TF Serving picks the highest integer version inside)"
        )


def spec_of(isvc: dict) -> dict:
    spec = isvc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("predictor"), dict):
        raise RolloutError(f"{ref(isvc)} has no spec.predictor")
    return spec


def ref(isvc: dict) -> str:
    meta = isvc.get("metadata") or {}
    return f"InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def predictor_implementation(isvc: dict) -> str:
    """The key under spec.predictor that holds the model (``model`` for our manifests)."""
    predictor = spec_of(isvc)["predictor"]
    for key in PREDICTOR_IMPLEMENTATIONS:
        if isinstance(predictor.get(key), dict):
            return key
    raise RolloutError(
        f"{ref(isvc)}: spec.predictor has none of {', '.join(PREDICTOR_IMPLEMENTATIONS)}; "
        "only a TF Serving predictor with a storageUri can be rolled out"
    )


def model_uri_of(isvc: dict) -> str | None:
    return spec_of(isvc)["predictor"][predictor_implementation(isvc)].get("storageUri")


def rollout_components(isvc: dict) -> tuple[str, ...]:
    """The components whose traffic a rollout splits: the predictor, since a canary changes its
    storageUri only (the transformer reads no model files, so it keeps one revision), plus any
    other component with a canaryTrafficPercent (a canary started by an older snapcat, which
    moved the transformer too), so promote and rollback finish what it started."""
    spec = spec_of(isvc)
    return ("predictor",) + tuple(
        c
        for c in COMPONENTS
        if c != "predictor" and (spec.get(c) or {}).get("canaryTrafficPercent") is not None
    )


def canary_percent_of(isvc: dict) -> int | None:
    return spec_of(isvc)["predictor"].get("canaryTrafficPercent")


def deployment_mode(isvc: dict) -> str | None:
    status_mode = (isvc.get("status") or {}).get("deploymentMode")
    annotation = ((isvc.get("metadata") or {}).get("annotations") or {}).get(
        DEPLOYMENT_MODE_ANNOTATION
    )
    return status_mode or annotation


def require_knative(isvc: dict) -> None:
    mode = deployment_mode(isvc)
    if mode not in KNATIVE_MODES:
        raise RolloutError(
            f"{ref(isvc)} runs in {mode or 'the default (Standard)'} mode: canaryTrafficPercent "
            f"only splits traffic in Knative mode (annotation {DEPLOYMENT_MODE_ANNOTATION}: Knative); "
            "see docs/deploy.md for Standard mode"
        )
