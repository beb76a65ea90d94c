"""The InferenceService ``manifests/base`` deploys, rendered from the same file.

The object is package data, ``snapcat/data/kserve/inferenceservice.yaml``: the kustomize base
includes that folder, and this module reads it from the installed package (a wheel carries it),
so a first deployment from Python, an offline dry run and ``kubectl apply -k`` start from one
source. That file is also the one source of the TF Serving release (:data:`TF_SERVING_VERSION`).
tests/test_manifests.py checks the rendering equals the kustomize build of the base.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from snapcat.rollout.isvc import check_model_uri, predictor_implementation

#: The shipped InferenceService, inside the ``snapcat`` package.
ISVC_RESOURCE = ("data", "kserve", "inferenceservice.yaml")
SERVE_IMAGE_REPOSITORY = "ghcr.io/snapcat/snapcat-serve"


@cache
def _shipped() -> dict:
    path = files("snapcat").joinpath(*ISVC_RESOURCE)
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def shipped_inferenceservice() -> dict:
    """A copy of the InferenceService as shipped (before kustomize sets namespace and tags)."""
    return copy.deepcopy(_shipped())


#: TF Serving release for the predictor (``runtimeVersion``, i.e. the tensorflow/serving image
#: tag), as the shipped manifest pins it; it matches the training TensorFlow (tests check the
#: locks), so the model is served by the runtime it was trained and evaluated on.
TF_SERVING_VERSION: str = _shipped()["spec"]["predictor"]["model"]["runtimeVersion"]


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
    runtime_version: str | None = None,
) -> dict:
    """The shipped InferenceService (CPU, one replica) named ``name`` in ``namespace``, serving
    ``model_uri``, with the transformer ``image`` (default: this version's, as the base's
    ``images:`` sets it) and TF Serving ``runtime_version`` (default: the shipped one).

    The predictor mounts TF Serving's batching and monitoring files from the ConfigMap
    ``snapcat-tfserving``, which kustomize generates from ``manifests/base/tfserving/`` (with a
    content hash in its name): a first deployment from this object alone needs that ConfigMap,
    under the name its volume gives."""
    check_model_uri(model_uri, local_ok=True)
    isvc = shipped_inferenceservice()
    isvc = _renamed(isvc, isvc["metadata"]["name"], name)
    isvc["metadata"]["namespace"] = namespace
    model = isvc["spec"]["predictor"][predictor_implementation(isvc)]
    model["storageUri"] = model_uri
    if runtime_version is not None:
        model["runtimeVersion"] = runtime_version
    for container in isvc["spec"].get("transformer", {}).get("containers", []):
        if container["image"].split(":")[0] == SERVE_IMAGE_REPOSITORY:
            container["image"] = image or serve_image()
    return isvc


def _renamed(value: Any, old: str, new: str) -> Any:
    """``value`` with the shipped name replaced where it names the InferenceService: a string
    equal to it (name, labels) or a model path in it (``/v1/models/<name>`` in probes)."""
    if isinstance(value, dict):
        return {k: _renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, old, new) for v in value]
    if isinstance(value, str):
        if value == old:
            return new
        return value.replace(f"/models/{old}", f"/models/{new}")
    return value
