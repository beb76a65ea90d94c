"""The pipeline's deploy step: a pipeline artifact URI becomes a KServe storageUri, then a canary."""

from __future__ import annotations

from typing import Any

from snapcat.rollout.actions import canary
from snapcat.rollout.apply import DEFAULT_TIMEOUT
from snapcat.rollout.auto import AutoAnalysis, auto_canary
from snapcat.rollout.isvc import KFP_MINIO_SCHEME
from snapcat.rollout.status import format_status


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
    auto: AutoAnalysis | None = None,
    **connection: Any,
) -> str:
    """The pipeline's deploy step: :func:`canary` (with ``auto``, judged on live traffic and then
    promoted or rolled back), returning the request as YAML (what was sent, or would be on a dry
    run), followed by the resulting status and the analysis as YAML comments."""
    if auto is not None and not dry_run:
        outcome = auto_canary(
            name, namespace, model_uri, percent, auto,
            timeout=timeout, check_classes=check_classes, **connection,
        )  # fmt: skip
        result, decision = outcome.final or outcome.canary, outcome.decision
    else:
        result = canary(
            name, namespace, model_uri, percent,
            dry_run=dry_run, timeout=timeout, check_classes=check_classes, **connection,
        )  # fmt: skip
        decision = None
    text = result.yaml
    comments = []
    if result.status is not None:
        comments += format_status(result.status).splitlines()
    if decision is not None:
        comments += decision.explain().splitlines()
    return text + "".join(f"# {line}\n" for line in comments)
