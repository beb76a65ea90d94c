"""The bodies a rollout sends, and the request that carries one.

Built before anything is sent, so ``--dry-run`` prints exactly what would go to the API server.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml

from snapcat.rollout.isvc import (
    COMPONENTS,
    RolloutError,
    canary_percent_of,
    check_model_uri,
    model_uri_of,
    predictor_implementation,
    ref,
    rollout_components,
)


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


#: Lines of an offline dry run's body whose value the real request takes from the live object:
#: the overlay's replicas and resources, the running model, the ConfigMap names kustomize hashes,
#: the image tag the overlay pins.
_LIVE_VALUE = re.compile(
    r"^\s*(?:- )?(?:storageUri|minReplicas|maxReplicas|cpu|memory|nvidia\.com/gpu|image|"
    r"resourceVersion):"
)
LIVE_MARK = "  # <- live value"


def offline_yaml(request: Request, action: str) -> str:
    """A dry run's request built without the live object (none read, no ``--current``): the same
    YAML, with a header saying what it assumed and each line whose value comes from the live
    object marked, so nobody mistakes it for the exact request."""
    lines, after_config_map = [], False
    for line in request.to_yaml().splitlines():
        if line.startswith("#"):
            lines.append(line)
            continue
        live = bool(_LIVE_VALUE.match(line)) or (
            after_config_map and line.strip().startswith("name:")
        )
        after_config_map = line.strip() == "configMap:"
        lines.append(line + LIVE_MARK if live else line)
    header = [
        "# NOT THE EXACT REQUEST: no live object was read (a dry run contacts no cluster, and no",
        "# --current was given), so it is built from the InferenceService manifests/base ships.",
        "# Lines marked '<- live value' carry the live object's values in the real request (the",
        "# overlay's replicas and resources, the running model, kustomize's hashed ConfigMap names);",
        "# the real request is also guarded by the live metadata.resourceVersion. The exact one:",
        "#   kubectl get isvc NAME -n NAMESPACE -o yaml > live.yaml",
        f"#   snapcat rollout {action} ... --dry-run --current live.yaml",
    ]
    return "\n".join(header + lines) + "\n"


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=False)


def canary_patch(current: dict, model_uri: str, percent: int) -> dict:
    """JSON merge patch that starts (or re-weights) a canary of ``model_uri`` at ``percent``%.

    It changes one URI, the predictor's storageUri, with its canaryTrafficPercent: the
    transformer reads no model files (each answer describes the model that computed it), so it
    keeps its single revision and serves both model versions. The patch is guarded by
    ``current``'s resourceVersion: if anyone changed the object since it was read, the API server
    refuses the patch instead of losing their change.
    """
    check_model_uri(model_uri, local_ok=True)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 99:
        raise RolloutError(
            f"canary percent must be an integer from 0 to 99, not {percent!r} "
            "(0 deploys the new model without traffic; use promote for 100)"
        )
    if model_uri_of(current) == model_uri and canary_percent_of(current) is None:
        raise RolloutError(f"{ref(current)} already serves {model_uri} to all traffic")
    implementation = predictor_implementation(current)
    patch: dict = {}
    resource_version = (current.get("metadata") or {}).get("resourceVersion")
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    patch["spec"] = {
        "predictor": {"canaryTrafficPercent": percent, implementation: {"storageUri": model_uri}}
    }
    return patch


def promote_body(current: dict) -> dict:
    """The full object to PUT so the latest revisions take all traffic: ``current`` without
    canaryTrafficPercent (and without status and managedFields), keeping its resourceVersion."""
    body = copy.deepcopy(current)
    body.pop("status", None)
    metadata = body.setdefault("metadata", {})
    metadata.pop("managedFields", None)
    for component in COMPONENTS:
        (body["spec"].get(component) or {}).pop("canaryTrafficPercent", None)
    return body


def rollback_patch(current: dict) -> dict:
    """JSON merge patch pinning all traffic to the previously rolled-out revisions."""
    return {"spec": {c: {"canaryTrafficPercent": 0} for c in rollout_components(current)}}
