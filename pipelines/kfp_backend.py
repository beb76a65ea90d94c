"""What a real KFP backend will refuse in a compiled pipeline, checked before it is submitted.

KFP's SDK compiles anything; the API server's Argo compiler
(``backend/src/v2/compiler/argocompiler/argo.go``, ``GetWorkspacePVC`` and
``convertStructToPVCSpec``) then builds the run's workspace PVC and refuses, with no run created:

- a workspace whose ``kubernetes`` section is absent (no PVC is created at all, so the
  workspace path a step uses would not exist);
- an empty ``size``, one that is not a Kubernetes quantity (``10GB``), or a negative one;
- a ``pvcSpecPatch`` with any field but ``accessModes`` and ``storageClassName``;
- a PVC spec (the API server's default, if its config has ``Workspace.VolumeClaimTemplateSpec``,
  patched with ours) without ``accessModes``. KFP's shipped manifests set no default, so the
  compiled spec must carry them;
- ``storageClassName``: KFP 2.15 and 2.16 require a non-empty one; 2.17 and later accept it
  omitted (the cluster's default class) but refuse an empty string.

Those are the rules below, for a backend with no default workspace spec (the shipped one). One
more is snapcat's own, not the compiler's: parallel candidates on a volume that only one node
can attach (``ReadWriteOnce``) fail with multi-attach errors when the scheduler puts them on
different GPU nodes, so a non-RWX workspace needs the candidate loop to run one at a time.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

#: Kubernetes' PersistentVolumeAccessMode values.
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
#: pvcSpecPatch fields the Argo compiler accepts (argo.go, convertStructToPVCSpec).
PATCHABLE = ("accessModes", "storageClassName")
#: A Kubernetes resource quantity (k8s.io/apimachinery resource.ParseQuantity), sign included.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[kMGTPE]|m|u|n)?$")


def load(compiled: str | Path | dict) -> dict:
    """The platform spec of a compiled pipeline (the YAML's second document), or ``{}``."""
    if isinstance(compiled, dict):
        return compiled
    docs = [d for d in yaml.safe_load_all(Path(compiled).read_text("utf-8")) if d]
    return next((d for d in docs if "platforms" in d), {})


def workspace_pvc(platform: dict) -> dict | None:
    """The workspace section of the platform spec (``size`` and ``kubernetes``), or None."""
    config = ((platform.get("platforms") or {}).get("kubernetes") or {}).get("pipelineConfig")
    return (config or {}).get("workspace")


def workspace_problems(
    compiled: str | Path | dict, *, kfp_version: tuple[int, int] = (2, 17)
) -> list[str]:
    """Why KFP's Argo compiler (at ``kfp_version``, no default workspace configured) would refuse
    this pipeline's workspace, in words; empty when it would accept it."""
    workspace = workspace_pvc(load(compiled))
    if workspace is None:
        return []  # no workspace: nothing to create
    problems = []
    size = str(workspace.get("size") or "")
    if not size:
        problems.append("workspace size is required but not specified")
    elif not _QUANTITY.match(size):
        problems.append(f"workspace size {size!r} is not a Kubernetes quantity (e.g. 20Gi)")
    elif size.startswith("-"):
        problems.append(f"workspace size {size!r} is negative")
    kubernetes = workspace.get("kubernetes")
    if kubernetes is None:
        problems.append("workspace has no kubernetes section: KFP creates no PVC for it")
        return problems
    patch = kubernetes.get("pvcSpecPatch") or {}
    unknown = sorted(set(patch) - set(PATCHABLE))
    if unknown:
        problems.append(f"unknown fields in PVC spec patch: {unknown} (allowed: {PATCHABLE})")
    modes = patch.get("accessModes")
    if not modes:
        problems.append(
            "workspace PVC spec must specify accessModes (KFP's manifests set no default)"
        )
    elif not isinstance(modes, list) or any(m not in ACCESS_MODES for m in modes):
        problems.append(f"workspace accessModes {modes!r}: each must be one of {ACCESS_MODES}")
    storage_class = patch.get("storageClassName")
    if storage_class == "":
        problems.append("workspace storageClassName must be omitted or a non-empty name")
    elif storage_class is None and kfp_version < (2, 17):
        problems.append(
            f"KFP {kfp_version[0]}.{kfp_version[1]} requires a workspace storageClassName "
            "(2.17 and later use the cluster's default)"
        )
    return problems


def parallel_workspace_problems(pipeline_spec: dict, platform: dict) -> list[str]:
    """snapcat's rule: a workspace no two nodes can mount at once, used by a loop whose
    iterations run in parallel, risks multi-attach errors."""
    workspace = workspace_pvc(platform) or {}
    modes = ((workspace.get("kubernetes") or {}).get("pvcSpecPatch") or {}).get("accessModes")
    if not workspace or (modes and "ReadWriteMany" in modes):
        return []
    problems = []
    dags = [pipeline_spec.get("root") or {}, *(pipeline_spec.get("components") or {}).values()]
    for component in dags:
        for task_name, task in ((component.get("dag") or {}).get("tasks") or {}).items():
            loop = task.get("parameterIterator") or task.get("artifactIterator")
            limit = (task.get("iteratorPolicy") or {}).get("parallelismLimit", 0)
            if loop is not None and limit != 1:
                problems.append(
                    f"loop {task_name!r} runs its iterations in parallel on a {modes} workspace: "
                    "pods on different nodes cannot attach it at once (use ReadWriteMany, or "
                    "parallelism 1)"
                )
    return problems


def deadlines(platform: dict) -> dict[str, int]:
    """Each executor's ``activeDeadlineSeconds``, as compiled."""
    executors = (
        ((platform.get("platforms") or {}).get("kubernetes") or {}).get("deploymentSpec") or {}
    ).get("executors") or {}
    return {
        name.removeprefix("exec-"): int(spec["activeDeadlineSeconds"])
        for name, spec in executors.items()
        if "activeDeadlineSeconds" in spec
    }


def problems(compiled: str | Path, *, kfp_version: tuple[int, int] = (2, 17)) -> list[str]:
    """Every problem :func:`workspace_problems` and :func:`parallel_workspace_problems` find in
    a compiled pipeline file."""
    docs = [d for d in yaml.safe_load_all(Path(compiled).read_text("utf-8")) if d]
    spec = next((d for d in docs if "pipelineInfo" in d), {})
    platform = next((d for d in docs if "platforms" in d), {})
    return workspace_problems(platform, kfp_version=kfp_version) + parallel_workspace_problems(
        spec, platform
    )
