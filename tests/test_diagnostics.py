"""The run diagnostics (wsol.diagnostics) on hand-made validation numbers, and how a
study's summary and MLflow tags carry them."""

from __future__ import annotations

import pytest

from study.manifest import TrialSummary, format_diagnostics, trial_diagnostics
from study.runner import _run_tags
from wsol.diagnostics import (
    MAX_SELECTED_BOX_FRACTION,
    MAX_VALIDATION_SELECTION_GAP,
    Diagnostics,
    all_epochs_degenerate,
    boxes_cover_image,
    chance_top1,
    diagnose,
    f_is_weak,
    f_weak_below,
    final_f_top1,
    rank_correlation,
    s_rank_correlation,
    validation_best_epoch,
    validation_selection_gap,
)


def _row(epoch: int, box: float, excluded: str | None = None) -> dict:
    return {
        "epoch": epoch,
        "val_s_score": 0.5,
        "val_box_fraction": box,
        "excluded_reason": excluded,
    }


def _boxed(epoch: int, s_score: float, gt_known: float, excluded: str | None = None) -> dict:
    """A history row of a run whose validation split has ground-truth boxes."""
    return {**_row(epoch, 0.3, excluded), "val_s_score": s_score, "val_gt_known_loc": gt_known}


@pytest.mark.parametrize(("classes", "threshold"), [(2, 75.0), (4, 62.5), (10, 55.0), (200, 50.25)])
def test_f_is_weak_below_half_way_from_chance_to_perfect(classes: int, threshold: float) -> None:
    assert f_weak_below(classes) == pytest.approx(threshold)
    assert f_is_weak(threshold - 0.1, classes)
    assert not f_is_weak(threshold, classes)


def test_the_issues_memorising_f_is_weak_and_a_90_percent_f_is_not() -> None:
    assert chance_top1(10) == 10.0
    assert f_is_weak(43.0, 10)  # issue 14's f: val top-1 43% of 10 classes
    assert not f_is_weak(91.0, 10)


def test_final_f_top1_is_the_last_epochs_validation_top1() -> None:
    history = [{"epoch": 1, "val_top1_cls": 30.0}, {"epoch": 2, "val_top1_cls": 20.0}]
    assert final_f_top1(history) == 20.0
    assert final_f_top1([]) is None


def test_all_degenerate_needs_every_epoch_excluded() -> None:
    assert all_epochs_degenerate([_row(1, 0.95, "degenerate"), _row(2, 0.99, "degenerate")])
    assert not all_epochs_degenerate([_row(1, 0.95, "degenerate"), _row(2, 0.5)])
    assert not all_epochs_degenerate([])


def test_boxes_cover_the_image_above_the_threshold_at_the_selected_epoch_only() -> None:
    assert MAX_SELECTED_BOX_FRACTION == 0.8
    assert boxes_cover_image(0.81) and not boxes_cover_image(0.8)
    history = [_row(1, 0.3), _row(2, 0.86)]
    assert diagnose(90.0, 4, history, 2).boxes_cover_image
    assert not diagnose(90.0, 4, history, 1).boxes_cover_image


def test_diagnose_flags_each_rule_warns_once_each_and_tags_every_flag() -> None:
    history = [_row(1, 0.95, "degenerate"), _row(2, 0.9, "degenerate")]
    diagnostics = diagnose(40.0, 10, history, 2)
    assert (diagnostics.f_weak, diagnostics.all_degenerate, diagnostics.boxes_cover_image) == (
        True,
        True,
        True,
    )
    warnings = diagnostics.warnings()
    assert len(warnings) == 3 and "40.0%" in warnings[0] and "chance 10.0%" in warnings[0]
    assert diagnostics.tags() == {
        "diagnostic.f_weak": "true",
        "diagnostic.all_degenerate": "true",
        "diagnostic.boxes_cover_image": "true",
        "diagnostic.selection_misses_boxes": "unknown",  # no validation boxes
        "diagnostic.f_val_top1": "40.00",
        "diagnostic.selected_box_fraction": "0.9000",
    }
    assert Diagnostics.from_dict(diagnostics.to_dict()) == diagnostics
    healthy = diagnose(95.0, 10, [_row(1, 0.3)], 1)
    assert not healthy.flagged and healthy.warnings() == [] and healthy.summary().endswith("OK")


def test_rank_correlation_is_spearmans_rho_and_none_when_undefined() -> None:
    assert rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)  # tie
    assert rank_correlation([1, 2], [1, 2]) is None  # too few pairs
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None  # constant
    with pytest.raises(ValueError, match="3 values against 2"):
        rank_correlation([1, 2, 3], [1, 2])


