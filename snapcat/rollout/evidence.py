"""What Prometheus knows about one model version over a window: the evidence a canary is judged on.

Nine instant queries per analysis, each for both versions at once, over the transformer's and the
feedback sink's per-version series (:mod:`snapcat.live_metrics`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from snapcat import live_metrics as m
from snapcat.rollout.isvc import RolloutError
from snapcat.rollout.prometheus import Prometheus

_WINDOW = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")


@dataclass
class VersionEvidence:
    """Counts over the window for one ``model_version``."""

    version: str
    outcomes: dict[str, float] = field(default_factory=dict)
    p95_latency: float | None = None
    categories: dict[str, float] = field(default_factory=dict)
    #: cumulative top-1 score histogram: upper bound -> photos with a top-1 score <= it
    score_buckets: dict[float, float] = field(default_factory=dict)
    feedback: float = 0.0
    top1_agreements: float = 0.0
    top3_agreements: float = 0.0
    #: answers flagged confident with sellers' feedback, and their top-3 agreements
    confident_feedback: float = 0.0
    confident_top3_agreements: float = 0.0

    @property
    def requests(self) -> float:
        return sum(self.outcomes.values())

    @property
    def server_errors(self) -> float:
        return self.outcomes.get(m.PREDICTOR_ERROR, 0.0) + self.outcomes.get(m.OVERLOAD, 0.0)

    @property
    def error_rate(self) -> float | None:
        """Server-side failures per request the model was asked to answer (bad photos excluded:
        they say nothing about the model)."""
        served = self.requests - self.outcomes.get(m.CLIENT_ERROR, 0.0)
        return self.server_errors / served if served > 0 else None

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "requests": round(self.requests, 3),
            "outcomes": {k: round(v, 3) for k, v in sorted(self.outcomes.items())},
            "error_rate": _round(self.error_rate),
            "p95_latency_seconds": _round(self.p95_latency),
            "categories": {k: round(v, 3) for k, v in sorted(self.categories.items())},
            "feedback": round(self.feedback, 3),
            "top1_agreements": round(self.top1_agreements, 3),
            "top3_agreements": round(self.top3_agreements, 3),
            "confident_feedback": round(self.confident_feedback, 3),
            "confident_top3_agreements": round(self.confident_top3_agreements, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def check_window(window: str) -> str:
    if not _WINDOW.match(window):
        raise RolloutError(f"window {window!r} is not a Prometheus duration such as 30s, 10m, 1h")
    return window


def queries(versions: list[str], window: str) -> dict[str, str]:
    """The PromQL of each piece of evidence, for ``versions`` over ``window``."""
    check_window(window)
    selector = f'{{{m.VERSION_LABEL}=~"{"|".join(re.escape(v) for v in versions)}"}}'
    by = f"sum by ({m.VERSION_LABEL}"
    return {
        "outcomes": f"{by}, {m.OUTCOME_LABEL}) (increase({m.REQUESTS}{selector}[{window}]))",
        "p95": (
            f"histogram_quantile(0.95, {by}, le) (rate({m.LATENCY}_bucket{selector}[{window}])))"
        ),
        "categories": (
            f"{by}, {m.CATEGORY_LABEL}) (increase({m.PREDICTIONS}{selector}[{window}]))"
        ),
        "scores": f"{by}, le) (increase({m.TOP1_SCORE}_bucket{selector}[{window}]))",
        "feedback": f"{by}) (increase({m.FEEDBACK}{selector}[{window}]))",
        "top1": f"{by}) (increase({m.FEEDBACK_TOP1}{selector}[{window}]))",
        "top3": f"{by}) (increase({m.FEEDBACK_TOP3}{selector}[{window}]))",
        "confident": f"{by}) (increase({m.FEEDBACK_CONFIDENT}{selector}[{window}]))",
        "confident_top3": f"{by}) (increase({m.FEEDBACK_CONFIDENT_TOP3}{selector}[{window}]))",
    }


def gather(prometheus: Prometheus, versions: list[str], window: str) -> dict[str, VersionEvidence]:
    """Evidence for each of ``versions`` (an entry for every one, empty when it had no traffic)."""
    evidence = {version: VersionEvidence(version) for version in versions}
    q = queries(versions, window)

    def each(name: str):
        for sample in prometheus.query(q[name]):
            found = evidence.get(sample.labels.get(m.VERSION_LABEL, ""))
            if found is not None:
                yield found, sample

    for found, s in each("outcomes"):
        outcome = s.labels.get(m.OUTCOME_LABEL, "")
        found.outcomes[outcome] = found.outcomes.get(outcome, 0.0) + s.value
    for found, s in each("p95"):
        found.p95_latency = s.value
    for found, s in each("categories"):
        category = s.labels.get(m.CATEGORY_LABEL, "")
        found.categories[category] = found.categories.get(category, 0.0) + s.value
    for found, s in each("scores"):
        found.score_buckets[float(s.labels.get("le", "inf"))] = s.value
    for found, s in each("feedback"):
        found.feedback = s.value
    for found, s in each("top1"):
        found.top1_agreements = s.value
    for found, s in each("top3"):
        found.top3_agreements = s.value
    for found, s in each("confident"):
        found.confident_feedback = s.value
    for found, s in each("confident_top3"):
        found.confident_top3_agreements = s.value
    return evidence


def versions_seen(prometheus: Prometheus, window: str) -> dict[str, float]:
    """Requests per model version over the window (to find the canary and the stable version)."""
    check_window(window)
    query = f"sum by ({m.VERSION_LABEL}) (increase({m.REQUESTS}[{window}]))"
    return {s.labels.get(m.VERSION_LABEL, ""): s.value for s in prometheus.query(query)}
