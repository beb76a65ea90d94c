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

Expected calibration error has no such shortcut (it is a sum of per-bin absolute gaps), so
:func:`paired_ece` resamples photo indices, the same ones for both models, in chunks that bound
memory. Every rule of :func:`paired_gate`, ECE included, refuses only when the candidate is worse
by more than its tolerance *and* the whole 95 % interval says worse; the first reason says which
rule decided, with its interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snapcat.evaluate.gate import GateConfig
from snapcat.evaluate.metrics import topk_indices
from snapcat.stats import ECE_BINS

#: Resampled photo indices held at once by :func:`paired_ece` (about 16 MB of int64).
_ECE_CHUNK_CELLS = 2_000_000


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


def _ece_parts(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> tuple:
    """Per photo: its top-1 score's bin (as :func:`snapcat.stats.reliability_bins` bins it)
    and right-minus-confidence; ECE is sum over bins of |sum of the latter| / n."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    return which, correct.astype(np.float64) - confidence


def _ece_of_resamples(which, gap, indices: np.ndarray, bins: int) -> np.ndarray:
    rows, n = indices.shape
    cells = (np.arange(rows)[:, None] * bins + which[indices]).ravel()
    sums = np.bincount(cells, weights=gap[indices].ravel(), minlength=rows * bins)
    return np.abs(sums.reshape(rows, bins)).sum(axis=1) / n


def paired_ece(
    candidate: tuple[np.ndarray, np.ndarray],
    baseline: tuple[np.ndarray, np.ndarray],
    *,
    resamples: int,
    rng: np.random.Generator,
    bins: int = ECE_BINS,
) -> dict:
    """Both models' ECE on the same photos (each a ``(probabilities, label indices)`` pair, -1
    for a category the model lacks), the difference (candidate minus baseline: positive is
    worse) and its 95 % paired-bootstrap interval."""
    parts_c = _ece_parts(*candidate, bins)
    parts_b = _ece_parts(*baseline, bins)
    n = len(parts_c[0])
    if n != len(parts_b[0]) or n == 0:
        raise ValueError("a paired comparison needs the same, non-empty set of photos")
    everyone = np.arange(n)[None, :]
    ece_c = float(_ece_of_resamples(*parts_c, everyone, bins)[0])
    ece_b = float(_ece_of_resamples(*parts_b, everyone, bins)[0])
    differences = []
    chunk = max(1, _ECE_CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        indices = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        differences.append(
            _ece_of_resamples(*parts_c, indices, bins) - _ece_of_resamples(*parts_b, indices, bins)
        )
    low, high = np.quantile(np.concatenate(differences), [0.025, 0.975])
    return {
        "n": n,
        "candidate": round(ece_c, 6),
        "baseline": round(ece_b, 6),
        "difference": round(ece_c - ece_b, 6),
        "ci95": [round(float(low), 6), round(float(high), 6)],
    }


def ece_interval(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: int,
    rng: np.random.Generator,
    bins: int = ECE_BINS,
) -> list[float]:
    """One model's ECE 95 % bootstrap interval over its photos (for the fallback gate, which has
    no production model to pair with)."""
    which, gap = _ece_parts(probabilities, labels, bins)
    n = len(which)
    if n == 0:
        raise ValueError("no photos")
    chunk = max(1, _ECE_CHUNK_CELLS // n)
    values = np.concatenate([
        _ece_of_resamples(which, gap, rng.integers(0, n, size=(min(chunk, resamples - s), n)),
                          bins)
        for s in range(0, resamples, chunk)
    ])  # fmt: skip
    low, high = np.quantile(values, [0.025, 0.975])
    return [round(float(low), 6), round(float(high), 6)]


def compare(
    true_slugs: list[str],
    candidate: Outcomes,
    baseline: Outcomes,
    config: GateConfig,
    calibration: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict:
    """Paired top-1, top-3 and per-category recall differences (candidate minus baseline), and
    with ``calibration`` (each model's served probabilities and label indices) the paired ECE.

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
    if calibration is not None:
        result["ece"] = paired_ece(*calibration, resamples=config.resamples, rng=rng)
    return result


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
