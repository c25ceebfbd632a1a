"""Warnings about a finished run that need no test data: is f good enough to train g
against, did the guard ever find a selectable epoch, do the boxes localize anything, and
did the S-score pick the epoch that the validation boxes prefer.

Each rule is a small pure function of validation numbers only (f's per-epoch metrics,
g's history rows of :mod:`wsol.selection`'s schema); :func:`diagnose` applies all four
to one run. ``wsol train`` prints them at the end and writes ``diagnostics.json`` in the
run folder; a study prints them under its summary table, keeps them per trial in
``study.json`` and sets them as MLflow tags ``diagnostic.<name>`` (:meth:`Diagnostics.tags`).

The rules and their thresholds:

- **f weak** (:func:`f_is_weak`): g is trained to keep f's decision (Method I) or its
  embedding (Method II), so g can localize only what f has learnt to see. f is weak
  when its validation top-1 closes less than :data:`F_MIN_SKILL` (half) of the distance
  from chance (100 / number of classes) to 100 %: below 75 % for 2 classes, 62.5 % for 4,
  55 % for 10, 50.25 % for 200. (A fixed "twice chance" rule would ask 100 % of 2 classes
  and allow 1 % for 200.)
- **all degenerate** (:func:`all_epochs_degenerate`): every epoch was excluded by our
  guard (degenerate, or warm-up before ``selection.min_epoch``), so the selection fell
  back to plain max-S (:attr:`wsol.selection.Selection.fallback`): the selected g
  outputs full-image or near-empty maps, or is one of g's first, coarse epochs.
- **boxes cover the image** (:func:`boxes_cover_image`): at the selected epoch the mean
  predicted box covers more than :data:`MAX_SELECTED_BOX_FRACTION` (80 %) of the image
  (``val_box_fraction``), so its boxes say little about where the object is even when
  the guard (``selection.max_box_fraction``, 90 % by default) let the epoch through.
- **selection misses the boxes** (:func:`validation_selection_gap`): where the validation
  split has ground-truth boxes (``val_gt_known_loc`` in every history row), another
  selectable epoch's validation GT-known beats the selected epoch's by more than
  :data:`MAX_VALIDATION_SELECTION_GAP` (5 points). The S-score asks only that the map's
  mass lie in one box, so a g that shrinks to a compact part of the object keeps a high S
  while its boxes get worse; this flag says so from validation boxes, before anyone reads
  the test split's epoch curve. :func:`s_rank_correlation` (Spearman's rho of S against
  validation GT-known over the selectable epochs) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import spearmanr

#: f is weak when (top-1 - chance) / (100 - chance) is below this (all in %).
F_MIN_SKILL = 0.5
#: Boxes "cover the image" when the selected epoch's mean box area / image area is above this.
MAX_SELECTED_BOX_FRACTION = 0.8
#: "Selection misses the boxes" when a selectable epoch's validation GT-known (%) beats the
#: selected epoch's by more than this many points: above the few points by which GT-known
#: on a few hundred validation images moves between neighbouring epochs of one g.
MAX_VALIDATION_SELECTION_GAP = 5.0
#: The flags of :class:`Diagnostics`, in the order they are reported and tagged.
FLAGS = ("f_weak", "all_degenerate", "boxes_cover_image", "selection_misses_boxes")
#: The MLflow tag prefix of the diagnostics.
TAG_PREFIX = "diagnostic."
#: f's validation top-1 in its per-epoch metrics (wsol.loop.train_classifier).
F_TOP1_KEY = "val_top1_cls"


def chance_top1(num_classes: int) -> float:
    """Top-1 accuracy (%) of guessing uniformly among ``num_classes`` classes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return 100.0 / num_classes


def f_weak_below(num_classes: int) -> float:
    """The validation top-1 (%) under which f is weak: chance + F_MIN_SKILL x (100 - chance)."""
    chance = chance_top1(num_classes)
    return chance + F_MIN_SKILL * (100.0 - chance)


def f_is_weak(val_top1: float, num_classes: int) -> bool:
    """Whether f's validation top-1 (%) is below :func:`f_weak_below` for ``num_classes``."""
    return val_top1 < f_weak_below(num_classes)


def final_f_top1(f_history: Sequence[Mapping[str, Any]]) -> float | None:
    """f's validation top-1 (%) at its last epoch (the f that is kept), None if unknown."""
    for row in reversed(f_history):
        if row.get(F_TOP1_KEY) is not None:
            return float(row[F_TOP1_KEY])
    return None


