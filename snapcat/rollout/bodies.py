"""The bodies a rollout sends, and the request that carries one.

Built before anything is sent, so ``--dry-run`` prints exactly what would go to the API server.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from snapcat.rollout.isvc import (
    STORAGE_URI_ENV,
    RolloutError,
    canary_percent_of,
    check_model_uri,
    components_of,
    model_uri_of,
    predictor_implementation,
    ref,
    spec_of,
    transformer_container_index,
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


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=False)


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
        raise RolloutError(f"{ref(current)} already serves {model_uri} to all traffic")
    implementation = predictor_implementation(current)
    patch: dict = {}
    resource_version = (current.get("metadata") or {}).get("resourceVersion")
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    spec: dict = {
        "predictor": {"canaryTrafficPercent": percent, implementation: {"storageUri": model_uri}}
    }
    index = transformer_container_index(current)
    if index is not None:
        containers = copy.deepcopy(spec_of(current)["transformer"]["containers"])
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
    for component in components_of(body):
        body["spec"][component].pop("canaryTrafficPercent", None)
    return body


def rollback_patch(current: dict) -> dict:
    """JSON merge patch pinning all traffic to the previously rolled-out revisions."""
    return {"spec": {c: {"canaryTrafficPercent": 0} for c in components_of(current)}}
