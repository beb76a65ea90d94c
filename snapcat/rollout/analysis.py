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

Until the canary has answered ``min_requests`` requests (and stable as many), the answer is
*wait*. Any failed check means *rollback*; all passing means *promote*.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from snapcat import confident_promise
from snapcat.rollout.evidence import VersionEvidence, gather, versions_seen
from snapcat.rollout.isvc import RolloutError
from snapcat.rollout.prometheus import Prometheus

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"


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

    def to_dict(self) -> dict:
        return {
            "decision": self.decision,
            "window": self.window,
            "reasons": self.reasons,
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
    decision = Decision(WAIT, canary, stable, window, _checks(canary, stable, thresholds))
    short = [
        f"{who} version {e.version} answered {e.requests:.0f} of the {thresholds.min_requests} "
        "requests needed"
        for who, e in (("the canary", canary), ("the stable", stable))
        if e.requests < thresholds.min_requests
    ]
    failed = [c for c in decision.checks if c.passed is False]
    if short:
        decision.reasons = short
    elif failed:
        decision.decision = ROLLBACK
        decision.reasons = [f"{c.name} failed: {c.detail}" for c in failed]
    else:
        decision.decision = PROMOTE
        passed = [c.name for c in decision.checks if c.passed]
        decision.reasons = [f"every check with data passed ({', '.join(passed) or 'none'})"]
    return decision


def find_versions(prometheus: Prometheus, window: str) -> tuple[str, str]:
    """(canary, stable) from the versions that served in the window: the newest version (model
    versions are increasing integers) is the canary, the busiest other one is stable."""
    placeholders = ("", "other", "unknown")  # bounded-label overflow, no model loaded
    seen = {v: n for v, n in versions_seen(prometheus, window).items()
            if v not in placeholders and n > 0}  # fmt: skip
    if len(seen) < 2:
        raise RolloutError(
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
    window: str = "10m",
    thresholds: Thresholds | None = None,
    wait_timeout: float = 0.0,
    interval: float = 30.0,
    sleep=time.sleep,
) -> Decision:
    """Decides now; with ``wait_timeout`` > 0, asks again every ``interval`` s while the answer is
    *wait*, until it is not or the time is up (then the last answer, *wait*, is returned)."""
    thresholds = thresholds or Thresholds()
    deadline = time.monotonic() + max(wait_timeout, 0.0)
    while True:
        if canary_version and stable_version:
            canary, stable = canary_version, stable_version
        else:
            try:
                canary, stable = find_versions(prometheus, window)
            except RolloutError:
                if deadline - time.monotonic() <= 0:
                    raise
                sleep(min(interval, max(deadline - time.monotonic(), 0)))
                continue
            canary = canary_version or canary
            stable = stable_version or stable
        if canary == stable:
            raise RolloutError(f"canary and stable are the same version ({canary})")
        evidence = gather(prometheus, [canary, stable], window)
        decision = decide(evidence[canary], evidence[stable], window, thresholds)
        remaining = deadline - time.monotonic()
        if decision.decision != WAIT or remaining <= 0:
            return decision
        sleep(min(interval, remaining))
