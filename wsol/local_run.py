"""Single-run local mode: train f (or load it), train g, write a run folder.

The run folder::

    config.yaml              the resolved config
    classifier/classifier.pt f (unless config.classifier.checkpoint points at one)
    classifier/metrics.jsonl f's per-epoch validation metrics
    metrics.jsonl            g's per-epoch validation metrics (val_s_score first)
    selected.pt              g at the selected epoch (max S among selectable epochs)
    last.pt                  g at the last finished epoch (what --resume continues from)
    selection.json           the selected epoch, its S-score, excluded epochs and why
    diagnostics.json         f weak? every epoch degenerate? boxes cover the image?
                             (wsol.diagnostics; validation numbers only)
    weight_maps.png          g's maps on fixed validation images over epochs (Fig. 4)

Never reads the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsol.checkpoint import (
    CLASSIFIER_CHECKPOINT,
    load_classifier,
    load_mask_state,
    save_classifier,
    stored_config,
)
from wsol.compute import resolve_device
from wsol.config import (
    ConfigError,
    RunConfig,
    classifier_identity,
    classifier_key,
    config_to_yaml,
    flatten_config,
    load_config,
)
from wsol.data import WsolDataset, build_transform, read_training_splits
from wsol.diagnostics import Diagnostics, diagnose, final_f_top1
from wsol.files import write_json_atomically, write_jsonl_atomically, write_text_atomically
from wsol.localize import Box
from wsol.loop import EpochReport, GCheckpointer, SaveCheckpoint, train_classifier, train_mask
from wsol.selection import Selection
from wsol.viz import weight_map_evolution

Log = Callable[[str], None]


@dataclass
class LocalRunResult:
    out_dir: Path
    selection: Selection
    history: list[dict[str, Any]]
    classifier_path: Path
    diagnostics: Diagnostics | None = None


def _format_metrics(metrics: dict[str, float]) -> str:
    parts = [f"S={metrics['val_s_score']:.3f}"]
    if "val_gt_known_loc" in metrics:
        parts.append(f"val GT-known loc={metrics['val_gt_known_loc']:.1f}%")
    parts.append(f"mask mean={metrics['val_mask_mean']:.3f}")
    parts.append(f"box={metrics['val_box_fraction']:.0%} of image")
    parts.append(f"loss={metrics['train_loss']:.4f}")
    return "  ".join(parts)


def tracked_validation_images(
    config: RunConfig, dataset: WsolDataset, count: int
) -> tuple[list[np.ndarray], list[list[Box]]]:
    """The first ``count`` validation crops (uint8 HxWx3) and their ground-truth boxes."""
    images, boxes = [], []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        images.append((item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        boxes.append([tuple(int(v) for v in box) for box in item["boxes"].tolist()])
    return images, boxes


#: What ``--resume`` may change: g may train longer, and placement may change (the same
#: numbers wherever they are computed, up to the order of float sums on another device).
RESUMABLE_CHANGES = ("mask.epochs", "device", "data.num_workers", "data.cache", "data.cache_dir")


def check_resume_config(stored: RunConfig, config: RunConfig, source: Path) -> None:
    """Refuse to resume a run with a config other than the one it was trained with,
    naming each differing field; only :data:`RESUMABLE_CHANGES` may differ, and
    ``mask.epochs`` only grow."""
    before, after = flatten_config(stored), flatten_config(config)
    changed = sorted(
        key
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key) and key not in RESUMABLE_CHANGES
    )
    if after["mask.epochs"] < before["mask.epochs"]:
        changed.insert(0, "mask.epochs")
    if changed:
        lines = "\n".join(f"  {key}: {before.get(key)!r} -> {after.get(key)!r}" for key in changed)
        raise ConfigError(
            f"--resume continues the run trained with {source}, but the config differs:\n"
            f"{lines}\nOnly mask.epochs may grow on --resume (and device, data.num_workers, "
            "data.cache, data.cache_dir may change); start a new run with --out for the rest"
        )


def run_local(
    config: RunConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Log = print,
) -> LocalRunResult:
    """Train f then g as ``config`` says; write the run folder described above."""
    out_dir = Path(out_dir)
    last_path = out_dir / "last.pt"
    if out_dir.exists() and any(out_dir.iterdir()) and not resume:
        raise FileExistsError(
            f"run folder {out_dir} is not empty; pass --resume to continue it or choose --out"
        )
    stored = out_dir / "config.yaml"
    if resume and stored.is_file():
        check_resume_config(load_config(stored), config, stored)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(stored, config_to_yaml(config))
    device = resolve_device(config.device)
    splits = read_training_splits(config.data)
    log(
        f"data: {config.data.root} ({len(splits.class_names)} classes, "
        f"{len(splits.train)} train / {len(splits.val)} validation images; test split not read)"
    )
    log(f"device: {device}")

    classifier_path = _classifier(config, splits, out_dir, progress, log)
    classifier, f_state = load_classifier(classifier_path, device)
    f_top1, num_classes = final_f_top1(f_state.get("history", [])), len(f_state["class_names"])
    f_check = diagnose(f_top1, num_classes, [], None)
    if f_check.f_weak:
        log(f"warning: {f_check.warnings()[0]}")

    resume_state = None
    metrics_path = out_dir / "metrics.jsonl"
    if resume and last_path.is_file():
        resume_state = load_mask_state(last_path)
        log(f"resuming g from {last_path} after epoch {resume_state['epoch']}")
    write_jsonl_atomically(metrics_path, list((resume_state or {}).get("history", [])))

    started = time.perf_counter()

    def on_epoch(report: EpochReport, save: GCheckpointer) -> None:
        write_jsonl_atomically(metrics_path, list(report.history))
        marker = ""
        if report.is_best:
            # Before last.pt: a resume rebuilds the selection from last.pt's history, which
            # must never name an epoch whose selected.pt was not written. Weights only: it
            # is scored, never resumed from.
            save.weights(out_dir / "selected.pt")
            marker = "  <- best so far"
        save.full(last_path)
        assert report.selection is not None
        write_json_atomically(out_dir / "selection.json", report.selection.to_dict())
        note = f"  [{report.excluded_reason}]" if report.excluded_reason else ""
        log(
            f"g epoch {report.epoch:>3}/{config.mask.epochs}  {_format_metrics(report.metrics)}"
            f"  ({time.perf_counter() - started:.0f}s){marker}{note}"
        )

    log(
        f"training g ({config.mask.encoder}, lambda={config.mask.lam}, reg={config.mask.reg}, "
        f"{config.mask.epochs} epochs)"
    )
    result = train_mask(
        config, classifier, splits, on_epoch, resume_state=resume_state, progress=progress
    )
    selection = result.selection
    write_json_atomically(out_dir / "selection.json", selection.to_dict())
    val_set = WsolDataset(splits.val, build_transform(config.data, False), config.seed)
    images, gt_boxes = tracked_validation_images(config, val_set, config.selection.num_visualized)
    if images:
        weight_map_evolution(
            out_dir / "weight_maps.png",
            images,
            gt_boxes,
            result.visuals,
            selection.epoch,
            excluded_epochs=list(selection.excluded),
            title=f"{config.name}: weight maps on validation images",
        )
    log(selection.describe())
    diagnostics = diagnose(f_top1, num_classes, result.history, selection.epoch)
    write_json_atomically(out_dir / "diagnostics.json", diagnostics.to_dict())
    log(f"diagnostics (validation only): {diagnostics.summary()}")
    for warning in diagnostics.warnings():
        log(f"warning: {warning}")
    log(f"run folder: {out_dir}")
    return LocalRunResult(out_dir, selection, result.history, classifier_path, diagnostics)


def _classifier(config: RunConfig, splits: Any, out_dir: Path, progress: bool, log: Log) -> Path:
    if config.classifier.checkpoint is not None:
        log(f"classifier: loading {config.classifier.checkpoint}")
        return Path(config.classifier.checkpoint)
    path = out_dir / "classifier" / CLASSIFIER_CHECKPOINT
    if path.is_file():
        _, state = load_classifier(path)
        trained_with = stored_config(state)
        if classifier_key(trained_with) != classifier_key(config):
            before, after = classifier_identity(trained_with), classifier_identity(config)
            changed = sorted(
                f"{section}.{key}"
                for section in ("data", "classifier")
                for key in before[section].keys() | after[section].keys()
                if before[section].get(key) != after[section].get(key)
            )
            what = ", ".join(changed) or "the method or precision"
            raise ConfigError(
                f"{path} was trained with other settings of f ({what}); it cannot serve "
                "this config. Use a new --out"
            )
        log(f"classifier: reusing {path}")
        return path
    metrics_path = path.parent / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomically(metrics_path, [])
    rows: list[dict[str, Any]] = []
    cfg = config.classifier
    log(f"training f ({cfg.backbone}, {cfg.epochs} epochs)")
    started = time.perf_counter()

    def on_epoch(report: EpochReport, save: SaveCheckpoint) -> None:
        rows.append({"epoch": report.epoch, **report.metrics})
        write_jsonl_atomically(metrics_path, rows)
        metrics = report.metrics
        log(
            f"f epoch {report.epoch:>3}/{cfg.epochs}  val top-1={metrics['val_top1_cls']:.1f}%  "
            f"val loss={metrics['val_loss']:.3f}  train loss={metrics['train_loss']:.3f}  "
            f"({time.perf_counter() - started:.0f}s)"
        )

    classifier, history = train_classifier(config, splits, on_epoch, progress=progress)
    save_classifier(path, classifier, config, splits.class_names, history)
    return path
