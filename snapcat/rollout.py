"""Rolling new model versions out to the KServe InferenceService: canary, promote, rollback, status.

The InferenceService (``manifests/base/inferenceservice.yaml``) runs in KServe's Knative mode, where
every change of a component's pod template makes a new revision and
``spec.<component>.canaryTrafficPercent`` splits traffic between that latest revision and the last
one that had taken 100% (KServe's "Canary Rollout"):

- :func:`canary`: merge-patches the predictor's ``storageUri`` *and* the transformer's ``STORAGE_URI``
  env var (the transformer reads the labels from the same model folder, so the two must never name
  different models) together with ``canaryTrafficPercent: P`` on both components; waits until the
  new revisions are ready and, when they never are, rolls back on its own.
- :func:`promote`: replaces (PUT) the object without ``canaryTrafficPercent``, so the latest revisions
  take all traffic. A JSON merge patch from the SDK cannot do that: its model objects drop ``None``.
- :func:`rollback`: the documented KServe rollback, ``canaryTrafficPercent: 0``: all traffic is pinned
  to the previously rolled-out revision while the spec still names the rejected model (the next
  canary replaces it).
- :func:`status`: traffic split, revisions, readiness and URLs, as a dict; :func:`format_status`
  turns it into text.

Every action builds its request first (:class:`Request`): with ``dry_run=True`` nothing contacts a
cluster and the result's ``yaml`` is the exact body that would be sent. Without a live object to
start from, a dry run assumes the deployed one is :func:`render_inferenceservice`'s (or the
``current`` object passed in, e.g. ``kubectl get isvc NAME -o yaml``).

The Kubernetes side goes through the KServe SDK's ``KServeClient`` (kubeconfig or in-cluster
config): ``get`` for reads, and its ``CustomObjectsApi`` for the PATCH/PUT with plain dict bodies,
so a dry run prints exactly the body that is sent (``KServeClient.patch``/``replace`` take SDK model
objects, whose serialization drops explicit nulls and any field the SDK does not know). Where the
SDK is not installed (the pipeline image) the kubernetes client does the same calls with the same
configuration. Nothing here parses command lines; the CLI (``snapcat rollout``) and the pipeline's
deploy step both call these functions.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from snapcat.cli import UserError

log = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_NAME = "listing-category"
#: TF Serving release for the predictor (``runtimeVersion``, i.e. the tensorflow/serving image tag).
#: TF Serving X.Y is built on TensorFlow X.Y; this matches the training TensorFlow (2.21, see
#: requirements/all.lock), so the model is served by the runtime it was trained and evaluated on.
TF_SERVING_VERSION = "2.21.0"
SERVE_IMAGE_REPOSITORY = "ghcr.io/snapcat/snapcat-serve"
SERVICE_ACCOUNT = "snapcat-model-reader"
TRANSFORMER_CONTAINER = "kserve-container"
STORAGE_URI_ENV = "STORAGE_URI"
#: Where KServe's storage initializer puts the STORAGE_URI model in a custom (transformer) container.
MODEL_MOUNT = "/mnt/models"
TOP_K = 3

DEPLOYMENT_MODE_ANNOTATION = f"{GROUP}/deploymentMode"
TAG_ROUTING_ANNOTATION = f"{GROUP}/enable-tag-routing"
KNATIVE_MODES = ("Knative", "Serverless")  # "Serverless" is the legacy name of the Knative mode
COMPONENTS = ("predictor", "transformer")
#: Predictor implementations that carry a storageUri; ``model`` is the current form.
PREDICTOR_IMPLEMENTATIONS = ("model", "tensorflow")
MODEL_URI_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://")
#: How Kubeflow Pipelines names artifacts in its MinIO store; KServe reads them as S3.
KFP_MINIO_SCHEME = "minio://"

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"

DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL = 5.0


class RolloutError(UserError):
    """A rollout that cannot start or did not finish; the message says what to do."""


class RolloutTimeout(RolloutError):
    """The InferenceService did not reach the expected state in time."""


# ------------------------------------------------------------------------------ requests
@dataclass(frozen=True)
class Request:
    """One call to the Kubernetes API, as it will be (or would have been) sent."""

    method: str
    path: str
    body: dict | None = None
    content_type: str | None = None

    def to_yaml(self) -> str:
        header = f"# {self.method} {self.path}"
        if self.content_type:
            header += f"\n# Content-Type: {self.content_type}"
        if self.body is None:
            return header + "\n"
        return header + "\n" + to_yaml(self.body)


@dataclass
class RolloutResult:
    """What an action did. ``request`` is the write it sent (or, on a dry run, would send; a status
    read has only its GET); ``status`` is :func:`summarize` of the final object (None on a dry run)."""

    action: str
    name: str
    namespace: str
    request: Request
    dry_run: bool = False
    status: dict | None = None
    messages: list[str] = field(default_factory=list)
    sent: bool = False  # whether ``request`` went to the API server (False: dry run or no-op)

    @property
    def yaml(self) -> str:
        return self.request.to_yaml()


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=False)


def isvc_path(name: str, namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


# ------------------------------------------------------------------------------ the object
def serve_image(tag: str | None = None) -> str:
    """The transformer image; its tag is the project version unless given."""
    if tag is None:
        from importlib.metadata import version

        tag = version("snapcat")
    return f"{SERVE_IMAGE_REPOSITORY}:{tag}"


def render_inferenceservice(
    name: str,
    namespace: str,
    model_uri: str,
    *,
    image: str | None = None,
    runtime_version: str = TF_SERVING_VERSION,
    service_account: str = SERVICE_ACCOUNT,
    top_k: int = TOP_K,
) -> dict:
    """The InferenceService of ``manifests/base`` (CPU, one replica) for ``model_uri``.

    tests/test_manifests.py checks this equals the kustomize build of the base, so a first
    deployment from Python and one from the manifests are the same object.
    """
    check_model_uri(model_uri, local_ok=True)
    probe = {"initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "snapcat",
                "app.kubernetes.io/component": name,
            },
            "annotations": {
                DEPLOYMENT_MODE_ANNOTATION: "Knative",
                TAG_ROUTING_ANNOTATION: "true",
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": service_account,
                "minReplicas": 1,
                "maxReplicas": 1,
                "model": {
                    "modelFormat": {"name": "tensorflow"},
                    "runtimeVersion": runtime_version,
                    "protocolVersion": "v1",
                    "storageUri": model_uri,
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "2", "memory": "4Gi"},
                    },
                    "readinessProbe": {
                        "httpGet": {"path": f"/v1/models/{name}/metadata", "port": 8080},
                        **probe,
                        "failureThreshold": 6,
                    },
                },
            },
            "transformer": {
                "serviceAccountName": service_account,
                "minReplicas": 1,
                "maxReplicas": 1,
                "containers": [
                    {
                        "name": TRANSFORMER_CONTAINER,
                        "image": image or serve_image(),
                        "args": [
                            "--http_port=8080",
                            f"--top_k={top_k}",
                            f"--model_dir={MODEL_MOUNT}",
                        ],
                        "env": [
                            {"name": STORAGE_URI_ENV, "value": model_uri},
                            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                        ],
                        "ports": [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}],
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "512Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"},
                        },
                        "readinessProbe": {
                            "httpGet": {"path": f"/v1/models/{name}", "port": 8080},
                            **probe,
                            "initialDelaySeconds": 2,
                            "failureThreshold": 6,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/v2/health/live", "port": 8080},
                            "initialDelaySeconds": 10,
                            "periodSeconds": 10,
                            "timeoutSeconds": 3,
                            "failureThreshold": 3,
                        },
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "runAsGroup": 10001,
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "privileged": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }


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


def _spec(isvc: dict) -> dict:
    spec = isvc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("predictor"), dict):
        raise RolloutError(f"{_ref(isvc)} has no spec.predictor")
    return spec


def _ref(isvc: dict) -> str:
    meta = isvc.get("metadata") or {}
    return f"InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def predictor_implementation(isvc: dict) -> str:
    """The key under spec.predictor that holds the model (``model`` for our manifests)."""
    predictor = _spec(isvc)["predictor"]
    for key in PREDICTOR_IMPLEMENTATIONS:
        if isinstance(predictor.get(key), dict):
            return key
    raise RolloutError(
        f"{_ref(isvc)}: spec.predictor has none of {', '.join(PREDICTOR_IMPLEMENTATIONS)}; "
        "only a TF Serving predictor with a storageUri can be rolled out"
    )


def model_uri_of(isvc: dict) -> str | None:
    return _spec(isvc)["predictor"][predictor_implementation(isvc)].get("storageUri")


def _transformer_container_index(isvc: dict) -> int | None:
    transformer = _spec(isvc).get("transformer")
    if not transformer:
        return None
    containers = transformer.get("containers") or []
    if not containers:
        raise RolloutError(f"{_ref(isvc)}: spec.transformer has no containers")
    for i, container in enumerate(containers):
        if container.get("name") == TRANSFORMER_CONTAINER:
            return i
    return 0  # KServe renames the first container to kserve-container


def transformer_storage_uri(isvc: dict) -> str | None:
    index = _transformer_container_index(isvc)
    if index is None:
        return None
    container = _spec(isvc)["transformer"]["containers"][index]
    for env in container.get("env") or []:
        if env.get("name") == STORAGE_URI_ENV:
            return env.get("value")
    return None


def _components(isvc: dict) -> tuple[str, ...]:
    spec = _spec(isvc)
    return tuple(c for c in COMPONENTS if spec.get(c))


def canary_percent_of(isvc: dict) -> int | None:
    return _spec(isvc)["predictor"].get("canaryTrafficPercent")


def _deployment_mode(isvc: dict) -> str | None:
    status_mode = (isvc.get("status") or {}).get("deploymentMode")
    annotation = ((isvc.get("metadata") or {}).get("annotations") or {}).get(
        DEPLOYMENT_MODE_ANNOTATION
    )
    return status_mode or annotation


def _require_knative(isvc: dict) -> None:
    mode = _deployment_mode(isvc)
    if mode not in KNATIVE_MODES:
        raise RolloutError(
            f"{_ref(isvc)} runs in {mode or 'the default (Standard)'} mode: canaryTrafficPercent "
            f"only splits traffic in Knative mode (annotation {DEPLOYMENT_MODE_ANNOTATION}: Knative); "
            "see docs/deploy.md for Standard mode"
        )


# ------------------------------------------------------------------------------ bodies
def canary_patch(current: dict, model_uri: str, percent: int) -> dict:
    """JSON merge patch that starts (or re-weights) a canary of ``model_uri`` at ``percent``%.

    It sets the predictor's storageUri and the transformer's STORAGE_URI together, with the same
    canaryTrafficPercent on both components. A merge patch replaces lists whole, so the
    transformer's containers are sent complete (copied from ``current`` with the env var changed),
    guarded by ``current``'s resourceVersion: if anyone changed the object since it was read, the
    API server refuses the patch instead of losing their change.
    """
    check_model_uri(model_uri, local_ok=True)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 99:
        raise RolloutError(
            f"canary percent must be an integer from 0 to 99, not {percent!r} "
            "(0 deploys the new model without traffic; use promote for 100)"
        )
    if model_uri_of(current) == model_uri and canary_percent_of(current) is None:
        raise RolloutError(f"{_ref(current)} already serves {model_uri} to all traffic")
    implementation = predictor_implementation(current)
    patch: dict = {}
    resource_version = (current.get("metadata") or {}).get("resourceVersion")
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    spec: dict = {
        "predictor": {"canaryTrafficPercent": percent, implementation: {"storageUri": model_uri}}
    }
    index = _transformer_container_index(current)
    if index is not None:
        containers = copy.deepcopy(_spec(current)["transformer"]["containers"])
        env = containers[index].setdefault("env", [])
        for var in env:
            if var.get("name") == STORAGE_URI_ENV:
                var.clear()
                var.update({"name": STORAGE_URI_ENV, "value": model_uri})
                break
        else:
            env.insert(0, {"name": STORAGE_URI_ENV, "value": model_uri})
        spec["transformer"] = {"canaryTrafficPercent": percent, "containers": containers}
    patch["spec"] = spec
    return patch


def promote_body(current: dict) -> dict:
    """The full object to PUT so the latest revisions take all traffic: ``current`` without
    canaryTrafficPercent (and without status and managedFields), keeping its resourceVersion."""
    body = copy.deepcopy(current)
    body.pop("status", None)
    metadata = body.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    for component in _components(body):
        body["spec"][component].pop("canaryTrafficPercent", None)
    return body


def rollback_patch(current: dict) -> dict:
    """JSON merge patch pinning all traffic to the previously rolled-out revisions."""
    return {"spec": {c: {"canaryTrafficPercent": 0} for c in _components(current)}}


# ------------------------------------------------------------------------------ status
def _conditions(isvc: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (isvc.get("status") or {}).get("conditions") or []}


def is_ready(isvc: dict) -> bool:
    return str(_conditions(isvc).get("Ready", {}).get("status", "")).lower() == "true"


def _not_ready_reason(isvc: dict) -> str:
    problems = []
    for kind, condition in _conditions(isvc).items():
        if str(condition.get("status")).lower() != "true":
            text = f"{kind}={condition.get('status')}"
            detail = condition.get("reason") or ""
            if condition.get("message"):
                detail = f"{detail}: {condition['message']}" if detail else condition["message"]
            problems.append(f"{text} ({detail})" if detail else text)
    model_status = (isvc.get("status") or {}).get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo") or {}
    if failure:
        problems.append(f"model: {failure.get('reason', '')} {failure.get('message', '')}".strip())
    return "; ".join(problems) or "no Ready condition reported yet"


def summarize(isvc: dict) -> dict:
    """The parts of an InferenceService a rollout is about, as plain data."""
    meta = isvc.get("metadata") or {}
    status = isvc.get("status") or {}
    spec = isvc.get("spec") or {}
    components = {}
    for name in COMPONENTS:
        if not spec.get(name):
            continue
        comp_status = (status.get("components") or {}).get(name) or {}
        entry: dict[str, Any] = {
            "canaryTrafficPercent": spec[name].get("canaryTrafficPercent"),
            "model_uri": _model_uri_or_none(isvc, name),
            "latestCreatedRevision": comp_status.get("latestCreatedRevision"),
            "latestReadyRevision": comp_status.get("latestReadyRevision"),
            "latestRolledoutRevision": comp_status.get("latestRolledoutRevision"),
            "previousRolledoutRevision": comp_status.get("previousRolledoutRevision"),
            "url": comp_status.get("url"),
            "traffic": [
                {
                    "revision": t.get("revisionName"),
                    "percent": t.get("percent", 0),
                    "latest": bool(t.get("latestRevision")),
                    "tag": t.get("tag"),
                    "url": t.get("url"),
                }
                for t in comp_status.get("traffic") or []
            ],
        }
        components[name] = entry
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "deploymentMode": _deployment_mode(isvc),
        "ready": is_ready(isvc) if status else None,
        "generation": meta.get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "url": status.get("url"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k) is not None}
            for c in status.get("conditions") or []
        ],
        "components": components,
    }


def _model_uri_or_none(isvc: dict, component: str) -> str | None:
    try:
        return model_uri_of(isvc) if component == "predictor" else transformer_storage_uri(isvc)
    except RolloutError:  # not a predictor/transformer this module can roll out
        return None


def format_status(summary: dict) -> str:
    """Human-readable (ASCII) text of :func:`summarize`'s result."""
    lines = [f"InferenceService {summary['namespace']}/{summary['name']}"]
    ready = summary["ready"]
    lines.append(
        f"  ready: {'unknown (no status)' if ready is None else ready}"
        f"  generation: {summary['generation']} (observed: {summary['observedGeneration']})"
        f"  mode: {summary['deploymentMode']}"
    )
    if summary["url"]:
        lines.append(f"  url: {summary['url']}")
    for name, comp in summary["components"].items():
        canary = comp["canaryTrafficPercent"]
        lines.append(f"  {name}:")
        lines.append(f"    model: {comp['model_uri']}")
        lines.append(f"    canaryTrafficPercent: {'-' if canary is None else canary}")
        for key in (
            "latestCreatedRevision",
            "latestReadyRevision",
            "latestRolledoutRevision",
            "previousRolledoutRevision",
        ):
            if comp[key]:
                lines.append(f"    {key}: {comp[key]}")
        if comp["url"]:
            lines.append(f"    url: {comp['url']}")
        for t in comp["traffic"]:
            label = t["revision"] or "(latest)"
            extras = [
                x for x in ("latest" if t["latest"] else None, t["tag"] and f"tag {t['tag']}") if x
            ]
            suffix = f" ({', '.join(extras)})" if extras else ""
            url = f" {t['url']}" if t["url"] else ""
            lines.append(f"    traffic: {t['percent']:>3}% {label}{suffix}{url}")
    for c in summary["conditions"]:
        detail = " ".join(x for x in (c.get("reason"), c.get("message")) if x)
        lines.append(f"  condition {c['type']}={c['status']}{': ' + detail if detail else ''}")
    text = "\n".join(lines)
    return text.encode("ascii", "replace").decode("ascii")