def all_epochs_degenerate(history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``history`` has epochs and the guard excluded every one of them (the
    selection is then plain max-S, ``Selection.fallback``)."""
    return bool(history) and all(row.get("excluded_reason") for row in history)


def selected_box_fraction(
    history: Sequence[Mapping[str, Any]], selected_epoch: int | None
) -> float | None:
    """``val_box_fraction`` of the selected epoch's history row, None if there is none."""
    for row in history:
        if row.get("epoch") == selected_epoch and row.get("val_box_fraction") is not None:
            return float(row["val_box_fraction"])
    return None


def boxes_cover_image(box_fraction: float) -> bool:
    """Whether a mean box / image area ratio is above :data:`MAX_SELECTED_BOX_FRACTION`."""
    return box_fraction > MAX_SELECTED_BOX_FRACTION


def selectable_rows(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The history rows the guard let through (no ``excluded_reason``)."""
    return [row for row in history if not row.get("excluded_reason")]


def _with_boxes(rows: Sequence[Mapping[str, Any]]) -> bool:
    return bool(rows) and all(row.get("val_gt_known_loc") is not None for row in rows)


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho of two equally long sequences (``scipy.stats.spearmanr``: ties share
    their mean rank); None for fewer than 3 pairs or a constant sequence."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} values against {len(ys)}")
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return float(spearmanr(xs, ys).statistic)


def s_rank_correlation(history: Sequence[Mapping[str, Any]]) -> float | None:
    """Does the S-score rank g's epochs as localization does? Spearman's rho of
    ``val_s_score`` and ``val_gt_known_loc`` (validation boxes) over the selectable epochs:
    near 1 when max-S picks the best epoch on validation, negative when S prefers worse
    ones. None without validation boxes or with fewer than 3 selectable epochs."""
    rows = selectable_rows(history)
    if not _with_boxes(rows):
        return None
    return rank_correlation(
        [row["val_s_score"] for row in rows], [row["val_gt_known_loc"] for row in rows]
    )


def validation_best_epoch(history: Sequence[Mapping[str, Any]]) -> int | None:
    """The selectable epoch with the highest validation GT-known (ties: the earliest);
    None without validation boxes or without a selectable epoch."""
    rows = selectable_rows(history)
    if not _with_boxes(rows):
        return None
    return int(max(rows, key=lambda row: (row["val_gt_known_loc"], -row["epoch"]))["epoch"])


def validation_selection_gap(
    history: Sequence[Mapping[str, Any]], selected_epoch: int | None
) -> float | None:
    """Points of validation GT-known (%) between :func:`validation_best_epoch` and the
    selected epoch (>= 0). None without validation boxes, or when the selected epoch is
    not selectable (a fallback, which :func:`all_epochs_degenerate` already flags)."""
    best = validation_best_epoch(history)
    rows = {row["epoch"]: row for row in selectable_rows(history)}
    if best is None or selected_epoch not in rows:
        return None
    return float(rows[best]["val_gt_known_loc"]) - float(rows[selected_epoch]["val_gt_known_loc"])


def selection_misses_boxes(gap: float) -> bool:
    """Whether a :func:`validation_selection_gap` is above :data:`MAX_VALIDATION_SELECTION_GAP`."""
    return gap > MAX_VALIDATION_SELECTION_GAP


@dataclass(frozen=True)
class Diagnostics:
    """The four diagnostics of one run; a flag is None where its input is unknown (no
    f metrics, no history, no validation boxes)."""

    f_val_top1: float | None
    num_classes: int | None
    f_weak: bool | None
    all_degenerate: bool | None
    selected_epoch: int | None
    selected_box_fraction: float | None
    boxes_cover_image: bool | None
    validation_best_epoch: int | None = None
    validation_selection_gap: float | None = None
    s_rank_correlation: float | None = None
    selection_misses_boxes: bool | None = None

    @property
    def flagged(self) -> bool:
        return any(getattr(self, name) for name in FLAGS)

    def warnings(self) -> list[str]:
        """One sentence per raised flag, for the console."""
        lines = []
        if self.f_weak and self.f_val_top1 is not None and self.num_classes:
            lines.append(
                f"f is weak: validation top-1 {self.f_val_top1:.1f}% against chance "
                f"{chance_top1(self.num_classes):.1f}% ({self.num_classes} classes; weak below "
                f"{f_weak_below(self.num_classes):.1f}%). g can only localize what f "
                "recognises: improve f before reading g's results"
            )
        if self.all_degenerate:
            lines.append(
                "every epoch was degenerate (full-image or near-empty maps) or a warm-up "
                "epoch (before selection.min_epoch): the selection fell back to plain max-S "
                "and the selected g may localize nothing"
            )
        if self.boxes_cover_image and self.selected_box_fraction is not None:
            lines.append(
                f"boxes cover {self.selected_box_fraction:.0%} of the image at the selected "
                f"epoch {self.selected_epoch} (warned above {MAX_SELECTED_BOX_FRACTION:.0%}): "
                "g's maps barely separate object from background"
            )
        if self.selection_misses_boxes and self.validation_selection_gap is not None:
            rho = (
                f"{self.s_rank_correlation:+.2f}" if self.s_rank_correlation is not None else "n/a"
            )
            lines.append(
                f"on validation boxes epoch {self.validation_best_epoch} localizes "
                f"{self.validation_selection_gap:.1f} points better than the selected epoch "
                f"{self.selected_epoch} (GT-known; warned above "
                f"{MAX_VALIDATION_SELECTION_GAP:g}); S against validation GT-known over the "
                f"selectable epochs: rho {rho}. The S-score is not finding g's best-localizing "
                "epoch: look at g's weight maps over the epochs before trusting the selected boxes"
            )
        return lines

    def summary(self) -> str:
        """One line: f's top-1 against chance, and OK or the raised flags' names."""
        parts = []
        if self.f_val_top1 is not None and self.num_classes:
            parts.append(
                f"f validation top-1 {self.f_val_top1:.1f}% "
                f"(chance {chance_top1(self.num_classes):.1f}%)"
            )
        if self.selected_box_fraction is not None:
            parts.append(f"selected boxes {self.selected_box_fraction:.0%} of the image")
        if self.validation_selection_gap is not None:
            parts.append(
                f"best validation-box epoch {self.validation_best_epoch} "
                f"(+{self.validation_selection_gap:.1f} GT-known)"
            )
        raised = [name for name in FLAGS if getattr(self, name)]
        parts.append("WARN: " + ", ".join(raised) if raised else "OK")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "thresholds": {
                "f_weak_below": f_weak_below(self.num_classes) if self.num_classes else None,
                "f_min_skill": F_MIN_SKILL,
                "max_selected_box_fraction": MAX_SELECTED_BOX_FRACTION,
                "max_validation_selection_gap": MAX_VALIDATION_SELECTION_GAP,
            },
            "warnings": self.warnings(),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Diagnostics:
        """Back from :meth:`to_dict` (as ``study.json`` holds it); derived keys ignored."""
        return cls(**{name: record.get(name) for name in cls.__dataclass_fields__})

    def tags(self) -> dict[str, str]:
        """As MLflow tags: ``diagnostic.f_weak`` etc. ``true``/``false``/``unknown``, and
        the numbers they were decided on."""

        def flag(value: bool | None) -> str:
            return "unknown" if value is None else str(value).lower()

        tags = {f"{TAG_PREFIX}{name}": flag(getattr(self, name)) for name in FLAGS}
        if self.f_val_top1 is not None:
            tags[f"{TAG_PREFIX}f_val_top1"] = f"{self.f_val_top1:.2f}"
        if self.selected_box_fraction is not None:
            tags[f"{TAG_PREFIX}selected_box_fraction"] = f"{self.selected_box_fraction:.4f}"
        if self.validation_selection_gap is not None:
            tags[f"{TAG_PREFIX}validation_selection_gap"] = f"{self.validation_selection_gap:.2f}"
        if self.s_rank_correlation is not None:
            tags[f"{TAG_PREFIX}s_rank_correlation"] = f"{self.s_rank_correlation:.3f}"
        return tags


def diagnose(
    f_val_top1: float | None,
    num_classes: int | None,
    history: Sequence[Mapping[str, Any]],
    selected_epoch: int | None,
) -> Diagnostics:
    """The four diagnostics of a run from validation numbers only: f's final validation
    top-1 (%) and class count, g's history and the selected epoch."""
    known_f = f_val_top1 is not None and bool(num_classes)
    fraction = selected_box_fraction(history, selected_epoch)
    gap = validation_selection_gap(history, selected_epoch)
    return Diagnostics(
        f_val_top1=f_val_top1,
        num_classes=num_classes,
        f_weak=f_is_weak(f_val_top1, num_classes) if known_f else None,  # type: ignore[arg-type]
        all_degenerate=all_epochs_degenerate(history) if history else None,
        selected_epoch=selected_epoch,
        selected_box_fraction=fraction,
        boxes_cover_image=boxes_cover_image(fraction) if fraction is not None else None,
        validation_best_epoch=validation_best_epoch(history) if gap is not None else None,
        validation_selection_gap=gap,
        s_rank_correlation=s_rank_correlation(history),
        selection_misses_boxes=selection_misses_boxes(gap) if gap is not None else None,
    )
