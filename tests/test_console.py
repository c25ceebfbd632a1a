"""study.console: what a study prints per trial epoch, and the best trial so far."""

from __future__ import annotations

from types import SimpleNamespace

from study.console import ConsoleProgress, epoch_line, objective_meaning


def _trial(row: str, trial_id: str, last_result: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        config={"row": row, "seed": 0}, trial_id=trial_id, last_result=last_result or {}
    )


def _result(epoch: int, s: float, selected: int, selected_s: float, objective: float) -> dict:
    return {
        "epoch": epoch,
        "val_s_score": s,
        "selected_epoch": selected,
        "selected_val_s_score": selected_s,
        "excluded_epochs": 1,
        "objective": objective,
    }


def test_an_epoch_line_shows_epoch_s_selection_excluded_and_objective() -> None:
    line = epoch_line("full_abc_00000", _result(3, 0.8123, 2, 0.85, 0.85), epochs_planned=10)
    assert line == (
        "full_abc_00000  epoch  3/10  S 0.8123  selected epoch 2 (S 0.8500)  excluded 1/3"
        "  objective 0.8500"
    )


def test_the_objective_of_an_all_degenerate_trial_is_explained_not_left_as_zero() -> None:
    degenerate = _result(2, 1.0, 1, 1.0, 0.0)  # guarded S = S - 1
    assert "every epoch so far is excluded" in objective_meaning("val_s_score", degenerate)
    selectable = _result(2, 0.7, 2, 0.7, 0.7)
    assert objective_meaning("val_s_score", selectable) == "the S of its selected epoch"
    assert objective_meaning("val_gt_known_loc", selectable).startswith("val_gt_known_loc")


def test_best_so_far_is_printed_when_it_changes_by_the_selection_mode() -> None:
    printed: list[str] = []
    console = ConsoleProgress("val_s_score", "max", lambda config: 3, log=printed.append)
    full, no_reg = _trial("full", "t_00000"), _trial("no-reg", "t_00001")

    console.on_trial_start(0, [], full)
    console.on_trial_result(0, [], full, _result(1, 1.0, 1, 1.0, 0.0))
    console.on_trial_result(0, [], no_reg, _result(1, 0.6, 1, 0.6, 0.6))
    console.on_trial_result(0, [], full, _result(2, 0.5, 1, 1.0, 0.0))  # best unchanged

    assert printed[0] == "full_t_00000  started (seed=0)"
    best = [line for line in printed if line.startswith("best so far")]
    assert best == [
        "best so far: full_t_00000, objective 0.0000 = S - 1: every epoch so far is "
        "excluded (degenerate or warm-up), none selectable yet",
        "best so far: no-reg_t_00001, objective 0.6000 = the S of its selected epoch",
    ]
    assert printed[-1].startswith("full_t_00000  epoch 2/3  S 0.5000")


def test_a_planned_epoch_count_that_cannot_be_computed_never_stops_the_study() -> None:
    printed: list[str] = []

    def broken(config: dict) -> int:
        raise ValueError("bad config")

    console = ConsoleProgress("val_s_score", "min", broken, log=printed.append)
    console.on_trial_result(0, [], _trial("full", "t_00000"), _result(1, 0.4, 1, 0.4, 0.4))
    assert printed[0].startswith("full_t_00000  epoch 1  S 0.4000")