# ------------------------------------------------------------------------------ waiting
Check = Callable[[dict], "tuple[bool, str]"]


def _observed(isvc: dict, generation: int | None) -> tuple[bool, str]:
    observed = (isvc.get("status") or {}).get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False, f"the controller has not processed generation {generation} yet"
    return True, ""


def _latest_share(comp_status: dict) -> int:
    return sum(
        t.get("percent", 0) for t in comp_status.get("traffic") or [] if t.get("latestRevision")
    )


def canary_ready(
    generation: int | None,
    percent: int,
    components: tuple[str, ...],
    replaced: dict[str, str | None] | None = None,
) -> Check:
    """Ready condition true, each component's newest revision ready and given ``percent``%.

    ``replaced`` maps a component to the revision that was its newest before the patch: when the
    patch changed the model, a newer one must be the ready one (a Ready condition copied from the
    old revision before Knative has reconciled must not count).
    """
    replaced = replaced or {}

    def check(isvc: dict) -> tuple[bool, str]:
        ok, why = _observed(isvc, generation)
        if not ok:
            return ok, why
        if not is_ready(isvc):
            return False, _not_ready_reason(isvc)
        statuses = (isvc.get("status") or {}).get("components") or {}
        for name in components:
            comp = statuses.get(name) or {}
            created, ready_rev = comp.get("latestCreatedRevision"), comp.get("latestReadyRevision")
            if replaced.get(name) and ready_rev == replaced[name]:
                return False, f"{name}: no new revision is ready yet"
            if created and created != ready_rev:
                return False, f"{name} revision {created} is not ready yet"
            rolled = comp.get("latestRolledoutRevision")
            if rolled and rolled != ready_rev and _latest_share(comp) != percent:
                return False, f"{name} traffic is not split {100 - percent}/{percent} yet"
        return True, "ready"

    return check


