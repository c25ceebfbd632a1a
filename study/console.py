"""What a study prints while it runs: one line per trial epoch, in a researcher's terms.

Ray Tune's own progress output (its trial table, result boxes and TensorBoard hint) is
silenced by the runner; :class:`ConsoleProgress` prints instead, from the results the
trainable reports (study.trainable), for example::

    full_984d0_00000  epoch  3/10  S 0.8123  selected epoch 2 (S 0.8500)  excluded 1/3
        objective 0.8500
    best so far: full_984d0_00000, objective 0.8500 = the S of its selected epoch

The objective is the trial-selection metric at the trial's selected epoch; for
``val_s_score`` it is the guarded S (:func:`wsol.selection.selection_score`): S for a
selectable epoch, S - 1 (below 0) while every epoch so far is excluded (degenerate, or
a warm-up epoch before ``selection.min_epoch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from study.names import trial_name

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

Log = Callable[[str], None]


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def objective_meaning(metric: str, result: Mapping[str, Any]) -> str:
    """Words for a trial's objective, so a 0 beside "S 1.0" is not a puzzle: for
    ``val_s_score`` the objective is the guarded S, which is S - 1 while every epoch so
    far is excluded (its selected epoch is then plain max-S, not selectable)."""
    if metric != "val_s_score":
        return f"{metric} at its selected epoch"
    if result.get("objective") != result.get("selected_val_s_score"):
        return "S - 1: every epoch so far is excluded (degenerate or warm-up), none selectable yet"
    return "the S of its selected epoch"


def epoch_line(name: str, result: Mapping[str, Any], epochs_planned: int | None) -> str:
    """One trial epoch as the console shows it (see the module docstring)."""
    epoch = result.get("epoch", result.get("training_iteration"))
    width = len(str(epochs_planned)) if epochs_planned else 1
    of = f"/{epochs_planned}" if epochs_planned else ""
    return (
        f"{name}  epoch {epoch:>{width}}{of}  S {_number(result.get('val_s_score'))}"
        f"  selected epoch {result.get('selected_epoch', '-')}"
        f" (S {_number(result.get('selected_val_s_score'))})"
        f"  excluded {result.get('excluded_epochs', '-')}/{epoch}"
        f"  objective {_number(result.get('objective'))}"
    )


class ConsoleProgress(Callback):
    """Driver-side Ray Tune callback printing one line per trial epoch, trial starts and
    ends, and the best trial so far whenever it changes (by the trial-selection metric,
    ``mode`` max or min)."""

    def __init__(
        self,
        metric: str,
        mode: str,
        epochs_of: Callable[[dict[str, Any]], int | None],
        log: Log = print,
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.epochs_of = epochs_of  # Tune config -> planned g epochs of that trial
        self.log = log
        self._best: tuple[str, float] | None = None
        self._results: dict[str, dict[str, Any]] = {}  # trial name -> its last result

    def _name(self, trial: Trial) -> str:
        return trial_name(trial.config.get("row", "default"), trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        params = {k: v for k, v in trial.config.items() if k != "row"}
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        self.log(f"{self._name(trial)}  started" + (f" ({shown})" if shown else ""))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ):
        name = self._name(trial)
        self.log(epoch_line(name, result, self._planned(trial)))
        objective = result.get("objective")
        if not isinstance(objective, int | float) or not math.isfinite(objective):
            return
        self._results[name] = dict(result)
        sign = 1.0 if self.mode == "max" else -1.0
        best = max(self._results, key=lambda n: sign * self._results[n]["objective"])
        value = self._results[best]["objective"]
        if self._best != (best, value):
            self._best = (best, value)
            self.log(
                f"best so far: {best}, objective {value:.4f} = "
                f"{objective_meaning(self.metric, self._results[best])}"
            )

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        result = trial.last_result or {}
        self.log(
            f"{self._name(trial)}  finished after {result.get('epoch', '-')} epochs: selected "
            f"epoch {result.get('selected_epoch', '-')} "
            f"(S {_number(result.get('selected_val_s_score'))}), objective "
            f"{_number(result.get('objective'))}"
        )

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        self.log(f"{self._name(trial)}  failed; retrying from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        self.log(f"{self._name(trial)}  FAILED (no retries left)")

    def _planned(self, trial: Trial) -> int | None:
        try:
            return self.epochs_of(dict(trial.config))
        except Exception:  # a display detail must never stop a study
            return None
