"""Early stopping by max validation S-score, with our degenerate-epoch guard."""

from __future__ import annotations

import pytest

from wsol.config import SelectionConfig
from wsol.selection import exclusion_reason, select_epoch, selection_score


def row(epoch: int, s: float, excluded: str | None = None) -> dict:
    return {"epoch": epoch, "val_s_score": s, "excluded_reason": excluded}


def test_max_s_among_selectable_epochs_wins_over_a_degenerate_perfect_score() -> None:
    history = [row(1, 1.0, "degenerate"), row(2, 0.91), row(3, 0.95), row(4, 0.80)]
    selection = select_epoch(history)
    assert (selection.epoch, selection.s_score) == (3, 0.95)
    assert selection.excluded == {1: "degenerate"} and not selection.fallback
    assert "excluded epochs [1]" in selection.describe()


def test_ties_go_to_the_earliest_epoch() -> None:
    assert select_epoch([row(1, 0.9), row(2, 0.9)]).epoch == 1


def test_all_degenerate_falls_back_to_plain_max_s_and_says_so() -> None:
    selection = select_epoch([row(1, 0.99, "d"), row(2, 1.0, "d")])
    assert selection.epoch == 2 and selection.fallback
    assert "plain max-S" in selection.describe()


def test_empty_history_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        select_epoch([])


def test_selection_score_ranks_any_selectable_epoch_above_any_excluded_one() -> None:
    assert selection_score(0.01, True) > selection_score(1.0, False)
    assert selection_score(0.7, True) == 0.7


def test_guard_excludes_whole_image_and_speck_boxes_and_can_be_switched_off() -> None:
    config = SelectionConfig(max_box_fraction=0.9)
    reason = exclusion_reason({"val_box_fraction": 0.97}, config)
    assert reason is not None and "97.0%" in reason and "max_box_fraction" in reason
    assert exclusion_reason({"val_box_fraction": 0.5}, config) is None
    speck = exclusion_reason({"val_box_fraction": 0.0002}, config)
    assert speck is not None and "min_box_fraction" in speck
    off = SelectionConfig(skip_degenerate=False)
    assert exclusion_reason({"val_box_fraction": 1.0}, off) is None
