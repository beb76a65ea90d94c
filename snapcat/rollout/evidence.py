"""What Prometheus knows about one model version over a window: the evidence a canary is judged on.

Nine instant queries per analysis, each for both versions at once, over the transformer's and the
feedback sink's per-version series (:mod:`snapcat.contract.metric_names`).

Evidence is only as good as its worst sample: a count that is NaN, infinite or negative, a p95
latency that is not a positive number, or the same series twice in one answer is not evidence of
anything, and is recorded in :attr:`VersionEvidence.problems` (the analysis then waits, and never
promotes on it) instead of being summed into a figure that looks plausible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from snapcat.contract import metric_names as m
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
    #: why some of this evidence is unusable (garbage samples, duplicated series), in words
    problems: list[str] = field(default_factory=list)
    #: answers flagged confident with sellers' feedback, and their top-3 agreements
    confident_feedback: float = 0.0
    confident_top3_agreements: float = 0.0

    @property
    def requests(self) -> float:
        return sum(self.outcomes.values())

    @property
    def served(self) -> float:
        """Requests the model was asked to answer: answered, failed or shed for load. Bad
        photos, and requests the transformer refused on its own (unknown versions, unsupported
        routes), say nothing about the model and do not count."""
        return sum(self.outcomes.get(o, 0.0) for o in (m.OK, m.PREDICTOR_ERROR, m.OVERLOAD))

    @property
    def server_errors(self) -> float:
        return self.outcomes.get(m.PREDICTOR_ERROR, 0.0) + self.outcomes.get(m.OVERLOAD, 0.0)

    @property
    def error_rate(self) -> float | None:
        """Server-side failures per request the model was asked to answer (bad photos excluded:
        they say nothing about the model)."""
        return self.server_errors / self.served if self.served > 0 else None

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "requests": round(self.requests, 3),
            "served": round(self.served, 3),
            "outcomes": {k: round(v, 3) for k, v in sorted(self.outcomes.items())},
            "error_rate": _round(self.error_rate),
            "p95_latency_seconds": _round(self.p95_latency),
            "categories": {k: round(v, 3) for k, v in sorted(self.categories.items())},
            "feedback": round(self.feedback, 3),
            "top1_agreements": round(self.top1_agreements, 3),
            "top3_agreements": round(self.top3_agreements, 3),
            "problems": list(self.problems),
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


def gather(
    prometheus: Prometheus, versions: list[str], window: str, *, deadline: float | None = None
) -> dict[str, VersionEvidence]:
    """Evidence for each of ``versions`` (an entry for every one, empty when it had no traffic);
    every query answered by ``deadline`` (``time.monotonic()``) or a RolloutError."""
    evidence = {version: VersionEvidence(version) for version in versions}
    q = queries(versions, window)

    def each(name: str, *keys: str):
        """The usable samples of one query, per version; garbage goes to that version's
        problems (a sample with no known version is ignored: the selector asked only for ours)."""
        seen: set[tuple] = set()
        for sample in prometheus.query(q[name], deadline=deadline):
            found = evidence.get(sample.labels.get(m.VERSION_LABEL, ""))
            if found is None:
                continue
            key = tuple(sample.labels.get(k, "") for k in keys)
            where = f"{name}{dict(zip(keys, key, strict=True)) if keys else ''}"
            if (found.version, *key) in seen:
                found.problems.append(f"{where}: the same series twice in one answer")
                continue
            seen.add((found.version, *key))
            if name == "p95" and math.isnan(sample.value):
                continue  # no requests in the window: no latency, said by the check
            if not math.isfinite(sample.value) or sample.value < 0:
                found.problems.append(f"{where}: {sample.value} is not a count")
                continue
            yield found, sample

    for found, s in each("outcomes", m.OUTCOME_LABEL):
        found.outcomes[s.labels.get(m.OUTCOME_LABEL, "")] = s.value
    for found, s in each("p95"):
        if s.value > 0:
            found.p95_latency = s.value
        else:
            found.problems.append(f"p95: a latency of {s.value} s is impossible")
    for found, s in each("categories", m.CATEGORY_LABEL):
        found.categories[s.labels.get(m.CATEGORY_LABEL, "")] = s.value
    for found, s in each("scores", "le"):
        try:
            found.score_buckets[float(s.labels.get("le", "inf"))] = s.value
        except ValueError:
            found.problems.append(f"scores: bucket bound {s.labels.get('le')!r} is no number")
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


def versions_seen(
    prometheus: Prometheus, window: str, *, deadline: float | None = None
) -> dict[str, float]:
    """Requests per model version over the window (to find the canary and the stable version)."""
    check_window(window)
    query = f"sum by ({m.VERSION_LABEL}) (increase({m.REQUESTS}[{window}]))"
    return {
        s.labels.get(m.VERSION_LABEL, ""): s.value
        for s in prometheus.query(query, deadline=deadline)
        if math.isfinite(s.value)
    }
