"""What an InferenceService's status says about a rollout: readiness, and a summary as data/text."""

from __future__ import annotations

from typing import Any

from snapcat.rollout.isvc import (
    COMPONENTS,
    RolloutError,
    deployment_mode,
    model_uri_of,
)


def _conditions(isvc: dict) -> dict[str, dict]:
    return {c.get("type"): c for c in (isvc.get("status") or {}).get("conditions") or []}


def is_ready(isvc: dict) -> bool:
    return str(_conditions(isvc).get("Ready", {}).get("status", "")).lower() == "true"


def not_ready_reason(isvc: dict) -> str:
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
        "deploymentMode": deployment_mode(isvc),
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
    """The predictor's storageUri; None for the transformer, which has no model of its own."""
    if component != "predictor":
        return None
    try:
        return model_uri_of(isvc)
    except RolloutError:  # not a predictor this module can roll out
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
        if comp["model_uri"]:
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
