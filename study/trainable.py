"""The Ray Tune trainable of a mask trial: a thin adapter around :func:`wsol.loop.train_mask`.

Each epoch the g loop's report becomes ``tune.report(result, checkpoint=...)``: the
result is that epoch's history row plus the selection so far and the trial's objective;
the checkpoint folder holds ``mask.pt`` (g's weights, what evaluation scores),
``resume.pt`` (what a retry resumes from with ``mask.pt``; dropped once superseded),
``selection.json`` (the loop's history and selection up to that epoch: what the manifest
reads) and, at the last epoch, ``weight_maps.png``. The folder of epoch N is
``checkpoint_00000N``. Nothing here re-derives the selection.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from study import storage
from study.names import WEIGHT_MAPS_FILE
from study.spec import DEFAULT_ROW, Study, TrialSpec

#: The Tune config key of a trial's ablation row (the other keys are search dimensions).
ROW_KEY = "row"
#: In each checkpoint folder: the loop's history and selection up to that epoch.
CHECKPOINT_SELECTION = "selection.json"


def staging_dir() -> str | None:
    """Where a checkpoint is written before Tune copies it to storage: RAM (/dev/shm)
    where the node has it, so each epoch's ~170 MB is written to disk once, not twice."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    return None


def trial_params(tune_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(row, search-space params) of a trial's Tune config."""
    params = {key: value for key, value in tune_config.items() if key != ROW_KEY}
    return tune_config.get(ROW_KEY, DEFAULT_ROW), params


def cap_gpu_memory(gpu_fraction: float) -> None:
    """Ray's fractional GPUs are logical only: cap this process's CUDA allocations to
    its share, so trials packed on one GPU cannot push each other out of memory."""
    import torch

    if 0 < gpu_fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_fraction, 0)


def placement() -> dict[str, Any]:
    """Where this process runs: Ray node, GPU ids, pid, and torch's thread count (Ray
    sets OMP_NUM_THREADS to the task's CPU share, so torch computes on that share)."""
    import torch

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(gpu) for gpu in ray.get_gpu_ids()),
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
    }


@dataclass
class TrialContext:
    """What every trial of a study shares: the validated study, the driver's working
    directory (relative paths resolve against it) and where each f is stored."""

    study: Study
    cwd: str
    classifier_locations: dict[str, str] = field(default_factory=dict)

    def trial(self, tune_config: dict[str, Any]) -> TrialSpec:
        row, params = trial_params(tune_config)
        return self.study.trial(row, params, Path(self.cwd))


def read_checkpoint_selection(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    """The ``selection.json`` of a trial checkpoint: ``epoch``, ``history``, ``selection``."""
    location = storage.uri(checkpoint.filesystem, f"{checkpoint.path}/{CHECKPOINT_SELECTION}")
    return json.loads(storage.read_text(location))


def align_checkpoint_index(epoch: int) -> None:
    """Make the next reported checkpoint's folder ``checkpoint_<epoch:06d>``: Ray numbers
    checkpoint folders by a running count from 0, so epoch 6 would land in
    checkpoint_000005. Ray advances the index by one before it persists a checkpoint;
    setting it here on every report keeps the name right after a retry or a resume too."""
    tune.get_context().get_storage().current_checkpoint_index = epoch - 1


def mask_trial(tune_config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune function trainable: train g for one trial; after a failure Tune restarts
    it and it continues from ``tune.get_checkpoint()``."""
    from wsol.checkpoint import load_checkpoint_folder, load_classifier
    from wsol.compute import resolve_device
    from wsol.data import WsolDataset, build_transform, read_training_splits
    from wsol.local_run import tracked_validation_images
    from wsol.loop import train_mask
    from wsol.selection import degenerate_streak
    from wsol.viz import weight_map_evolution

    trial = context.trial(tune_config)
    config = trial.run_config
    cap_gpu_memory(context.study.resources.gpu)
    device = resolve_device(config.device)
    with storage.local_copy(context.classifier_locations[trial.classifier_key]) as local:
        classifier, _ = load_classifier(local, device)
    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = load_checkpoint_folder(Path(directory))

    splits = read_training_splits(config.data)  # train + validation; never the test split
    val_set = WsolDataset(splits.val, build_transform(config.data, False), config.seed)
    images, gt_boxes = tracked_validation_images(config, val_set, config.selection.num_visualized)
    trial_selection = context.study.trial_selection
    where = placement()
    staging = staging_dir()

    def on_epoch(report, save) -> None:
        selection = report.selection
        selected = next(row for row in report.history if row["epoch"] == selection.epoch)
        result = {
            **report.history[-1],
            "selected_epoch": selection.epoch,
            "selected_val_s_score": selection.s_score,
            # What early termination reads (study.scheduling): label-free, the loop's own.
            "selected_selection_score": selected["selection_score"],
            "excluded_epochs": len(selection.excluded),
            "degenerate_streak": degenerate_streak(report.history),
            "objective": trial_selection.objective(report.history, selection.epoch),
            "row": trial.row,
            **where,
        }
        with tempfile.TemporaryDirectory(prefix="wsol-checkpoint-", dir=staging) as directory:
            folder = Path(directory)
            save.folder(folder, context.study.kept_weights_precision)
            (folder / CHECKPOINT_SELECTION).write_text(
                json.dumps(
                    {
                        "epoch": report.epoch,
                        "history": list(report.history),
                        "selection": selection.to_dict(),
                    }
                )
            )
            if report.epoch == config.mask.epochs and images:
                weight_map_evolution(
                    folder / WEIGHT_MAPS_FILE,
                    images,
                    gt_boxes,
                    list(report.visuals),
                    selection.epoch,
                    excluded_epochs=list(selection.excluded),
                    title=f"{config.name} ({tune.get_context().get_trial_id()})",
                )
            align_checkpoint_index(report.epoch)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))

    train_mask(config, classifier, splits, on_epoch, resume_state=resume_state)