def test_s_rank_correlation_reads_only_selectable_epochs_with_validation_boxes() -> None:
    # S rises while the boxes get worse (a g shrinking to a part): rho -1. The warm-up
    # epoch 1 (highest GT-known, lowest S) would change that and is left out.
    history = [
        _boxed(1, 0.80, 90.0, "warm-up"),
        _boxed(2, 0.90, 70.0),
        _boxed(3, 0.92, 60.0),
        _boxed(4, 0.95, 50.0),
    ]
    assert s_rank_correlation(history) == pytest.approx(-1.0)
    assert s_rank_correlation(history[:3]) is None  # 2 selectable epochs
    assert s_rank_correlation([_row(epoch, 0.3) for epoch in (1, 2, 3)]) is None  # no boxes


def test_validation_selection_gap_is_best_selectable_minus_selected_on_validation_boxes() -> None:
    history = [
        _boxed(1, 0.80, 95.0, "warm-up"),  # excluded: never the best
        _boxed(2, 0.90, 72.0),
        _boxed(3, 0.95, 60.0),
        _boxed(4, 0.91, 72.0),
    ]
    assert validation_best_epoch(history) == 2  # ties: the earliest
    assert validation_selection_gap(history, 3) == pytest.approx(12.0)
    assert validation_selection_gap(history, 2) == 0.0
    assert validation_selection_gap(history, 1) is None  # a fallback pick is not selectable
    assert validation_selection_gap([_row(1, 0.3), _row(2, 0.4)], 2) is None  # no boxes


def test_selection_misses_boxes_warns_above_five_points_and_tags_the_numbers() -> None:
    assert MAX_VALIDATION_SELECTION_GAP == 5.0
    history = [_boxed(4, 0.90, 80.0), _boxed(5, 0.93, 74.0), _boxed(6, 0.95, 66.0)]
    missed = diagnose(95.0, 10, history, 6)  # max-S picks epoch 6: 14 points behind epoch 4
    assert missed.selection_misses_boxes and missed.flagged
    assert missed.validation_best_epoch == 4
    assert missed.validation_selection_gap == pytest.approx(14.0)
    assert missed.s_rank_correlation == pytest.approx(-1.0)
    [warning] = missed.warnings()
    assert "epoch 4 localizes 14.0 points better than the selected epoch 6" in warning
    assert "rho -1.00" in warning
    assert missed.summary().endswith("WARN: selection_misses_boxes")
    tags = missed.tags()
    assert tags["diagnostic.selection_misses_boxes"] == "true"
    assert tags["diagnostic.validation_selection_gap"] == "14.00"
    assert tags["diagnostic.s_rank_correlation"] == "-1.000"
    assert Diagnostics.from_dict(missed.to_dict()) == missed
    # 5 points exactly is within the tolerance; so is picking the best epoch itself.
    at_bound = diagnose(95.0, 10, [_boxed(4, 0.9, 80.0), _boxed(5, 0.95, 75.0)], 5)
    assert at_bound.validation_selection_gap == 5.0 and at_bound.selection_misses_boxes is False
    assert not diagnose(95.0, 10, history, 4).flagged


def test_a_diagnostics_record_written_before_the_fourth_flag_still_loads() -> None:
    old = diagnose(95.0, 10, [_row(1, 0.3)], 1).to_dict()
    for name in ("validation_best_epoch", "validation_selection_gap", "s_rank_correlation"):
        old.pop(name)
    old.pop("selection_misses_boxes")
    loaded = Diagnostics.from_dict(old)
    assert loaded.selection_misses_boxes is None and not loaded.flagged


def test_unknown_inputs_give_unknown_flags_not_warnings() -> None:
    diagnostics = diagnose(None, None, [], None)
    assert diagnostics.warnings() == []
    assert set(diagnostics.tags().values()) == {"unknown"}


def _summary(name: str, history: list[dict], selected: int, classifier: str) -> TrialSummary:
    return TrialSummary(
        trial_id=name,
        row="full",
        params={},
        status="COMPLETE",
        epochs=len(history),
        epochs_planned=len(history),
        selected_epoch=selected,
        selected_s_score=0.5,
        objective=0.5,
        selected_checkpoint=None,
        excluded_epochs=[r["epoch"] for r in history if r["excluded_reason"]],
        path="",
        classifier=classifier,
        history=history,
    )


def test_study_summary_names_each_f_once_and_each_flagged_trial_and_tags_its_run() -> None:
    good = _summary("a", [_row(1, 0.3)], 1, "f1")
    degenerate = _summary("b", [_row(1, 0.95, "degenerate")], 1, "f1")
    for summary in (good, degenerate):
        summary.diagnostics = trial_diagnostics(summary, 43.0, 10).to_dict()
    lines = format_diagnostics([good, degenerate])
    f_lines = [line for line in lines if line.startswith("  f f1")]
    assert len(f_lines) == 1 and "WEAK" in f_lines[0] and "2 trial(s)" in f_lines[0]
    assert [line for line in lines if "every epoch was degenerate" in line] == [
        f"  full_b: {trial_diagnostics(degenerate, 43.0, 10).warnings()[1]}"
    ]
    assert _run_tags(degenerate)["diagnostic.all_degenerate"] == "true"
    assert _run_tags(good)["diagnostic.all_degenerate"] == "false"
    assert _run_tags(good)["diagnostic.f_weak"] == "true"