def all_traffic_to_latest(generation: int | None, components: tuple[str, ...]) -> Check:
    def check(isvc: dict) -> tuple[bool, str]:
        ok, why = _observed(isvc, generation)
        if not ok:
            return ok, why
        if not is_ready(isvc):
            return False, _not_ready_reason(isvc)
        statuses = (isvc.get("status") or {}).get("components") or {}
        for name in components:
            comp = statuses.get(name) or {}
            if comp.get("traffic") and _latest_share(comp) != 100:
                return False, f"{name} does not send all traffic to its latest revision yet"
        return True, "ready"

    return check


def traffic_pinned_to_previous(generation: int | None, components: tuple[str, ...]) -> Check:
    """No traffic on the latest revisions. Readiness is not required: the rejected revision may be
    the very reason the InferenceService is not ready."""

    def check(isvc: dict) -> tuple[bool, str]:
        ok, why = _observed(isvc, generation)
        if not ok:
            return ok, why
        statuses = (isvc.get("status") or {}).get("components") or {}
        for name in components:
            comp = statuses.get(name) or {}
            traffic = comp.get("traffic") or []
            if not traffic or _latest_share(comp) != 0:
                return False, f"{name} traffic is not pinned to its previous revision yet"
        return True, "pinned"

    return check


def _failed_load(isvc: dict, generation: int | None) -> str | None:
    """A terminal failure KServe reports for the new model (no point waiting for the timeout)."""
    if not _observed(isvc, generation)[0]:
        return None
    model_status = (isvc.get("status") or {}).get("modelStatus") or {}
    if model_status.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec"):
        return f"model status {model_status['transitionStatus']}: {_not_ready_reason(isvc)}"
    return None


