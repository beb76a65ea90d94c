"""Judging a canary on live traffic: promote, roll back, or wait for more evidence.

The canary is compared with the stable version over the same window (same hour, same photos'
mix), never with fixed targets: the question is "is the new model worse than the one it replaces?".
Checks, each skipped (and said so) when there is nothing to compare yet:

- error rate: server-side failures per request, canary minus stable;
- p95 latency: canary over stable;
- predicted categories: Jensen-Shannon divergence (base 2, 0 = same mix, 1 = disjoint);
- top-1 scores: the largest gap between the two versions' cumulative score distributions
  (a Kolmogorov-Smirnov distance over the histogram's buckets);
- sellers' agreement (only once enough feedback arrived for both): top-1 and top-3 agreement,
  stable minus canary.

The decision, in this order (:func:`decide`):

1. *wait* until each version has *served* ``min_requests`` requests (answered, failed or shed;
   bad photos and requests the transformer refused on its own do not count);
2. *wait* while any evidence is unusable: a NaN, infinite or negative count, a p95 latency that
   is not positive, a series Prometheus sent twice (:mod:`snapcat.rollout.evidence`);
3. *rollback* when any check that ran failed;
4. *wait* while a required check (:data:`REQUIRED_CHECKS`: error rate, p95 latency, category
   mix, top-1 scores) could not run for lack of data; sellers' agreement is optional, since
   feedback can lag the traffic by days;
5. *promote* only then: every required check ran, on usable data from enough requests on both
   sides, and passed.

When the analysis waits (``wait_timeout``) and the evidence is still unusable or incomplete at the
deadline, the answer becomes *rollback*, naming what was missing: a model does not get all the
traffic on evidence that never arrived. Too little traffic at the deadline stays *wait* (the
caller's ``undecided`` policy decides). The whole analysis, queries included, ends by its
deadline: ``wait_timeout``, or one query timeout if that is longer (so a first round can finish).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from snapcat.feedback import promise as confident_promise
from snapcat.rollout.evidence import VersionEvidence, gather, versions_seen
from snapcat.rollout.isvc import RolloutError
from snapcat.rollout.prometheus import Prometheus

#: How far back the canary analysis looks (a PromQL range): the CLI, the automatic canary and
#: the pipeline's run parameter read it from here.
DEFAULT_WINDOW = "10m"

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"
#: Checks that must have run (and passed) before a promotion; any other check (sellers'
#: agreement, or one added later) decides only when it has data.
REQUIRED_CHECKS = ("error rate", "p95 latency", "category mix", "top-1 scores")


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 200
    max_error_rate_increase: float = 0.02
    max_latency_ratio: float = 1.5
    max_category_divergence: float = 0.1
    max_score_shift: float = 0.2
    min_feedback: int = 50
    max_agreement_drop: float = 0.05

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or value < 0 or math.isnan(value):
                raise RolloutError(f"threshold {name} must be a number >= 0, not {value!r}")


@dataclass
class Check:
    name: str
    passed: bool | None  # None: skipped (nothing to compare)
    value: float | None
    limit: float
    detail: str


@dataclass
class Decision:
    decision: str
    canary: VersionEvidence
    stable: VersionEvidence
    window: str
    checks: list[Check] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    #: evidence the decision still lacks (unusable samples, required checks with no data)
    missing: list[str] = field(default_factory=list)
    #: versions that have not served enough requests yet (then nothing else is judged)
    short: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "window": self.window,
            "reasons": self.reasons,
            "missing": self.missing,
            "checks": [asdict(c) for c in self.checks],
            "canary": self.canary.to_dict(),
            "stable": self.stable.to_dict(),
        }

    def explain(self) -> str:
        lines = [
            f"decision: {self.decision.upper()} (canary version {self.canary.version}, stable "
            f"version {self.stable.version}, last {self.window})"
        ]
        lines += [f"  because {reason}" for reason in self.reasons]
        for check in self.checks:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[check.passed]
            lines.append(f"  [{mark}] {check.name}: {check.detail}")
        return "\n".join(lines)


def jensen_shannon(p: dict[str, float], q: dict[str, float]) -> float:
    """Base-2 Jensen-Shannon divergence of two count vectors (0 = same mix, 1 = disjoint)."""
    keys = sorted(set(p) | set(q))
    tp, tq = sum(p.values()), sum(q.values())
    a = [p.get(k, 0.0) / tp for k in keys]
    b = [q.get(k, 0.0) / tq for k in keys]
    mid = [(x + y) / 2 for x, y in zip(a, b, strict=True)]

    def kl(x: list[float]) -> float:
        return sum(xi * math.log2(xi / mi) for xi, mi in zip(x, mid, strict=True) if xi > 0)

    return max(0.0, (kl(a) + kl(b)) / 2)


def score_shift(canary: dict[float, float], stable: dict[float, float]) -> float | None:
    """Largest gap between two cumulative histograms (by bucket upper bound), as fractions."""
    total_c, total_s = canary.get(math.inf), stable.get(math.inf)
    if not total_c or not total_s:
        return None
    bounds = sorted(set(canary) & set(stable))
    for buckets in (canary, stable):
        counts = [buckets[b] for b in sorted(buckets)]
        if any(b > a * 1.01 + 1 for a, b in zip(counts[1:], counts, strict=False)):
            return None  # not cumulative: not a histogram Prometheus could have produced
    return max(abs(canary[b] / total_c - stable[b] / total_s) for b in bounds)


def _checks(c: VersionEvidence, s: VersionEvidence, t: Thresholds) -> list[Check]:
    checks = []
    if c.error_rate is None or s.error_rate is None:
        checks.append(Check("error rate", None, None, t.max_error_rate_increase, "no answers yet"))
    else:
        diff = c.error_rate - s.error_rate
        checks.append(Check(
            "error rate", diff <= t.max_error_rate_increase, round(diff, 6),
            t.max_error_rate_increase,
            f"canary {c.error_rate:.2%} vs stable {s.error_rate:.2%} of requests failed "
            f"(+{max(diff, 0):.2%}, limit +{t.max_error_rate_increase:.2%})",
        ))  # fmt: skip
    if not c.p95_latency or not s.p95_latency:
        checks.append(Check("p95 latency", None, None, t.max_latency_ratio, "no latency data"))
    else:
        ratio = c.p95_latency / s.p95_latency
        checks.append(Check(
            "p95 latency", ratio <= t.max_latency_ratio, round(ratio, 4), t.max_latency_ratio,
            f"canary {c.p95_latency * 1000:.0f} ms vs stable {s.p95_latency * 1000:.0f} ms "
            f"(x{ratio:.2f}, limit x{t.max_latency_ratio:g})",
        ))  # fmt: skip
    if not sum(c.categories.values()) or not sum(s.categories.values()):
        checks.append(Check(
            "category mix", None, None, t.max_category_divergence, "no predicted categories"
        ))  # fmt: skip
    else:
        jsd = jensen_shannon(c.categories, s.categories)
        checks.append(Check(
            "category mix", jsd <= t.max_category_divergence, round(jsd, 6),
            t.max_category_divergence,
            f"Jensen-Shannon divergence {jsd:.3f} of the predicted categories "
            f"(limit {t.max_category_divergence:g})",
        ))  # fmt: skip
    shift = score_shift(c.score_buckets, s.score_buckets)
    if shift is None:
        checks.append(Check("top-1 scores", None, None, t.max_score_shift, "no score histogram"))
    else:
        checks.append(Check(
            "top-1 scores", shift <= t.max_score_shift, round(shift, 6), t.max_score_shift,
            f"largest gap between the top-1 score distributions {shift:.3f} "
            f"(limit {t.max_score_shift:g})",
        ))  # fmt: skip
    checks += _agreement_checks(c, s, t)
    # issue 22: the canary's confident answers keep their top-3 promise (own module, own rule)
    checks.append(Check(**confident_promise.rollout_check(c)))
    return checks


def _agreement_checks(c: VersionEvidence, s: VersionEvidence, t: Thresholds) -> list[Check]:
    if min(c.feedback, s.feedback) < max(t.min_feedback, 1):
        detail = (
            f"{c.feedback:.0f} canary / {s.feedback:.0f} stable sellers' answers, "
            f"{t.min_feedback} each needed"
        )
        return [Check("sellers' agreement", None, None, t.max_agreement_drop, detail)]
    checks = []
    for k, agreed_c, agreed_s in (
        (1, c.top1_agreements, s.top1_agreements),
        (3, c.top3_agreements, s.top3_agreements),
    ):
        rate_c, rate_s = agreed_c / c.feedback, agreed_s / s.feedback
        drop = rate_s - rate_c
        checks.append(Check(
            f"top-{k} agreement", drop <= t.max_agreement_drop, round(drop, 6),
            t.max_agreement_drop,
            f"sellers kept a top-{k} suggestion {rate_c:.1%} (canary) vs {rate_s:.1%} (stable) "
            f"of {c.feedback:.0f} / {s.feedback:.0f} times (limit -{t.max_agreement_drop:.1%})",
        ))  # fmt: skip
    return checks


def decide(
    canary: VersionEvidence, stable: VersionEvidence, window: str, thresholds: Thresholds
) -> Decision:
    """See the module docstring for the order; ``missing`` names what a promotion still lacks."""
    decision = Decision(WAIT, canary, stable, window, _checks(canary, stable, thresholds))
    sides = (("the canary", canary), ("the stable", stable))
    short = decision.short = [
        f"{who} version {e.version} served {e.served:.0f} of the {thresholds.min_requests} "
        "requests needed"
        for who, e in sides
        if e.served < max(thresholds.min_requests, 1)
    ]
    decision.missing = [f"{who} version {e.version}: {p}" for who, e in sides for p in e.problems]
    decision.missing += [
        f"{c.name}: {c.detail}"
        for c in decision.checks
        if c.passed is None and c.name in REQUIRED_CHECKS
    ]
    failed = [c for c in decision.checks if c.passed is False]
    if short:
        decision.reasons = short
    elif canary.problems or stable.problems:
        decision.reasons = ["unusable evidence: " + m for m in decision.missing]
    elif failed:
        decision.decision = ROLLBACK
        decision.reasons = [f"{c.name} failed: {c.detail}" for c in failed]
    elif decision.missing:
        decision.reasons = ["missing evidence: " + m for m in decision.missing]
    else:
        decision.decision = PROMOTE
        passed = [c.name for c in decision.checks if c.passed]
        decision.reasons = [f"every required check ran and passed ({', '.join(passed)})"]
    return decision


class VersionsNotFound(RolloutError):
    """Fewer than two versions served in the window (yet)."""


def find_versions(
    prometheus: Prometheus, window: str, deadline: float | None = None
) -> tuple[str, str]:
    """(canary, stable) from the versions that served in the window: the newest version (model
    versions are increasing integers) is the canary, the busiest other one is stable."""
    placeholders = ("", "other", "unknown")  # bounded-label overflow, no model loaded
    seen = {v: n for v, n in versions_seen(prometheus, window, deadline=deadline).items()
            if v not in placeholders and n > 0}  # fmt: skip
    if len(seen) < 2:
        raise VersionsNotFound(
            f"Prometheus saw {len(seen)} model version(s) serving in the last {window} "
            f"({', '.join(seen) or 'none'}); pass --canary-version and --stable-version"
        )
    canary = max(seen, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))
    stable = max((v for v in seen if v != canary), key=lambda v: seen[v])
    return canary, stable


def analyze(
    prometheus: Prometheus,
    *,
    canary_version: str | None = None,
    stable_version: str | None = None,
    window: str = DEFAULT_WINDOW,
    thresholds: Thresholds | None = None,
    wait_timeout: float = 0.0,
    interval: float = 30.0,
    sleep=time.sleep,
) -> Decision:
    """Decides now; with ``wait_timeout`` > 0, asks again every ``interval`` s while the answer is
    *wait*, until it is not or the time is up (then *rollback* when the evidence is unusable or
    incomplete, else the last answer, *wait*). Every query ends by the analysis's deadline,
    ``max(wait_timeout, prometheus.timeout)`` from now (RolloutError past it, unless an earlier
    round already decided *wait*)."""
    thresholds = thresholds or Thresholds()
    started = time.monotonic()
    deadline = started + wait_timeout if wait_timeout > 0 else None
    # Queries end by the wait deadline, but a first round always has one query timeout.
    query_deadline = started + max(wait_timeout, prometheus.timeout)
    last: Decision | None = None
    while True:
        try:
            decision = _once(prometheus, canary_version, stable_version, window, thresholds,
                             query_deadline)  # fmt: skip
        except RolloutError as exc:
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if last is not None and out_of_time:
                return _at_deadline(last, wait_timeout)  # the last round ran into the deadline
            if deadline is None or out_of_time or not isinstance(exc, VersionsNotFound):
                raise
            decision = None  # the versions are not serving yet: ask again
        if decision is not None and decision.decision != WAIT:
            return decision
        last = decision or last
        remaining = (deadline or started) - time.monotonic()
        if remaining <= 0:
            if last is None:
                raise RolloutError(f"no analysis finished within {wait_timeout:g} s")
            return _at_deadline(last, wait_timeout)
        sleep(min(interval, remaining))


def _once(
    prometheus: Prometheus,
    canary_version: str | None,
    stable_version: str | None,
    window: str,
    thresholds: Thresholds,
    deadline: float,
) -> Decision:
    """One round: find the versions (unless given), gather their evidence, decide."""
    canary, stable = canary_version, stable_version
    if not (canary and stable):
        found_canary, found_stable = find_versions(prometheus, window, deadline)
        canary, stable = canary or found_canary, stable or found_stable
    if canary == stable:
        raise RolloutError(f"canary and stable are the same version ({canary})")
    evidence = gather(prometheus, [canary, stable], window, deadline=deadline)
    return decide(evidence[canary], evidence[stable], window, thresholds)


def _at_deadline(decision: Decision, wait_timeout: float) -> Decision:
    """A waiting analysis that ran out of time on unusable or incomplete evidence rolls back."""
    if wait_timeout > 0 and not decision.short and decision.missing:
        decision.decision = ROLLBACK
        decision.reasons = [
            f"after {wait_timeout:g} s the evidence is still unusable or incomplete: " + m
            for m in decision.missing
        ]
    return decision
