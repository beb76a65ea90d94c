"""The release gate: every rule that blesses or refuses a candidate model, and one verdict.

:func:`verdict` takes all the evidence evaluation gathered and returns one answer with its
reasons:

- with the production model evaluated on the same photos (a paired comparison,
  :func:`snapcat.evaluate.paired.compare`), :func:`paired_gate`: a drop beyond a tolerance on
  top-1, top-3, a category's recall or ECE refuses the candidate only when its whole 95 % interval
  says worse (not noise);
- with only production's stored ``metrics.json``, :func:`gate`: the figures compared as they are,
  except ECE, compared with the candidate's own bootstrap interval;
- with neither (the first model), :func:`gate`'s floors on top-1 and top-3.

The tolerances are :class:`GateConfig`'s fields, their one definition: the CLI, the evaluate
component and the pipeline read their defaults from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateConfig:
    """How much worse than production a candidate may be, and the floors for a first model.

    With the production model evaluated on the same photos (:func:`snapcat.evaluate.gate.paired_gate`)
    a drop beyond a tolerance refuses the candidate only when it is more than noise; with only a
    stored metrics.json (:func:`gate`, the fallback) the figures are compared as they are, except
    ECE, which is compared with the candidate's own bootstrap interval."""

    max_top1_drop: float = 0.01
    max_top3_drop: float = 0.01
    max_class_recall_drop: float = 0.10
    min_class_support: int = 5  # recall of rarer classes in the test split is too noisy to gate on
    min_top1: float = 0.60
    min_top3: float = 0.85
    #: how much higher than production's the expected calibration error may be (snapcat.train.calibration_fit)
    max_ece_increase: float = 0.02
    # Champion vs challenger (snapcat.evaluate.paired): paired bootstrap resamples for the 95 % intervals
    # and their seed, so a re-evaluation gives the same intervals.
    resamples: int = 2000
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def gate(candidate: dict, baseline: dict | None, config: GateConfig) -> tuple[bool, list[str]]:
    """Blesses ``candidate`` or not; the reasons say why either way, for people and the pipeline."""
    reasons: list[str] = []
    ok = True
    if baseline is None:
        for metric, floor in (("top1", config.min_top1), ("top3", config.min_top3)):
            passed = candidate[metric] >= floor
            ok &= passed
            reasons.append(
                f"{metric} {candidate[metric]:.4f} {'>=' if passed else '<'} floor {floor:.4f} "
                "(no baseline: first model)"
            )
        return ok, reasons

    for metric, tolerance in (("top1", config.max_top1_drop), ("top3", config.max_top3_drop)):
        limit = baseline[metric] - tolerance
        passed = candidate[metric] >= limit
        ok &= passed
        reasons.append(
            f"{metric} {candidate[metric]:.4f} vs baseline {baseline[metric]:.4f} "
            f"({'within' if passed else 'beyond'} tolerance {tolerance:.4f})"
        )
    drops = []
    for slug, base in baseline.get("per_class", {}).items():
        mine = candidate.get("per_class", {}).get(slug)
        # Symmetric: a category is gated only where *both* runs had enough photos of it (the
        # stored baseline's photos are not this run's; 0-1 test photos give recall 0 or 1).
        if mine is None or min(base.get("support", 0), mine.get("support", 0)) < (
            config.min_class_support
        ):
            continue
        drop = base["recall"] - mine["recall"]
        if drop > config.max_class_recall_drop:
            drops.append(
                f"{slug} recall {mine['recall']:.3f} < baseline {base['recall']:.3f} "
                f"by {drop:.3f} (max {config.max_class_recall_drop:.3f}; "
                f"{mine['support']} vs {base['support']} photos)"
            )
    if drops:
        ok = False
        reasons.extend(drops)
    else:
        reasons.append(
            f"no category's recall dropped by more than {config.max_class_recall_drop:.3f} "
            f"(of those with at least {config.min_class_support} photos in both runs)"
        )
    calibrated = _ece_rule(candidate, baseline, config.max_ece_increase)
    if calibrated is not None:
        ok &= calibrated[0]
        reasons.append(calibrated[1])
    return ok, reasons


