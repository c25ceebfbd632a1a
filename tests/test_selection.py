"""Early stopping by max validation S-score, with our degenerate-epoch guard."""

from __future__ import annotations

import pytest

from wsol.config import ConfigError, SelectionConfig, config_from_dict
from wsol.selection import (
    degenerate_streak,
    exclusion_reason,
    is_degenerate,
    select_epoch,
    selection_score,
)


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
    reason = exclusion_reason({"val_box_fraction": 0.97}, config, epoch=1)
    assert reason is not None and "97.0%" in reason and "max_box_fraction" in reason
    assert exclusion_reason({"val_box_fraction": 0.5}, config, epoch=1) is None
    speck = exclusion_reason({"val_box_fraction": 0.0002}, config, epoch=1)
    assert speck is not None and "min_box_fraction" in speck
    off = SelectionConfig(skip_degenerate=False)
    assert exclusion_reason({"val_box_fraction": 1.0}, off, epoch=1) is None


def test_epochs_before_min_epoch_are_warm_up_not_degenerate() -> None:
    config = SelectionConfig(min_epoch=3)
    fine = {"val_box_fraction": 0.3}
    warm_up = exclusion_reason(fine, config, epoch=2)
    assert warm_up is not None and warm_up.startswith("warm-up") and "min_epoch = 3" in warm_up
    assert exclusion_reason(fine, config, epoch=3) is None
    # A degenerate early epoch is reported as degenerate (its reason is the stronger one).
    assert is_degenerate(exclusion_reason({"val_box_fraction": 0.97}, config, epoch=1))
    assert not is_degenerate(warm_up)
    history = [
        {"epoch": 1, "val_s_score": 0.99, "excluded_reason": warm_up},
        {"epoch": 2, "val_s_score": 0.98, "excluded_reason": warm_up},
        {"epoch": 3, "val_s_score": 0.90, "excluded_reason": None},
    ]
    selection = select_epoch(history)
    assert selection.epoch == 3 and not selection.fallback
    assert "warm-up" in selection.describe() and "degenerate" not in selection.describe()
    # Warm-up epochs do not feed early termination's degenerate streak.
    assert degenerate_streak(history[:2]) == 0


def test_min_epoch_after_the_last_epoch_is_refused_naming_both_fields() -> None:
    with pytest.raises(ConfigError, match=r"selection.min_epoch=5.*mask.epochs=4"):
        config_from_dict({"mask": {"epochs": 4}, "selection": {"min_epoch": 5}})


def tolerant(epoch: int, s: float, tolerance: float, excluded: str | None = None) -> dict:
    return {**row(epoch, s, excluded), "selection_tolerance": tolerance}


def test_tolerance_keeps_the_latest_later_epoch_within_it_of_the_max() -> None:
    # S 0.941 at epoch 4, then 0.940 / 0.937 / 0.937 / 0.936: within 0.006 of it all.
    scores = {4: 0.941, 5: 0.940, 6: 0.937, 7: 0.937, 8: 0.936}
    selection = select_epoch([tolerant(e, s, 0.006) for e, s in scores.items()])
    assert (selection.epoch, selection.s_score) == (8, 0.936)
    assert (selection.max_s_epoch, selection.max_s_score) == (4, 0.941)
    assert "latest within selection.s_tolerance_se" in selection.describe()
    assert selection.to_dict()["max_s_epoch"] == 4


def test_tolerance_stops_at_the_band_and_never_prefers_an_earlier_epoch() -> None:
    history = [
        tolerant(1, 0.935, 0.01),  # within the band, but before the max: not preferred
        tolerant(2, 0.941, 0.01),
        tolerant(3, 0.935, 0.01),
        tolerant(4, 0.920, 0.01),  # below 0.941 - 0.01
    ]
    assert select_epoch(history).epoch == 3


def test_tolerance_never_keeps_an_excluded_epoch_when_a_selectable_one_exists() -> None:
    history = [tolerant(4, 0.94, 0.01), tolerant(5, 0.939, 0.01, "degenerate: ...")]
    selection = select_epoch(history)
    assert selection.epoch == 4 and selection.max_s_epoch == 4


def test_zero_or_missing_tolerance_is_the_papers_max_s() -> None:
    scores = [(1, 0.90), (2, 0.95), (3, 0.949)]
    assert select_epoch([tolerant(e, s, 0.0) for e, s in scores]).epoch == 2
    assert select_epoch([row(e, s) for e, s in scores]).epoch == 2


def test_a_new_epoch_either_becomes_the_kept_one_or_leaves_it_unchanged() -> None:
    # What lets checkpoint retention keep only the reported selection: over every prefix
    # of many random histories, the kept epoch is the previous one or the newest.
    import random

    generator = random.Random(0)
    for _ in range(300):
        history: list[dict] = []
        previous = None
        for epoch in range(1, 11):
            reason = "degenerate: x" if generator.random() < 0.2 else None
            history.append(tolerant(epoch, generator.uniform(0.9, 0.95), 0.01, reason))
            kept = select_epoch(history).epoch
            assert kept in (previous, epoch)
            previous = kept


def test_tolerance_does_not_apply_when_every_epoch_is_excluded() -> None:
    # The fallback is plain max-S, as its description says.
    history = [tolerant(1, 0.99, 0.05, "degenerate: a"), tolerant(2, 0.98, 0.05, "degenerate: b")]
    selection = select_epoch(history)
    assert selection.fallback and selection.epoch == selection.max_s_epoch == 1


def test_tolerance_is_validated_and_off_by_default() -> None:
    assert SelectionConfig().s_tolerance_se == 0.0
    with pytest.raises(ConfigError, match="s_tolerance_se"):
        config_from_dict({"selection": {"s_tolerance_se": -1}})
