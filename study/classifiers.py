"""Stage 1 of a study: every distinct f it needs, trained once, content-addressed.

f of a trial config lives at ``<storage>/classifiers/<classifier key>/classifier.pt``
(:func:`study.spec.classifier_key`), shared by every study with the same storage, so a
seed sweep of g or a second study reuses it. Each missing f trains as a Ray task (on any
node, with ``classifier_resources``); the driver shows each one's per-epoch progress
from the ``metrics.jsonl`` the task writes beside it. ``classifier.pt`` is uploaded
last: its presence means "complete".
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from study import storage
from study.errors import StudyError
from study.spec import Study, classifier_key, resolve_paths
from study.trainable import cap_gpu_memory
from wsol.checkpoint import CLASSIFIER_CHECKPOINT
from wsol.config import RunConfig

Log = Callable[[str], None]


def classifier_location(study: Study, config: RunConfig) -> str:
    """Where f of ``config`` lives: its own checkpoint file, or the content-addressed
    ``<storage>/classifiers/<key>/classifier.pt``."""
    if config.classifier.checkpoint is not None:
        return str(config.classifier.checkpoint)
    return storage.join(
        study.storage_path(), "classifiers", classifier_key(config), CLASSIFIER_CHECKPOINT
    )


@ray.remote
def _train_classifier_task(config_json: str, location: str) -> str:
    """Train one f and store it at ``location`` (a Ray task: runs on any node)."""
    import torch

    from wsol.checkpoint import save_classifier
    from wsol.config import config_to_yaml
    from wsol.data import read_training_splits
    from wsol.loop import train_classifier

    config = RunConfig.model_validate_json(config_json)
    cap_gpu_memory(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    splits = read_training_splits(config.data)
    folder = location.rsplit("/", 1)[0]
    storage.write_text(storage.join(folder, "config.yaml"), config_to_yaml(config))
    rows: list[dict[str, Any]] = []

    def on_epoch(report, save) -> None:
        rows.append(
            {
                "epoch": report.epoch,
                "epochs": config.classifier.epochs,
                **report.metrics,
                # Ray sets OMP_NUM_THREADS to classifier_resources.cpu: the share f trains on.
                "torch_threads": torch.get_num_threads(),
            }
        )
        # The driver reads this to show progress (a task's prints do not reach it).
        storage.write_text(
            storage.join(folder, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in rows)
        )

    classifier, history = train_classifier(config, splits, on_epoch)
    with tempfile.TemporaryDirectory() as directory:
        local = Path(directory) / CLASSIFIER_CHECKPOINT
        save_classifier(local, classifier, config, splits.class_names, history)
        storage.upload_file(local, location)  # last: its presence means "complete"
    last = rows[-1] if rows else {}
    return f"val top-1 {last.get('val_top1_cls', float('nan')):.1f}%"


def train_classifiers(study: Study, cwd: Path, log: Log) -> dict[str, str]:
    """Stage 1: train every distinct f the study needs that storage does not hold yet.

    Returns classifier key -> location of its ``classifier.pt``.
    """
    locations: dict[str, str] = {}
    pending: dict[ray.ObjectRef, tuple[str, str]] = {}
    resources = study.f_resources
    for config in study.classifier_configs():
        key = classifier_key(config)
        location = classifier_location(study, config)
        locations[key] = location
        if config.classifier.checkpoint is not None:
            resolved = resolve_paths(config, cwd).classifier.checkpoint
            locations[key] = str(resolved)
            if not storage.exists(str(resolved)):
                raise StudyError(f"pre-flight: classifier.checkpoint {resolved} does not exist")
            log(f"classifier {key}: given checkpoint {resolved}")
            continue
        if storage.exists(location):
            log(f"classifier {key}: reusing {location}")
            continue
        config_json = resolve_paths(config, cwd).model_dump_json()
        task = _train_classifier_task.options(
            num_cpus=resources.cpu, num_gpus=resources.gpu, max_retries=study.max_failures
        )
        pending[task.remote(config_json, location)] = (key, config.classifier.backbone)
        log(f"classifier {key}: training {config.classifier.backbone} -> {location}")
    started = time.perf_counter()
    shown: dict[str, int] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
        for key, _backbone in pending.values():
            _show_classifier_progress(key, locations[key], shown, started, log)
        if not done:
            continue
        key, backbone = pending.pop(done[0])
        try:
            summary = ray.get(done[0])
        except ray.exceptions.RayError as error:
            raise StudyError(f"classifier {key} ({backbone}) failed: {error}") from None
        log(
            f"classifier {key}: done, {summary} ({time.perf_counter() - started:.0f}s; "
            f"{len(pending)} still training)"
        )
    return locations


def _show_classifier_progress(
    key: str, location: str, shown: dict[str, int], started: float, log: Log
) -> None:
    """Log the epochs of f ``key`` finished since the last call (read from storage)."""
    metrics = storage.join(location.rsplit("/", 1)[0], "metrics.jsonl")
    try:
        rows = [json.loads(line) for line in storage.read_text(metrics).splitlines()]
    except (FileNotFoundError, OSError, ValueError):
        return
    for row in rows[shown.get(key, 0) :]:
        top1 = row.get("val_top1_cls")
        log(
            f"classifier {key}: epoch {row['epoch']}/{row.get('epochs', '?')}"
            + (f"  val top-1 {top1:.1f}%" if top1 is not None else "")
            + f"  ({time.perf_counter() - started:.0f}s)"
        )
    shown[key] = len(rows)
