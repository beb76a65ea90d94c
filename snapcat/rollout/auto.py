"""A canary that decides for itself: :func:`canary`, then :func:`~snapcat.rollout.analysis.analyze`
until it says promote or rollback, then that action.

The versions to compare are given (the pipeline knows its model's version) or found in
Prometheus: the newest version serving is the canary, the busiest other one stable.
When the analysis is still undecided at ``timeout``, the canary is rolled back (``undecided=
"rollback"``: a model without evidence does not get all traffic) or left as it is (``"keep"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from snapcat.rollout.actions import canary, promote, rollback
from snapcat.rollout.analysis import (
    DEFAULT_WINDOW,
    PROMOTE,
    ROLLBACK,
    Decision,
    Thresholds,
    analyze,
)
from snapcat.rollout.apply import RolloutResult
from snapcat.rollout.cluster import Cluster
from snapcat.rollout.evidence import check_window
from snapcat.rollout.isvc import RolloutError
from snapcat.rollout.prometheus import Prometheus

log = logging.getLogger(__name__)

UNDECIDED_CHOICES = ("rollback", "keep")


@dataclass(frozen=True)
class AutoAnalysis:
    """How an automatic canary is judged (see :mod:`snapcat.rollout.analysis`)."""

    prometheus_url: str
    window: str = DEFAULT_WINDOW
    thresholds: Thresholds = field(default_factory=Thresholds)
    timeout: float = 3600.0  # seconds of analysis before the canary counts as undecided
    interval: float = 60.0
    undecided: str = "rollback"
    #: model_version of the canary / stable model; None: found in Prometheus (the newest version
    #: serving is the canary, the busiest other one stable)
    canary_version: str | None = None
    stable_version: str | None = None

    def __post_init__(self) -> None:
        check_window(self.window)
        if self.undecided not in UNDECIDED_CHOICES:
            raise RolloutError(
                f"undecided must be one of {UNDECIDED_CHOICES}, not {self.undecided!r}"
            )
        if self.timeout <= 0 or self.interval <= 0:
            raise RolloutError("the analysis timeout and interval must be positive")


@dataclass
class AutoResult:
    canary: RolloutResult
    decision: Decision | None = None
    final: RolloutResult | None = None  # the promote or rollback that followed, if any


def auto_canary(
    name: str,
    namespace: str,
    model_uri: str,
    percent: int,
    analysis: AutoAnalysis,
    *,
    cluster: Cluster | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    prometheus: Prometheus | None = None,
    **canary_options,
) -> AutoResult:
    """Starts the canary, judges it on live traffic, then promotes or rolls it back."""
    cluster = cluster if cluster is not None else Cluster.connect(kubeconfig, context)
    started = canary(name, namespace, model_uri, percent, cluster=cluster, **canary_options)
    result = AutoResult(started)
    waiting = {k: v for k, v in canary_options.items() if k in ("timeout", "poll")}
    try:
        decision = analyze(
            prometheus or Prometheus(analysis.prometheus_url),
            canary_version=analysis.canary_version,
            stable_version=analysis.stable_version,
            window=analysis.window,
            thresholds=analysis.thresholds,
            wait_timeout=analysis.timeout,
            interval=analysis.interval,
        )
    except RolloutError as exc:
        # Prometheus unreachable, too slow or answering garbage: nothing can decide, and a
        # canary must not keep its share of traffic on no evidence (unless asked to keep it).
        if analysis.undecided != "rollback":
            raise RolloutError(f"the analysis failed ({exc}); the canary was kept") from exc
        rollback(name, namespace, cluster=cluster, **waiting)
        raise RolloutError(f"the analysis failed ({exc}); the canary was rolled back") from exc
    result.decision = decision
    log.info("analysis of %s: %s", model_uri, decision.explain())
    if decision.decision == PROMOTE:
        result.final = promote(name, namespace, model_uri=model_uri, cluster=cluster, **waiting)
    elif decision.decision == ROLLBACK or analysis.undecided == "rollback":
        result.final = rollback(name, namespace, cluster=cluster, **waiting)
    return result
