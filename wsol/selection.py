"""Early stopping: which epoch of g a run keeps, and the one ordering everything uses.

The paper keeps the epoch of maximal mean validation S-score (Eq. 6). Our guard (not the
paper's) makes degenerate epochs unselectable; when every epoch is degenerate the plain
max-S epoch is kept and flagged. :func:`epoch_rank` is the ordering whose maximum is the
max-S epoch. With a tolerance (``selection.s_tolerance_se`` > 0, ours) the kept epoch is
the latest selectable one after it whose S is within the tolerance of that maximum
(:func:`select_epoch`). Checkpoint retention keeps the epoch the trial reports as
selected, then others by :func:`epoch_rank`, so the two can never disagree.

A history row, the same from the g loop to the manifest to the final evaluation, is
``{"epoch": int, "val_s_score": float, ..., "excluded_reason": str | None,
"selection_tolerance": float}``; ``selection_tolerance`` (absolute S,
``s_tolerance_se`` x that epoch's ``val_s_score_se``) may be absent (rows written before
it existed): 0, the paper's rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wsol.config import SelectionConfig

HistoryRow = Mapping[str, Any]


#: How a degenerate epoch's exclusion reason starts (the rest says which bound it broke).
DEGENERATE = "degenerate"


def exclusion_reason(
    metrics: Mapping[str, float], selection: SelectionConfig, *, epoch: int
) -> str | None:
    """Our guard (not the paper's): why ``epoch`` may not be selected, or None.

    Eq. 6 is exactly 1.0 for a map above tau everywhere (one contour: the whole image),
    which a fresh g and a lambda = 0 g both output, and for a map that is empty but for a
    single speck (a g whose batch-norm statistics have not settled yet); either would win
    max-S while localizing nothing. Reads ``val_box_fraction`` (mean box area / image area).
    Those reasons start with :data:`DEGENERATE`. An epoch before ``selection.min_epoch``
    (1, the paper's: every epoch may be selected) is excluded as a warm-up epoch: g's first
    epochs are coarse masks (the paper's Fig. 4), whose one large blob holds nearly all of
    the map and so scores a high S.
    """
    if selection.skip_degenerate:
        fraction = metrics["val_box_fraction"]
        if fraction > selection.max_box_fraction:
            return (
                f"{DEGENERATE}: mean predicted box covers {fraction:.1%} of the image "
                f"(> selection.max_box_fraction = {selection.max_box_fraction:.0%})"
            )
        if fraction < selection.min_box_fraction:
            return (
                f"{DEGENERATE}: mean predicted box covers {fraction:.2%} of the image "
                f"(< selection.min_box_fraction = {selection.min_box_fraction:.0%})"
            )
    if epoch < selection.min_epoch:
        return f"warm-up: epoch {epoch} < selection.min_epoch = {selection.min_epoch}"
    return None


def is_degenerate(reason: str | None) -> bool:
    """Whether an exclusion reason is the degenerate-box guard's (not a warm-up epoch)."""
    return bool(reason) and reason.startswith(DEGENERATE)


def selection_score(s_score: float, selectable: bool) -> float:
    """The guarded S-score: S in [0,1] for a selectable epoch, S - 1 in [-1,0) for an
    excluded one, so any selectable epoch outranks every excluded one."""
    return s_score if selectable else s_score - 1.0


def epoch_rank(row: HistoryRow) -> tuple[float, int]:
    """The ordering of epochs, greater is better: the guarded S-score, then the earlier
    epoch (ties on S go to the earliest)."""
    return (selection_score(row["val_s_score"], not row["excluded_reason"]), -row["epoch"])


def degenerate_streak(history: Sequence[HistoryRow]) -> int:
    """How many of the last epochs of ``history`` in a row the guard found degenerate
    (warm-up epochs, ``selection.min_epoch``, are not degenerate: they end a streak)."""
    streak = 0
    for row in reversed(history):
        if not is_degenerate(row["excluded_reason"]):
            break
        streak += 1
    return streak


@dataclass(frozen=True)
class Selection:
    """The epoch picked by early stopping and why the others were not."""

    epoch: int
    s_score: float
    excluded: dict[int, str]
    fallback: bool  # every epoch was excluded: picked by plain max-S, flagged
    max_s_epoch: int  # the epoch of maximal (guarded) S: ``epoch`` unless a tolerance moved it
    max_s_score: float

    def describe(self) -> str:
        text = f"selected epoch {self.epoch} (validation S-score {self.s_score:.4f})"
        if self.epoch != self.max_s_epoch:
            text += (
                f", the latest within selection.s_tolerance_se standard errors of epoch "
                f"{self.max_s_epoch}'s maximal S {self.max_s_score:.4f}"
            )
        if self.fallback:
            text += "; every epoch was degenerate, so this is plain max-S (guard could not apply)"
        elif self.excluded:
            degenerate = sorted(e for e, reason in self.excluded.items() if is_degenerate(reason))
            warm_up = sorted(e for e, reason in self.excluded.items() if not is_degenerate(reason))
            if degenerate:
                text += f"; excluded epochs {degenerate} as degenerate"
            if warm_up:
                text += f"; epochs {warm_up} are warm-up (before selection.min_epoch)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "s_score": self.s_score,
            "fallback": self.fallback,
            "excluded": {str(k): v for k, v in sorted(self.excluded.items())},
            "max_s_epoch": self.max_s_epoch,
            "max_s_score": self.max_s_score,
        }


def select_epoch(history: Sequence[HistoryRow]) -> Selection:
    """The epoch early stopping keeps.

    The max-S epoch is the maximum of :func:`epoch_rank` (if every epoch is excluded this
    is plain max-S over all, flagged ``fallback``, and no tolerance applies). With that
    row's ``selection_tolerance`` t > 0, the kept epoch is the latest later selectable
    epoch with S >= max S - t; otherwise the max-S epoch itself. A new epoch therefore
    either becomes the kept one or leaves it unchanged, which is what lets retention keep
    just the reported one.
    """
    if not history:
        raise ValueError("cannot select an epoch from an empty history")
    excluded = {row["epoch"]: row["excluded_reason"] for row in history if row["excluded_reason"]}
    best = max(history, key=epoch_rank)
    kept = best
    tolerance = float(best.get("selection_tolerance") or 0.0)
    if tolerance > 0 and not best["excluded_reason"]:
        within = [
            row
            for row in history
            if row["epoch"] > best["epoch"]
            and not row["excluded_reason"]
            and row["val_s_score"] >= best["val_s_score"] - tolerance
        ]
        kept = max(within, key=lambda row: row["epoch"], default=best)
    return Selection(
        epoch=kept["epoch"],
        s_score=kept["val_s_score"],
        excluded=excluded,
        fallback=len(excluded) == len(history),
        max_s_epoch=best["epoch"],
        max_s_score=best["val_s_score"],
    )
