"""The InferenceService ``manifests/base`` deploys, rendered from Python.

Used as the starting object of an offline dry run and for a first deployment without kustomize.
tests/test_manifests.py checks it equals the kustomize build of the base.
"""

from __future__ import annotations

from snapcat.rollout.isvc import (
    API_VERSION,
    DEPLOYMENT_MODE_ANNOTATION,
    GROUP,
    KIND,
    STORAGE_URI_ENV,
    TRANSFORMER_CONTAINER,
    check_model_uri,
)

#: TF Serving release for the predictor (``runtimeVersion``, i.e. the tensorflow/serving image tag).
#: TF Serving X.Y is built on TensorFlow X.Y; this matches the training TensorFlow (2.21, see
#: requirements/all.lock), so the model is served by the runtime it was trained and evaluated on.
TF_SERVING_VERSION = "2.21.0"
SERVE_IMAGE_REPOSITORY = "ghcr.io/snapcat/snapcat-serve"
SERVICE_ACCOUNT = "snapcat-model-reader"
#: Where KServe's storage initializer puts the STORAGE_URI model in a custom (transformer) container.
MODEL_MOUNT = "/mnt/models"
TOP_K = 3
#: Where KServe's payload logger sends requests and responses: the sink of manifests/feedback.
FEEDBACK_SINK_URL = "http://snapcat-feedback/"
TAG_ROUTING_ANNOTATION = f"{GROUP}/enable-tag-routing"


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
                "logger": {"mode": "all", "url": FEEDBACK_SINK_URL},
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
