"""Champion vs challenger on the same photos: paired differences and the gate that reads them.

Comparing a candidate's accuracy with a number stored when production was evaluated mixes model
quality with test-set drift, and says nothing about noise. Here both models answer the *same*
photos, so each photo gives a pair of outcomes (candidate right? production right?) and the
difference in accuracy is the share of photos only the candidate gets right minus the share only
production gets right. Its 95 % interval comes from a paired bootstrap over photos; McNemar's exact
test on the discordant photos is reported beside it for top-1 and top-3.

The bootstrap resamples photos, but since each photo's difference is -1, 0 or +1 a resample is
fully described by three counts: drawing them from a multinomial gives exactly the same
distribution as resampling indices, in constant memory whatever the number of photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snapcat.metrics import GateConfig, topk_indices


@dataclass(frozen=True)
class Outcomes:
    """Per photo, whether one model's top-1 and top-3 contain the true category."""

    top1: np.ndarray  # bool [N]
    top3: np.ndarray  # bool [N]
    predicted: list[str]  # top-1 slug per photo
    top3_scores: list[list[tuple[str, float]]]  # (slug, score) best first, per photo

    @classmethod
    def of(cls, true_slugs: list[str], probabilities: np.ndarray, classes: list[str]) -> Outcomes:
        top = topk_indices(probabilities, 3)
        named = [[classes[i] for i in row] for row in top]
        return cls(
            top1=np.array([t == row[0] for t, row in zip(true_slugs, named, strict=True)]),
            top3=np.array([t in row for t, row in zip(true_slugs, named, strict=True)]),
            predicted=[row[0] for row in named],
            top3_scores=[
                [(classes[i], float(p[i])) for i in row]
                for row, p in zip(top, probabilities, strict=True)
            ],
        )


def mcnemar_p(candidate_only: int, baseline_only: int) -> float:
    """Exact two-sided McNemar test: under "equally good", each discordant photo is a fair coin."""
    n = candidate_only + baseline_only
    if n == 0:
        return 1.0
    k = min(candidate_only, baseline_only)
    log_half_n = n * math.log(0.5)
    tail = sum(
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
        for i in range(k + 1)
    )
    return min(1.0, 2 * tail)


def paired_difference(
    candidate: np.ndarray, baseline: np.ndarray, *, resamples: int, rng: np.random.Generator
) -> dict:
    """Both models' hit rates on the same photos, their difference and its 95 % interval."""
    n = len(candidate)
    if n != len(baseline) or n == 0:
        raise ValueError("a paired comparison needs the same, non-empty set of photos")
    candidate_only = int(np.sum(candidate & ~baseline))
    baseline_only = int(np.sum(baseline & ~candidate))
    shares = [candidate_only / n, baseline_only / n]
    draws = rng.multinomial(n, [*shares, max(0.0, 1.0 - sum(shares))], size=resamples)
    differences = (draws[:, 0] - draws[:, 1]) / n
    low, high = np.quantile(differences, [0.025, 0.975])
    return {
        "n": n,
        "candidate": round(float(candidate.mean()), 6),
        "baseline": round(float(baseline.mean()), 6),
        "difference": round((candidate_only - baseline_only) / n, 6),
        "ci95": [round(float(low), 6), round(float(high), 6)],
        "candidate_only": candidate_only,
        "baseline_only": baseline_only,
    }


def compare(
    true_slugs: list[str], candidate: Outcomes, baseline: Outcomes, config: GateConfig
) -> dict:
    """Paired top-1, top-3 and per-category recall differences (candidate minus baseline).

    Per-category recall is compared only for categories with at least ``min_class_support``
    photos: below that one photo moves recall by more than any useful tolerance.
    """
    rng = np.random.default_rng(config.seed)
    result = {"n": len(true_slugs), "resamples": config.resamples}
    for metric in ("top1", "top3"):
        entry = paired_difference(
            getattr(candidate, metric),
            getattr(baseline, metric),
            resamples=config.resamples,
            rng=rng,
        )
        entry["mcnemar_p"] = round(mcnemar_p(entry["candidate_only"], entry["baseline_only"]), 6)
        result[metric] = entry
    truth = np.array(true_slugs, dtype=object)
    per_class = {}
    for slug in sorted(set(true_slugs)):
        mask = truth == slug
        if int(mask.sum()) < config.min_class_support:
            continue
        per_class[slug] = paired_difference(
            candidate.top1[mask], baseline.top1[mask], resamples=config.resamples, rng=rng
        )
    result["per_class_recall"] = per_class
    return result


def _verdict(name: str, entry: dict, tolerance: float) -> tuple[bool, str]:
    """A metric fails only when the candidate is worse by more than ``tolerance`` *and* the
    whole 95 % interval of the difference lies below zero (the drop is not noise)."""
    low, high = entry["ci95"]
    figures = (
        f"{name}: candidate {entry['candidate']:.4f} vs production {entry['baseline']:.4f} on the "
        f"same {entry['n']} photos, difference {entry['difference']:+.4f} "
        f"(95% interval {low:+.4f} to {high:+.4f})"
    )
    if entry["difference"] >= -tolerance:
        return True, f"{figures}: within the {tolerance:.4f} tolerance"
    if high < 0:
        return False, (
            f"{figures}: worse by more than the {tolerance:.4f} tolerance, and the whole interval "
            "is below zero, so the drop is not noise"
        )
    return True, (
        f"{figures}: worse than the {tolerance:.4f} tolerance on these photos, but the interval "
        "reaches zero, so the drop is not distinguishable from noise"
    )


def paired_gate(comparison: dict, config: GateConfig) -> tuple[bool, list[str]]:
    """Blesses the candidate unless it is significantly worse than production beyond a tolerance
    on top-1, top-3 or a category's recall; the reasons say so in words either way."""
    ok = True
    reasons = []
    for metric, tolerance in (("top1", config.max_top1_drop), ("top3", config.max_top3_drop)):
        passed, reason = _verdict(metric, comparison[metric], tolerance)
        ok &= passed
        reasons.append(reason)
    failed = []
    for slug, entry in comparison["per_class_recall"].items():
        passed, reason = _verdict(f"{slug} recall", entry, config.max_class_recall_drop)
        if not passed:
            failed.append(reason)
    if failed:
        ok = False
        reasons.extend(failed)
    else:
        reasons.append(
            f"no category's recall (of {len(comparison['per_class_recall'])} with at least "
            f"{config.min_class_support} photos) is significantly worse by more than "
            f"{config.max_class_recall_drop:.4f}"
        )
    return ok, reasons


def disagreements(
    records: list[dict], candidate: Outcomes, baseline: Outcomes, limit: int
) -> dict[str, list[dict]]:
    """Photos one model gets right (top-1) and the other does not, most confident mistake first:
    where the two models really differ, for a person to look at before promoting."""

    def item(i: int) -> dict:
        return {
            "image": records[i]["image"],
            "source": records[i]["source"],
            "true": records[i]["slug"],
            "candidate_top3": candidate.top3_scores[i],
            "baseline_top3": baseline.top3_scores[i],
        }

    only_candidate = np.flatnonzero(candidate.top1 & ~baseline.top1)
    only_baseline = np.flatnonzero(baseline.top1 & ~candidate.top1)
    return {
        "candidate_right": [
            item(int(i))
            for i in sorted(only_candidate, key=lambda i: -baseline.top3_scores[i][0][1])[:limit]
        ],
        "baseline_right": [
            item(int(i))
            for i in sorted(only_baseline, key=lambda i: -candidate.top3_scores[i][0][1])[:limit]
        ],
    }
