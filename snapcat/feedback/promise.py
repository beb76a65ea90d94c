"""Whether live ``confident`` answers keep the promise the threshold was chosen to keep.

Training picks the ``confident`` threshold so that a 95 % Clopper-Pearson lower bound of top-3
precision on validation reaches the target (0.95 by default, :mod:`snapcat.train.calibration_fit`). Live,
sellers' final categories say how often a confident answer really had the category in its top
3. The promise is *broken* when that is below the target by more than chance allows: the
one-sided 95 % Clopper-Pearson **upper** bound of the live agreement is below the target (i.e.
``P(X <= agreed | n, target) < 5 %``). Too few confident answers with feedback can break
nothing: the check then says it is waiting.

Pure Python, no I/O: the feedback sink (which logs and exports it per model version) and
``snapcat rollout analyze`` (which rolls a canary back on it) share one rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from snapcat.contract.confidence import (
    CONFIDENCE_LEVEL,
    DEFAULT_TARGET_PRECISION,
    clopper_pearson_lower,
)

#: Fewer confident answers with sellers' feedback than this and the check waits.
MIN_CONFIDENT_FEEDBACK = 20


@dataclass(frozen=True)
class PromiseCheck:
    broken: bool | None  # None: too few confident answers with feedback to tell
    answers: int
    agreed: int
    agreement: float | None
    upper_bound: float | None
    target: float
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def agreement_upper_bound(agreed: int, answers: int, confidence: float = CONFIDENCE_LEVEL) -> float:
    """One-sided Clopper-Pearson upper bound of a proportion (``1 - lower`` of the failures)."""
    if answers <= 0:
        return 1.0
    return 1.0 - clopper_pearson_lower(answers - agreed, answers, confidence)


def check_promise(
    answers: float,
    agreed: float,
    target: float = DEFAULT_TARGET_PRECISION,
    confidence: float = CONFIDENCE_LEVEL,
    min_answers: int = MIN_CONFIDENT_FEEDBACK,
) -> PromiseCheck:
    """``answers`` confident answers with sellers' feedback, ``agreed`` of them with the
    seller's category in the top 3 (Prometheus counters: rounded to whole answers)."""
    n, k = int(round(answers)), int(round(agreed))
    k = min(max(k, 0), n)
    if n < min_answers:
        return PromiseCheck(
            None, n, k, k / n if n else None, None, target,
            f"{n} confident answers with sellers' feedback, {min_answers} needed",
        )  # fmt: skip
    upper = agreement_upper_bound(k, n, confidence)
    broken = upper < target
    detail = (
        f"sellers kept a top-3 suggestion of {k} of {n} confident answers ({k / n:.1%}; "
        f"{confidence:.0%} upper bound {upper:.1%}) against the promised {target:.0%}"
        + (": the promise is broken" if broken else "")
    )
    return PromiseCheck(broken, n, k, round(k / n, 6), round(upper, 6), target, detail)


def rollout_check(canary) -> dict:
    """The canary's promise as ``snapcat rollout analyze``'s ``Check`` fields (a broken promise
    fails the canary; the stable version's is not the canary's fault)."""
    result = check_promise(canary.confident_feedback, canary.confident_top3_agreements)
    return {
        "name": "confident promise",
        "passed": None if result.broken is None else not result.broken,
        "value": result.agreement,
        "limit": result.target,
        "detail": f"canary: {result.detail}",
    }
