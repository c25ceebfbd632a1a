"""Which of a trial's checkpoints are kept: the best ``keep`` by the selection's own
ordering (the epoch the trial last reported as selected, then
:func:`wsol.selection.epoch_rank`), plus what a resume needs.

Kept checkpoints are lean: once superseded, a kept folder loses its ``resume.pt``
(optimizer state and tracked maps, about two thirds of its bytes) and holds g's weights
only (``mask.pt``), all evaluation reads; only the latest folder keeps ``resume.pt``.

Not Ray's ``CheckpointConfig(num_to_keep=...)``: it deletes a checkpoint the moment it
falls out of the top k, while the experiment state saved for ``--resume`` may still name
it as the trial's latest (we hit this: after a driver kill, the resumed trial failed
with "Could not recover from checkpoint as it does not exist on storage anymore").
Here a checkpoint is deleted only once a newer one has superseded it for ``grace_s``,
longer than the state-save period; :meth:`CheckpointRetention.finalize` prunes the rest
after the run, when the saved state marks the trials finished.

Each checkpoint is ranked by the result it was reported with (its ``epoch``,
``val_s_score`` and ``excluded_reason``, the history row of that epoch), read from
Ray's public API: ``trial.last_result`` when it is saved, ``Result.best_checkpoints``
after the run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

from ray import tune

from study import storage
from wsol.checkpoint import RESUME_STATE
from wsol.selection import epoch_rank

# How often the driver saves Tune's experiment state (what --resume restores), and how long
# a superseded checkpoint is kept after that, so the saved state never names a deleted one.
STATE_SAVE_PERIOD_S = 10
RETENTION_GRACE_S = 3 * STATE_SAVE_PERIOD_S


def kept_paths(
    checkpoints: Iterable[tuple[tune.Checkpoint, dict[str, Any]]], keep: int | None
) -> set[str]:
    """The paths of the ``keep`` best of ``checkpoints`` ((checkpoint, the result it was
    reported with)): the one of the epoch the latest result names ``selected_epoch``
    first, then by :func:`wsol.selection.epoch_rank`; all of them for None.

    The selected epoch comes from the trial's whole history (a tolerance's reference is
    the max-S epoch, which need not be kept), never re-derived from the kept few."""
    items = list(checkpoints)
    if not items:
        return set()
    selected = max(items, key=lambda item: item[1]["epoch"])[1].get("selected_epoch")
    ranked = sorted(
        items,
        key=lambda item: (item[1]["epoch"] == selected, epoch_rank(item[1])),
        reverse=True,
    )
    return {checkpoint.path for checkpoint, _ in ranked[:keep]}


def existing_checkpoints(result: tune.Result) -> list[tuple[tune.Checkpoint, dict[str, Any]]]:
    """``result.best_checkpoints`` minus those :class:`CheckpointRetention` deleted."""
    return [
        (checkpoint, metrics)
        for checkpoint, metrics in result.best_checkpoints or []
        if checkpoint.filesystem.get_file_info(checkpoint.path).type
        != storage.pafs.FileType.NotFound
    ]


class CheckpointRetention(tune.Callback):
    """Keep each trial's ``keep`` best checkpoints (every one for None) plus its latest;
    delete the rest; strip ``resume.pt`` from kept ones once superseded (see the module
    docstring)."""

    def __init__(self, keep: int | None, grace_s: float = RETENTION_GRACE_S) -> None:
        self.keep = keep
        self.grace_s = grace_s
        # What this driver saw reported, per trial: checkpoint path -> (checkpoint, result).
        # Lost with the driver; finalize() then prunes from Ray's record of the trial.
        self._reported: dict[str, dict[str, tuple[tune.Checkpoint, dict[str, Any]]]] = {}
        self._superseded: dict[str, float] = {}  # checkpoint path -> when superseded
        self._deleted: set[str] = set()
        self._stripped: set[str] = set()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        # Tune processes a result before the checkpoint reported with it.
        reported = self._reported.setdefault(trial.trial_id, {})
        now = time.monotonic()
        for path in reported:
            self._superseded.setdefault(path, now)
        latest = max(reported.values(), key=lambda item: item[1]["epoch"], default=None)
        reported[checkpoint.path] = (checkpoint, dict(trial.last_result))
        kept = kept_paths(reported.values(), self.keep)
        resumable = {checkpoint.path} | ({latest[0].path} if latest is not None else set())
        for path, (old, _) in list(reported.items()):
            superseded = self._superseded.get(path)
            if path in resumable or superseded is None or now - superseded < self.grace_s:
                continue
            if path in kept:
                self._strip(old)
            else:
                self._delete(old)
                del reported[path]

    def finalize(self, results: tune.ResultGrid) -> None:
        """After the run: keep only the ``keep`` best and the latest of every trial."""
        for result in results:
            checkpoints = existing_checkpoints(result)
            kept = kept_paths(checkpoints, self.keep)
            latest = result.checkpoint.path if result.checkpoint is not None else None
            for checkpoint, _ in checkpoints:
                if checkpoint.path == latest:
                    continue
                if checkpoint.path in kept:
                    self._strip(checkpoint)
                else:
                    self._delete(checkpoint)

    def _strip(self, checkpoint: tune.Checkpoint) -> None:
        """Drop what only a resume needs from a kept, superseded checkpoint."""
        if checkpoint.path in self._stripped:
            return
        self._stripped.add(checkpoint.path)
        with contextlib.suppress(FileNotFoundError, OSError):
            checkpoint.filesystem.delete_file(f"{checkpoint.path}/{RESUME_STATE}")

    def _delete(self, checkpoint: tune.Checkpoint) -> None:
        if checkpoint.path in self._deleted:
            return
        self._deleted.add(checkpoint.path)
        with contextlib.suppress(FileNotFoundError):
            checkpoint.filesystem.delete_dir(checkpoint.path)