# ------------------------------------------------------------------------------ cluster
class Cluster:
    """The Kubernetes calls a rollout makes, through the KServe SDK's ``KServeClient``."""

    def __init__(self, kserve_client: Any):
        self.kserve = kserve_client

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        """kubeconfig (``kubeconfig``, else $KUBECONFIG or ~/.kube/config) outside a cluster,
        the pod's service account inside one."""
        from kubernetes.config import ConfigException

        try:
            try:
                from kserve.api.kserve_client import KServeClient
            except ImportError:  # e.g. the pipeline image, which has only the kubernetes client
                return cls(_KubernetesOnly(kubeconfig, context))
            return cls(KServeClient(config_file=kubeconfig, context=context))
        except (ConfigException, FileNotFoundError) as exc:
            raise RolloutError(
                f"no usable Kubernetes configuration ({exc}): pass --kubeconfig/--context, set "
                "KUBECONFIG, or run inside a cluster; --dry-run needs none"
            ) from exc

    def get(self, name: str, namespace: str) -> dict:
        try:
            return self.kserve.get(name, namespace=namespace)
        except RuntimeError as exc:  # KServeClient wraps the ApiException in a RuntimeError
            raise self._error("read", name, namespace, exc.__context__ or exc) from exc
        except Exception as exc:
            raise self._error("read", name, namespace, exc) from exc

    def patch(self, name: str, namespace: str, body: dict) -> dict:
        try:  # the generated client sends custom-object patches as application/merge-patch+json
            return self.kserve.api_instance.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        except Exception as exc:
            raise self._error("patch", name, namespace, exc) from exc

    def replace(self, name: str, namespace: str, body: dict) -> dict:
        try:
            return self.kserve.api_instance.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body
            )
        except Exception as exc:
            raise self._error("replace", name, namespace, exc) from exc

    @staticmethod
    def _error(verb: str, name: str, namespace: str, exc: BaseException) -> RolloutError:
        ref = f"InferenceService {namespace}/{name}"
        status = getattr(exc, "status", None)
        detail = _api_message(exc)
        if status == 404:
            return RolloutError(
                f"{ref} does not exist: deploy it first (kubectl apply -k manifests/overlays/<env>)"
            )
        if status in (401, 403):
            return RolloutError(
                f"not allowed to {verb} {ref} ({detail}); the Role in manifests/base/rbac.yaml "
                "grants get/create/patch/update on inferenceservices"
            )
        if status == 409:
            return RolloutError(f"{ref} changed while this {verb} was prepared; run it again")
        if status in (400, 422):
            return RolloutError(f"the API server rejected the {verb} of {ref}: {detail}")
        if status is not None:
            return RolloutError(f"{verb} of {ref} failed with HTTP {status}: {detail}")
        return RolloutError(f"cannot {verb} {ref}: {detail}")


