"""Waiting for the controller: the conditions each action waits for, and the polling loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from snapcat.rollout.isvc import RolloutError, RolloutTimeout
from snapcat.rollout.status import is_ready, not_ready_reason

if TYPE_CHECKING:
    from snapcat.rollout.cluster import Cluster

log = logging.getLogger(__name__)

Check = Callable[[dict], "tuple[bool, str]"]


def _observed(isvc: dict, generation: int | None) -> tuple[bool, str]:
    observed = (isvc.get("status") or {}).get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False, f"the controller has not processed generation {generation} yet"
    return True, ""


def _latest_share(comp_status: dict) -> int:
    return sum(
        t.get("percent", 0) for t in comp_status.get("traffic") or [] if t.get("latestRevision")
    )


ComponentCheck = Callable[[str, dict], "str | None"]


def _each_component(
    generation: int | None,
    components: tuple[str, ...],
    problem: ComponentCheck,
    *,
    needs_ready: bool = True,
    done: str = "ready",
) -> Check:
    """The prelude every wait shares (the controller has seen ``generation``; the Ready
    condition, unless ``needs_ready`` is False), then ``problem(name, component_status)`` per
    component: the first text it returns is why the wait goes on."""

    def check(isvc: dict) -> tuple[bool, str]:
        ok, why = _observed(isvc, generation)
        if not ok:
            return ok, why
        if needs_ready and not is_ready(isvc):
            return False, not_ready_reason(isvc)
        statuses = (isvc.get("status") or {}).get("components") or {}
        for name in components:
            found = problem(name, statuses.get(name) or {})
            if found:
                return False, found
        return True, done

    return check


def canary_ready(
    generation: int | None,
    percent: int,
    components: tuple[str, ...],
    replaced: dict[str, str | None] | None = None,
) -> Check:
    """Ready condition true, each component's newest revision ready and given ``percent``%.

    ``replaced`` maps a component to the revision that was its newest before the patch: when the
    patch changed the model, a newer one must be the ready one (a Ready condition copied from the
    old revision before Knative has reconciled must not count).
    """
    replaced = replaced or {}

    def problem(name: str, comp: dict) -> str | None:
        created, ready_rev = comp.get("latestCreatedRevision"), comp.get("latestReadyRevision")
        if replaced.get(name) and ready_rev == replaced[name]:
            return f"{name}: no new revision is ready yet"
        if created and created != ready_rev:
            return f"{name} revision {created} is not ready yet"
        rolled = comp.get("latestRolledoutRevision")
        if rolled and rolled != ready_rev and _latest_share(comp) != percent:
            return f"{name} traffic is not split {100 - percent}/{percent} yet"
        return None

    return _each_component(generation, components, problem)


def all_traffic_to_latest(generation: int | None, components: tuple[str, ...]) -> Check:
    def problem(name: str, comp: dict) -> str | None:
        if comp.get("traffic") and _latest_share(comp) != 100:
            return f"{name} does not send all traffic to its latest revision yet"
        return None

    return _each_component(generation, components, problem)


def traffic_pinned_to_previous(generation: int | None, components: tuple[str, ...]) -> Check:
    """No traffic on the latest revisions. Readiness is not required: the rejected revision may be
    the very reason the InferenceService is not ready."""

    def problem(name: str, comp: dict) -> str | None:
        if not comp.get("traffic") or _latest_share(comp) != 0:
            return f"{name} traffic is not pinned to its previous revision yet"
        return None

    return _each_component(generation, components, problem, needs_ready=False, done="pinned")


def failed_load(isvc: dict, generation: int | None) -> str | None:
    """A terminal failure KServe reports for the new model (no point waiting for the timeout)."""
    if not _observed(isvc, generation)[0]:
        return None
    model_status = (isvc.get("status") or {}).get("modelStatus") or {}
    if model_status.get("transitionStatus") in ("BlockedByFailedLoad", "InvalidSpec"):
        return f"model status {model_status['transitionStatus']}: {not_ready_reason(isvc)}"
    return None


def wait_for(
    cluster: Cluster,
    name: str,
    namespace: str,
    check: Check,
    *,
    timeout: float,
    poll: float,
    what: str,
    failed: Callable[[dict], str | None] | None = None,
) -> dict:
    """Polls the InferenceService until ``check`` passes; RolloutTimeout after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_logged = None
    while True:
        isvc = cluster.get(name, namespace)
        ok, reason = check(isvc)
        if ok:
            return isvc
        failure = failed(isvc) if failed else None
        if failure:
            raise RolloutError(f"{what} failed: {failure}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RolloutTimeout(f"{what} did not happen within {timeout:g}s: {reason}")
        if reason != last_logged:
            log.info("waiting: %s", reason)
            last_logged = reason
        time.sleep(min(poll, remaining))