def _ece_rule(candidate: dict, baseline: dict, tolerance: float) -> tuple[bool, str] | None:
    """ECE against a stored figure: refused only when the candidate's ECE is above the baseline's
    plus the tolerance across its whole 95 % bootstrap interval (``calibration.ece_ci95``; the
    stored figure has no interval: its photos are not here). ``None``: nothing to compare."""
    mine = (candidate.get("calibration") or {}).get("ece")
    theirs = (baseline.get("calibration") or {}).get("ece")
    if mine is None or theirs is None:
        return None
    interval = (candidate.get("calibration") or {}).get("ece_ci95")
    figures = f"ECE {mine:.4f} vs baseline {theirs:.4f}"
    if interval:
        figures += f" (candidate's 95% interval {interval[0]:.4f} to {interval[1]:.4f})"
    if mine <= theirs + tolerance:
        return True, f"{figures}: within tolerance {tolerance:.4f}"
    if interval is None or interval[0] > theirs + tolerance:
        return False, f"{figures}: beyond tolerance {tolerance:.4f}, and not noise"
    return True, (
        f"{figures}: beyond tolerance {tolerance:.4f} on these photos, but the interval reaches "
        "it, so it is not distinguishable from noise"
    )


def _verdict(
    name: str, entry: dict, tolerance: float, *, lower_is_better: bool = False
) -> tuple[bool, str]:
    """A rule fails only when the candidate is worse by more than ``tolerance`` *and* the whole
    95 % interval of the difference says worse (the drop is not noise). Differences are candidate
    minus production: worse is below zero for accuracy, above zero for ``lower_is_better``
    measures such as ECE."""
    low, high = entry["ci95"]
    sign = -1.0 if lower_is_better else 1.0
    worse_by = -sign * entry["difference"]
    interval_worse = (low > 0) if lower_is_better else (high < 0)
    figures = (
        f"{name}: candidate {entry['candidate']:.4f} vs production {entry['baseline']:.4f} on the "
        f"same {entry['n']} photos, difference {entry['difference']:+.4f} "
        f"(95% interval {low:+.4f} to {high:+.4f})"
    )
    side = "above" if lower_is_better else "below"
    if worse_by <= tolerance:
        return True, f"{figures}: within the {tolerance:.4f} tolerance"
    if interval_worse:
        return False, (
            f"{figures}: worse by more than the {tolerance:.4f} tolerance, and the whole interval "
            f"is {side} zero, so it is not noise"
        )
    return True, (
        f"{figures}: worse than the {tolerance:.4f} tolerance on these photos, but the interval "
        "reaches zero, so it is not distinguishable from noise"
    )


def paired_gate(comparison: dict, config: GateConfig) -> tuple[bool, list[str]]:
    """Blesses the candidate unless it is significantly worse than production beyond a tolerance
    on top-1, top-3, a category's recall or (when compared) ECE. The first reason is the verdict:
    which rule(s) refused, or that none did; then every rule in words with its interval."""
    rules: list[tuple[str, bool, str]] = []
    for metric, tolerance in (("top1", config.max_top1_drop), ("top3", config.max_top3_drop)):
        rules.append((metric, *_verdict(metric, comparison[metric], tolerance)))
    failed = []
    for slug, entry in comparison["per_class_recall"].items():
        passed, reason = _verdict(f"{slug} recall", entry, config.max_class_recall_drop)
        if not passed:
            failed.append((f"{slug} recall", passed, reason))
    rules += failed or [(
        "per-category recall", True,
        f"no category's recall (of {len(comparison['per_class_recall'])} with at least "
        f"{config.min_class_support} photos) is significantly worse by more than "
        f"{config.max_class_recall_drop:.4f}",
    )]  # fmt: skip
    if comparison.get("ece") is not None:
        rules.append(
            ("ECE", *_verdict("ECE", comparison["ece"], config.max_ece_increase,
                              lower_is_better=True))
        )  # fmt: skip
    refused = [name for name, passed, _ in rules if not passed]
    verdict = (
        f"verdict: refused by {', '.join(refused)} (significantly worse beyond tolerance)"
        if refused
        else f"verdict: blessed; no rule ({', '.join(n for n, _, _ in rules)}) found the "
        "candidate worse beyond its tolerance and the noise"
    )
    return not refused, [verdict, *(reason for _, _, reason in rules)]


def verdict(
    candidate: dict,
    config: GateConfig,
    *,
    comparison: dict | None = None,
    stored_baseline: dict | None = None,
) -> tuple[bool, list[str]]:
    """Blesses ``candidate`` (its metrics) or not, from the best evidence there is: the paired
    ``comparison`` with production when production was evaluated on the same photos, else the
    ``stored_baseline`` metrics, else the first-model floors. The reasons say why either way."""
    if comparison is not None:
        return paired_gate(comparison, config)
    return gate(candidate, stored_baseline, config)