class _KubernetesOnly:
    """The two parts of ``KServeClient`` a rollout uses, for where the KServe SDK is not installed:
    the same configuration choice (kubeconfig unless running in a pod) and the same
    ``CustomObjectsApi`` calls."""

    def __init__(self, kubeconfig: str | None, context: str | None):
        import os

        from kubernetes import client, config

        if kubeconfig or not os.path.isdir("/var/run/secrets/kubernetes.io/"):
            config.load_kube_config(config_file=kubeconfig, context=context)
        else:
            config.load_incluster_config()
        self.api_instance = client.CustomObjectsApi()

    def get(self, name: str, namespace: str) -> dict:
        return self.api_instance.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )


def _api_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            import json

            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(exc, "reason", None) or exc).strip().splitlines()[0][:300]


def wait_for(
    cluster: Cluster,
    name: str,
    namespace: str,
    check: Check,
    *,
    timeout: float,
    poll: float,
    what: str,
    failed: Callable[[dict], str | None] | None = None,
) -> dict:
    """Polls the InferenceService until ``check`` passes; RolloutTimeout after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_logged = None
    while True:
        isvc = cluster.get(name, namespace)
        ok, reason = check(isvc)
        if ok:
            return isvc
        failure = failed(isvc) if failed else None
        if failure:
            raise RolloutError(f"{what} failed: {failure}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RolloutTimeout(f"{what} did not happen within {timeout:g}s: {reason}")
        if reason != last_logged:
            log.info("waiting: %s", reason)
            last_logged = reason
        time.sleep(min(poll, remaining))


# ------------------------------------------------------------------------------ actions
def _load_current(
    cluster: Cluster | None,
    name: str,
    namespace: str,
    current: dict | None,
    model_uri: str | None,
) -> dict:
    if current is not None:
        return current
    if cluster is not None:
        return cluster.get(name, namespace)
    # Offline dry run: assume the object the manifests deploy.
    return render_inferenceservice(name, namespace, model_uri or "gs://CURRENT-MODEL")


def _check_same_classes(current_uri: str | None, new_uri: str) -> None:
    """Refuses a canary that changes the class list: during a canary the old transformer may call
    the new predictor and vice versa, and would then label scores with the wrong classes."""
    from snapcat.model_info import load_model_info

    if not current_uri:
        return
    try:
        old, new = load_model_info(current_uri), load_model_info(new_uri)
    except Exception as exc:
        raise RolloutError(
            f"cannot compare the class lists of {current_uri} and {new_uri}: {exc}"
        ) from exc
    if old.classes != new.classes:
        raise RolloutError(
            f"{new_uri} has a different class list than {current_uri}: a canary would mix "
            "transformers and predictors of both models; deploy it as a new InferenceService"
        )


def _connect(cluster: Cluster | None, kubeconfig: str | None, context: str | None) -> Cluster:
    return cluster if cluster is not None else Cluster.connect(kubeconfig, context)


def canary(
    name: str,
    namespace: str,
    model_uri: str,
    percent: int,
    *,
    dry_run: bool = False,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    poll: float = DEFAULT_POLL,
    wait: bool = True,
    check_classes: bool = False,
) -> RolloutResult:
    """Sends ``percent``% of the traffic to ``model_uri`` and waits until it is served.

    If the new revisions are not ready within ``timeout`` seconds (or KServe reports that the model
    failed to load), the canary is rolled back (:func:`rollback_patch`) and RolloutError raised.
    """
    check_model_uri(model_uri, local_ok=dry_run)
    if not dry_run:
        cluster = _connect(cluster, kubeconfig, context)
    live = _load_current(None if dry_run else cluster, name, namespace, current, None)
    _require_knative(live)
    live_status = live.get("status") or {}
    if live_status and not ((live_status.get("components") or {}).get("predictor") or {}).get(
        "latestRolledoutRevision"
    ):
        raise RolloutError(
            f"{_ref(live)} has no rolled-out revision yet, so there is nothing to split traffic "
            "with: wait until its first deployment is ready"
        )
    if check_classes:
        _check_same_classes(model_uri_of(live), model_uri)
    body = canary_patch(live, model_uri, percent)
    request = Request("PATCH", isvc_path(name, namespace), body, MERGE_PATCH)
    result = RolloutResult("canary", name, namespace, request, dry_run=dry_run)
    if dry_run:
        return result
    assert cluster is not None
    log.info("canary: %s%% of %s/%s to %s", percent, namespace, name, model_uri)
    sent = cluster.patch(name, namespace, body)
    result.sent = True
    if not wait:
        result.status = summarize(sent)
        return result
    generation = (sent.get("metadata") or {}).get("generation")
    components = _components(sent)
    replaced = {}
    if model_uri_of(live) != model_uri:  # new revisions are coming; the current newest ones are out
        statuses = live_status.get("components") or {}
        replaced = {c: (statuses.get(c) or {}).get("latestCreatedRevision") for c in components}
    try:
        final = wait_for(
            cluster,
            name,
            namespace,
            canary_ready(generation, percent, components, replaced),
            timeout=timeout,
            poll=poll,
            what=f"canary of {model_uri}",
            failed=lambda isvc: _failed_load(isvc, generation),
        )
    except RolloutError as exc:
        raise _roll_back_after(cluster, name, namespace, sent, exc) from exc
    result.status = summarize(final)
    return result


def _roll_back_after(
    cluster: Cluster, name: str, namespace: str, sent: dict, failure: RolloutError
) -> RolloutError:
    body = rollback_patch(sent)
    try:
        cluster.patch(name, namespace, body)
    except RolloutError as exc:
        return RolloutError(f"{failure}; the automatic rollback failed too: {exc}")
    previous = (((sent.get("status") or {}).get("components") or {}).get("predictor") or {}).get(
        "latestRolledoutRevision"
    )
    where = f" ({previous})" if previous else ""
    return RolloutError(
        f"{failure}. Rolled back: canaryTrafficPercent is 0, all traffic goes to the previous "
        f"revision{where}"
    )


def promote(
    name: str,
    namespace: str,
    *,
    model_uri: str | None = None,
    dry_run: bool = False,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    poll: float = DEFAULT_POLL,
    wait: bool = True,
) -> RolloutResult:
    """Gives the canary all traffic. With ``model_uri``, refuses unless that is the canary's model."""
    if model_uri is not None:
        check_model_uri(model_uri, local_ok=dry_run)
    if not dry_run:
        cluster = _connect(cluster, kubeconfig, context)
    live = _load_current(None if dry_run else cluster, name, namespace, current, model_uri)
    if model_uri is not None and model_uri_of(live) != model_uri:
        raise RolloutError(
            f"{_ref(live)} is rolling out {model_uri_of(live)}, not {model_uri}; nothing promoted"
        )
    body = promote_body(live)
    request = Request("PUT", isvc_path(name, namespace), body, JSON)
    result = RolloutResult("promote", name, namespace, request, dry_run=dry_run)
    if dry_run:
        return result
    assert cluster is not None
    components = _components(live)
    percents = [live["spec"][c].get("canaryTrafficPercent") for c in components]
    if all(p is None for p in percents):
        result.messages.append("no canary in progress: nothing to promote")
        result.status = summarize(live)
        return result
    if any(p == 0 for p in percents):
        raise RolloutError(
            f"{_ref(live)}: the canary of {model_uri_of(live)} was rolled back "
            "(canaryTrafficPercent 0); start a new canary before promoting"
        )
    statuses = (live.get("status") or {}).get("components") or {}
    for c in components:
        comp = statuses.get(c) or {}
        if comp.get("latestCreatedRevision") != comp.get("latestReadyRevision"):
            raise RolloutError(
                f"{_ref(live)}: the {c} canary revision {comp.get('latestCreatedRevision')} is not "
                "ready; nothing promoted (see `snapcat rollout status`)"
            )
    log.info("promote: %s/%s serves %s to all traffic", namespace, name, model_uri_of(live))
    sent = cluster.replace(name, namespace, body)
    result.sent = True
    if wait:
        generation = (sent.get("metadata") or {}).get("generation")
        sent = wait_for(
            cluster,
            name,
            namespace,
            all_traffic_to_latest(generation, components),
            timeout=timeout,
            poll=poll,
            what=f"promotion of {model_uri_of(live)}",
        )
    result.status = summarize(sent)
    return result


