"""Early termination, with Ray Tune's own machinery: ASHA (``ASHAScheduler``) and a
``Stopper`` for the degenerate-epoch rule.

Both read only what the trainable reports every epoch from the g loop's own record: the
guarded validation S-score of the selection so far (``selected_selection_score``, S in
[0, 1] when the selected epoch is selectable, S - 1 otherwise) and the number of trailing
degenerate epochs (``degenerate_streak``). Neither ever sees test data.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from study.spec import Study

#: The result key ASHA ranks trials by at each rung.
ASHA_METRIC = "selected_selection_score"


class DegenerateStreakStopper(tune.Stopper):
    """Stop a trial once ``epochs`` consecutive epochs were degenerate (excluded by the
    guard): its maps are all-image or all-empty and more epochs are unlikely to help."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return int(result.get("degenerate_streak", 0)) >= self.epochs

    def stop_all(self) -> bool:
        return False


def build_scheduler(study: Study) -> ASHAScheduler | None:
    """ASHA over epochs as ``search.scheduler.asha`` says, or None."""
    asha = study.search.scheduler.asha
    if asha is None:
        return None
    return ASHAScheduler(
        time_attr="epoch",
        metric=ASHA_METRIC,
        mode="max",
        max_t=asha.max_t or study.max_mask_epochs(),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
    )


def build_stopper(study: Study) -> DegenerateStreakStopper | None:
    """The degenerate-epoch rule as ``search.scheduler.stop_after_degenerate`` says, or None."""
    epochs = study.search.scheduler.stop_after_degenerate
    return DegenerateStreakStopper(epochs) if epochs is not None else None


def stopped_by(study: Study, history: list[dict[str, Any]]) -> str:
    """Which rule stopped a trial that ended early without an error or an interrupt."""
    from wsol.selection import degenerate_streak

    rule = study.search.scheduler.stop_after_degenerate
    if rule is not None and degenerate_streak(history) >= rule:
        return f"{rule} consecutive degenerate epochs"
    return "ASHA"
