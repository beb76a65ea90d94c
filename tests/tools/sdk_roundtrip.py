"""Strict check of a KServe object against the KServe SDK's generated models.

``problems(data, "V1beta1InferenceService")`` builds the SDK model objects from a plain dict (as
``kubectl`` would send it), field by field through each class's ``openapi_types``/``attribute_map``,
with the nested Kubernetes types taken from the kubernetes client. Every key the generated models do
not have at that place (a misspelt or misplaced field), every wrongly typed scalar, every missing
required field (the models' client-side validation), and every value that does not survive the
round trip back to JSON is reported with its path. An empty list means the object is well formed as
far as the SDK knows. The SDK's own deserializer cannot be used for this: it silently drops unknown
keys, and it cannot resolve the Kubernetes types (``V1Container``...) it refers to.
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Any

# Types the SDK names but does not define (or only under another name); quantities are strings or
# numbers in JSON.
QUANTITIES = {"ResourceQuantity", "V1beta1MetricQuantity"}
ALIASES = {
    "K8sIoApiAppsV1DeploymentStrategy": "V1DeploymentStrategy",
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior": "V2HorizontalPodAutoscalerBehavior",
}
# Kubernetes types newer than the kubernetes client in the lock: accepted as opaque objects.
OPAQUE = {"V1ContainerRestartRule", "V1PodSchedulingGroup"}
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}


def _resolve(name: str):
    import kserve.models
    from kubernetes import client

    name = ALIASES.get(name, name)
    for namespace in (kserve.models, client):
        cls = getattr(namespace, name, None)
        if cls is not None:
            return cls
    if name.startswith("Knative"):  # status-only models, present but not exported
        module = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        return getattr(importlib.import_module(f"kserve.models.{module}"), name)
    raise LookupError(f"SDK type {name} cannot be resolved")


class _Walker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def convert(self, value: Any, type_name: str, path: str) -> Any:
        if value is None:
            return None
        if match := re.fullmatch(r"list\[(.*)\]", type_name):
            if not isinstance(value, list):
                self.problems.append(f"{path}: expected a list, got {type(value).__name__}")
                return None
            return [self.convert(v, match.group(1), f"{path}[{i}]") for i, v in enumerate(value)]
        if match := re.fullmatch(r"dict\(([^,]*), (.*)\)", type_name):
            if not isinstance(value, dict):
                self.problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
                return None
            return {k: self.convert(v, match.group(2), f"{path}.{k}") for k, v in value.items()}
        if type_name == "object" or type_name in OPAQUE:
            return value
        if type_name in QUANTITIES:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                self.problems.append(f"{path}: expected a quantity, got {value!r}")
            return value
        if type_name in PRIMITIVES:
            allowed = PRIMITIVES[type_name]
            if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
                self.problems.append(
                    f"{path}: expected {type_name}, got {type(value).__name__} {value!r}"
                )
            return value
        return self.model(value, _resolve(type_name), path)

    def model(self, data: Any, cls, path: str):
        if not isinstance(data, dict):
            self.problems.append(f"{path}: expected an object ({cls.__name__}), got {data!r}")
            return None
        by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
        kwargs = {}
        for key, value in data.items():
            attr = by_json.get(key)
            where = f"{path}.{key}" if path else key
            if attr is None:
                close = difflib.get_close_matches(key, list(by_json), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problems.append(f"{where}: no such field in {cls.__name__}{hint}")
                continue
            kwargs[attr] = self.convert(value, cls.openapi_types[attr], where)
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{path or '<root>'}: {cls.__name__}: {exc}")
            return None


def _lost(original: Any, back: Any, path: str) -> list[str]:
    """Paths of values in ``original`` that did not come back unchanged (additions are defaults)."""
    if isinstance(original, dict):
        if not isinstance(back, dict):
            return [path or "<root>"]
        lost = []
        for key, value in original.items():
            lost += _lost(value, back.get(key), f"{path}.{key}" if path else key)
        return lost
    if isinstance(original, list):
        if not isinstance(back, list) or len(back) != len(original):
            return [path]
        lost = []
        for i, (a, b) in enumerate(zip(original, back, strict=True)):
            lost += _lost(a, b, f"{path}[{i}]")
        return lost
    return [] if original == back else [f"{path}: {original!r} came back as {back!r}"]


def problems(data: dict, type_name: str = "V1beta1InferenceService") -> list[str]:
    from kubernetes.client import ApiClient

    walker = _Walker()
    obj = walker.model(data, _resolve(type_name), "")
    if walker.problems:
        return walker.problems
    back = ApiClient().sanitize_for_serialization(obj)
    return [f"{p}: lost in the round trip" for p in _lost(data, back, "")]