def rollback(
    name: str,
    namespace: str,
    *,
    dry_run: bool = False,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    poll: float = DEFAULT_POLL,
    wait: bool = True,
) -> RolloutResult:
    """Pins all traffic to the previously rolled-out revisions (``canaryTrafficPercent: 0``)."""
    if not dry_run:
        cluster = _connect(cluster, kubeconfig, context)
    live = _load_current(None if dry_run else cluster, name, namespace, current, None)
    _require_knative(live)
    body = rollback_patch(live)
    request = Request("PATCH", isvc_path(name, namespace), body, MERGE_PATCH)
    result = RolloutResult("rollback", name, namespace, request, dry_run=dry_run)
    if dry_run:
        return result
    assert cluster is not None
    components = _components(live)
    percents = [live["spec"][c].get("canaryTrafficPercent") for c in components]
    if all(p == 0 for p in percents):
        result.messages.append("already rolled back: canaryTrafficPercent is 0")
    elif all(p is None for p in percents):
        raise RolloutError(
            f"{_ref(live)} has no canary in progress: its latest revision already has all traffic. "
            "To go back to an earlier model, run a canary of that model's URI and promote it"
        )
    log.info("rollback: %s/%s pins traffic to the previous revision", namespace, name)
    sent = cluster.patch(name, namespace, body)
    result.sent = True
    if wait:
        generation = (sent.get("metadata") or {}).get("generation")
        sent = wait_for(
            cluster,
            name,
            namespace,
            traffic_pinned_to_previous(generation, components),
            timeout=timeout,
            poll=poll,
            what="rollback",
        )
    result.status = summarize(sent)
    return result


