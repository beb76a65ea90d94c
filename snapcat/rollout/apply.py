"""The skeleton every rollout write runs: :class:`Plan` says what to send and what to wait for.

:func:`apply` connects (unless a dry run), reads the live object, builds the request, stops there
on a dry run, checks the live state, sends, waits, and summarizes. Actions differ only in their plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from snapcat.rollout.bodies import Request, offline_yaml
from snapcat.rollout.cluster import Cluster
from snapcat.rollout.isvc import JSON, MERGE_PATCH, RolloutError, isvc_path
from snapcat.rollout.render import render_inferenceservice
from snapcat.rollout.status import summarize
from snapcat.rollout.waiting import Check, wait_for

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
#: How a rollout command does without a cluster, for the error when none is configured.
NO_CLUSTER_NEEDED = "--dry-run needs none"
DEFAULT_POLL = 5.0


@dataclass
class RolloutResult:
    """What an action did. ``request`` is the write it sent (or, on a dry run, would send; a status
    read has only its GET); ``status`` is :func:`summarize` of the final object (None on a dry run)."""

    action: str
    name: str
    namespace: str
    request: Request
    dry_run: bool = False
    status: dict | None = None
    messages: list[str] = field(default_factory=list)
    sent: bool = False  # whether ``request`` went to the API server (False: dry run or no-op)
    #: A dry run built from the shipped object, the live one unread: its YAML says so.
    assumed_live: bool = False

    @property
    def yaml(self) -> str:
        if self.assumed_live and self.request.body is not None:
            return offline_yaml(self.request, self.action)
        return self.request.to_yaml()


@dataclass(frozen=True)
class Options:
    """How an action reaches the cluster and waits, the same for canary, promote and rollback
    (which take these as keyword arguments).

    ``dry_run``: build the request only, contact nothing; ``current``: the live object to work
    from instead of reading it; ``cluster`` (or ``kubeconfig`` / ``context`` to connect with);
    ``timeout`` / ``poll``: seconds to wait for the result and between checks; ``wait=False``:
    send and return."""

    dry_run: bool = False
    current: dict | None = None
    cluster: Cluster | None = None
    kubeconfig: str | None = None
    context: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    poll: float = DEFAULT_POLL
    wait: bool = True

    def connect(self) -> Cluster:
        return (
            self.cluster
            if self.cluster is not None
            else Cluster.connect(self.kubeconfig, self.context, offline=NO_CLUSTER_NEEDED)
        )


@dataclass
class Plan:
    """One write: the body, the live-state check before sending it, and what to wait for after."""

    method: str  # PATCH (JSON merge patch) or PUT
    body: dict
    what: str  # for messages: "canary of gs://...", "rollback"
    until: Callable[[int | None], Check]  # given the generation the write produced
    #: Checks the live object before sending (not on a dry run); may raise, or add a message and
    #: return False when there is nothing to send.
    vet: Callable[[RolloutResult], bool] = lambda result: True
    failed: Callable[[dict, int | None], str | None] | None = None
    #: Called when waiting fails, with the object as sent; returns the error to raise.
    recover: Callable[[Cluster, dict, RolloutError], RolloutError] | None = None


def apply(
    action: str,
    name: str,
    namespace: str,
    plan_for: Callable[[dict], Plan],
    options: Options,
    *,
    offline_uri: str | None = None,
) -> RolloutResult:
    dry_run = options.dry_run
    cluster = None if dry_run else options.connect()
    live = load_current(cluster, name, namespace, options.current, offline_uri)
    plan = plan_for(live)
    content_type = MERGE_PATCH if plan.method == "PATCH" else JSON
    request = Request(plan.method, isvc_path(name, namespace), plan.body, content_type)
    result = RolloutResult(action, name, namespace, request, dry_run=dry_run)
    if dry_run:
        result.assumed_live = options.current is None
        return result
    assert cluster is not None
    if not plan.vet(result):
        result.status = summarize(live)
        return result
    log.info("%s: sending %s %s", action, plan.method, request.path)
    send = cluster.patch if plan.method == "PATCH" else cluster.replace
    sent = send(name, namespace, plan.body)
    result.sent = True
    if not options.wait:
        result.status = summarize(sent)
        return result
    generation = (sent.get("metadata") or {}).get("generation")
    failed = plan.failed
    try:
        final = wait_for(
            cluster,
            name,
            namespace,
            plan.until(generation),
            timeout=options.timeout,
            poll=options.poll,
            what=plan.what,
            failed=(lambda isvc: failed(isvc, generation)) if failed else None,
        )
    except RolloutError as exc:
        if plan.recover is None:
            raise
        raise plan.recover(cluster, sent, exc) from exc
    result.status = summarize(final)
    return result


def load_current(
    cluster: Cluster | None, name: str, namespace: str, current: dict | None, model_uri: str | None
) -> dict:
    if current is not None:
        return current
    if cluster is not None:
        return cluster.get(name, namespace)
    # Offline dry run: assume the object the manifests deploy.
    return render_inferenceservice(name, namespace, model_uri or "gs://CURRENT-MODEL")
