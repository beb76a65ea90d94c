"""Which epoch a training run keeps, and why: decided on a proper score, never on noise.

Issue 22's run kept epoch 1 of 6 because its monitor (validation top-3 on 17 photos) was already
1.0 after the first head epoch and ties kept the earliest epoch, while top-1 rose from 0.53 to
0.82. So:

- the monitor is validation **loss** (the negative log-likelihood, a proper score: it rewards
  being right *and* sure, and it almost never ties); on an exact tie the **later** epoch wins
  (it has seen more of the schedule);
- with fewer than :data:`MIN_SELECTION_PHOTOS` validation photos the differences between epochs
  are noise (on 17 photos one photo is 6 points of accuracy): the run trains its fixed schedule
  and keeps the **last** epoch, and says so, with the number.

Pure Python: the training loop, the export and the tests share one rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

MONITOR = "val_loss"
#: Fewer validation photos than this and no epoch is chosen by them (the last one is kept).
MIN_SELECTION_PHOTOS = 30


@dataclass(frozen=True)
class SelectionRule:
    """How the run picks its epoch: ``best-val-loss`` or ``last-epoch``, and why."""

    rule: str
    monitor: str | None
    why: str
    validation_photos: int

    @property
    def selecting(self) -> bool:
        return self.rule == "best-val-loss"

    def to_dict(self) -> dict:
        return asdict(self)


def selection_rule(validation_photos: int, minimum: int = MIN_SELECTION_PHOTOS) -> SelectionRule:
    """The rule for a run with ``validation_photos`` validation photos."""
    if validation_photos >= minimum:
        return SelectionRule(
            "best-val-loss",
            MONITOR,
            f"lowest validation loss over {validation_photos} validation photos "
            "(the later epoch on ties)",
            validation_photos,
        )
    return SelectionRule(
        "last-epoch",
        None,
        f"validation split too small to choose an epoch ({validation_photos} photos < "
        f"{minimum}): trained the fixed schedule and kept the last epoch",
        validation_photos,
    )


def is_improvement(current: float, best: float | None) -> bool:
    """Whether an epoch's validation loss replaces the kept one: lower, or equal (later wins)."""
    return best is None or current <= best


def select_epoch(history: list[dict], rule: SelectionRule) -> dict | None:
    """The kept epoch's history row (rows as :func:`snapcat.train.trainer.read_history` gives them)."""
    if not history:
        return None
    if not rule.selecting:
        return history[-1]
    best = None
    for row in history:
        value = row.get(rule.monitor)
        if value is not None and is_improvement(value, best[rule.monitor] if best else None):
            best = row
    return best or history[-1]