def status(
    name: str,
    namespace: str,
    *,
    dry_run: bool = False,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> RolloutResult:
    """Reads the InferenceService (or summarizes ``current``) without changing anything."""
    request = Request("GET", isvc_path(name, namespace))
    result = RolloutResult("status", name, namespace, request, dry_run=dry_run)
    if current is not None:
        result.status = summarize(current)
    elif not dry_run:
        result.status = summarize(_connect(cluster, kubeconfig, context).get(name, namespace))
    return result


def production_model_uri(
    name: str,
    namespace: str,
    *,
    current: dict | None = None,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> str:
    """The storageUri the live InferenceService serves all its traffic from: the champion a new
    candidate is evaluated against. During a canary the spec names the canary, not production,
    so that is refused rather than guessed."""
    isvc = (
        current
        if current is not None
        else _connect(cluster, kubeconfig, context).get(name, namespace)
    )
    percent = canary_percent_of(isvc)
    if percent is not None and percent < 100:
        raise RolloutError(
            f"InferenceService {namespace}/{name} is running a {percent}% canary: its storageUri is "
            "the canary's; promote or roll back first, or name the production model explicitly"
        )
    uri = model_uri_of(isvc)
    if not uri:
        raise RolloutError(f"InferenceService {namespace}/{name} has no predictor storageUri")
    return uri


# ------------------------------------------------------------------------------ pipeline
def kserve_storage_uri(artifact_uri: str) -> str:
    """The storageUri for a pipeline's Model artifact URI.

    Kubeflow Pipelines names artifacts in its MinIO store ``minio://bucket/key``; KServe reads the
    same object as ``s3://bucket/key`` (the MinIO endpoint goes in the storage secret's
    ``serving.kserve.io/s3-endpoint`` annotation). A local path (``kfp.local``) becomes a
    ``file://`` URI, which only a dry run accepts. Other URIs pass through unchanged.
    """
    uri = artifact_uri.rstrip("/")
    if uri.startswith(KFP_MINIO_SCHEME):
        return "s3://" + uri[len(KFP_MINIO_SCHEME) :]
    if "://" not in uri:
        from pathlib import Path

        return Path(uri).absolute().as_uri()
    return uri


def deploy_canary(
    name: str,
    namespace: str,
    model_uri: str,
    percent: int,
    *,
    dry_run: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    check_classes: bool = False,
    **connection: Any,
) -> str:
    """The pipeline's deploy step: :func:`canary`, returning the request as YAML (what was sent,
    or would be on a dry run), followed by the resulting status as YAML comments."""
    result = canary(
        name,
        namespace,
        model_uri,
        percent,
        dry_run=dry_run,
        timeout=timeout,
        check_classes=check_classes,
        **connection,
    )
    text = result.yaml
    if result.status is not None:
        text += "".join(f"# {line}\n" for line in format_status(result.status).splitlines())
    return text
