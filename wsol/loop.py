"""The two training loops: f on image-level labels, then g against the frozen f.

Both call back once per epoch with an :class:`EpochReport` and a ``save(path)`` that
writes a checkpoint of that epoch; the single-run local mode and the Ray Tune trainable
are two such callbacks. The g loop owns the run's history (one row per epoch, the schema
of :mod:`wsol.selection`) and its selection: each report carries the selection so far
and says whether this epoch is the new best, so no callback re-derives either. The
loops never see the test split: they take :class:`~wsol.data.TrainingSplits`.

What differs between Method I and II lives in :mod:`wsol.methods`; these loops never
branch on the method.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wsol.checkpoint import (
    CheckpointError,
    WeightsPrecision,
    save_checkpoint_folder,
    save_classifier,
    save_mask_state,
    save_mask_weights,
)
from wsol.compute import (
    PER_STEP_SCHEDULES,
    LrSchedule,
    Runtime,
    make_lr_schedule,
    make_optimizer,
    resolve_device,
    runtime_for,
    seed_everything,
)
from wsol.config import ConfigError, MaskConfig, RunConfig
from wsol.data import DatasetError, TrainingSplits, WsolDataset, make_dataset
from wsol.data.transforms import normalize
from wsol.loaders import make_eval_loader
from wsol.localize import Box
from wsol.methods import Method, build_mask_generator, method_of
from wsol.metrics import ValidationMapEvaluator
from wsol.models import MaskGenerator, freeze
from wsol.selection import Selection, exclusion_reason, select_epoch, selection_score

#: Tracked validation maps are stored at most this many pixels on a side.
VISUAL_MAX_SIDE = 96


@dataclass(frozen=True)
class EpochReport:
    """One epoch's outcome, handed to the epoch callback.

    ``metrics`` is ordered: for g the mean validation S-score (``val_s_score``) first.
    For g also: ``excluded_reason`` (set when our degenerate-epoch guard makes the epoch
    unselectable), ``selection`` (the selection over every epoch so far, this one
    included), ``history`` (every epoch's row so far, this one last) and ``visuals``
    (every epoch's tracked validation maps so far: ``{"epoch", "maps": (N,h,w) uint8,
    "boxes": their predicted boxes}``, this one last). Both are the loop's own record,
    read-only for the callback.
    """

    epoch: int
    metrics: dict[str, float]
    excluded_reason: str | None = None
    selection: Selection | None = None
    history: tuple[dict[str, Any], ...] = ()
    visuals: tuple[dict[str, Any], ...] = ()

    @property
    def selectable(self) -> bool:
        return self.excluded_reason is None

    @property
    def visual_maps(self) -> np.ndarray | None:
        """This epoch's tracked validation maps (N,h,w) uint8 (None for f)."""
        return self.visuals[-1]["maps"] if self.visuals else None

    @property
    def visual_boxes(self) -> list[Box]:
        """Their predicted boxes, in crop pixels."""
        return self.visuals[-1]["boxes"] if self.visuals else []

    @property
    def is_best(self) -> bool:
        """Whether this epoch is the selection so far (so its checkpoint is the one to keep)."""
        return self.selection is not None and self.selection.epoch == self.epoch


class GCheckpointer:
    """How a g epoch's callback saves that epoch: ``save(path)`` (or ``save.full``) writes
    everything a resume needs; ``save.weights(path, precision)`` only g's weights (a lean
    checkpoint to score); ``save.folder(folder, precision)`` a study trial's folder (both,
    split so the resume part can be dropped once superseded)."""

    def __init__(
        self,
        mask_generator: MaskGenerator,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        config: RunConfig,
        history: list[dict[str, Any]],
        visuals: list[dict[str, Any]],
    ) -> None:
        self._state = (mask_generator, optimizer, epoch, config, history, visuals)

    def __call__(self, path: Path) -> None:
        self.full(path)

    def full(self, path: Path) -> None:
        save_mask_state(path, *self._state)

    def weights(self, path: Path, precision: WeightsPrecision = "fp32") -> None:
        mask_generator, _, epoch, config, history, _ = self._state
        save_mask_weights(path, mask_generator, epoch, config, history, precision)

    def folder(self, folder: Path, precision: WeightsPrecision = "fp32") -> None:
        save_checkpoint_folder(folder, *self._state, precision=precision)


SaveCheckpoint = Callable[[Path], None]
EpochCallback = Callable[[EpochReport, SaveCheckpoint], None]


@dataclass
class MaskTrainingResult:
    history: list[dict[str, Any]]
    selection: Selection
    visuals: list[dict[str, Any]]


def _progress(iterable: Any, enabled: bool, description: str, total: int) -> Any:
    return tqdm(iterable, desc=description, total=total, leave=False, disable=not enabled)


# --------------------------------------------------------------------------- f


def train_classifier(
    config: RunConfig,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None = None,
    *,
    resume_state: dict[str, Any] | None = None,
    progress: bool = False,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train f as ``mask.method`` needs it; returns (frozen f, per-epoch metrics).

    Metrics each epoch: ``val_top1_cls`` (%), ``val_loss``, ``train_loss``, ``lr`` (at
    the epoch's first step). The paper: SGD, batch 16, lr 1e-3, wd 1e-4, lr/10 every 80
    epochs, 200 epochs; all from ``config.classifier``, whose ``seed`` alone seeds f's
    training and whose ``schedule`` picks the learning-rate schedule
    (:func:`wsol.compute.make_lr_schedule`). A non-finite training loss stops the run with
    an error naming the epoch, before anything is saved.

    Each epoch's ``save(path)`` writes a classifier.pt that also holds the optimizer's
    and the schedule's state and the epoch; passing it back loaded
    (:func:`wsol.checkpoint.load_classifier_state`) as ``resume_state`` continues after
    that epoch, as an uninterrupted run would on CPU (data order and augmentation are
    seeded per epoch).
    """
    cfg = config.classifier
    method = method_of(config, splits)
    device = resolve_device(config.device)
    runtime = runtime_for(config, device)
    seed_everything(cfg.seed, config.deterministic)
    classifier = runtime.module(method.build_f(cfg, len(splits.class_names)))
    optimizer = make_optimizer(
        classifier.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
    )
    train_set = make_dataset(splits.train, config.data, train=True, seed=cfg.seed)
    val_set = make_dataset(splits.val, config.data, train=False, seed=cfg.seed)
    # Per-step schedules need the run's step count up front; every epoch has as many.
    steps_per_epoch = (
        len(method.f_batches(train_set, 1, device)) if cfg.schedule in PER_STEP_SCHEDULES else 0
    )
    schedule = make_lr_schedule(
        optimizer,
        cfg.schedule,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        lr_step=cfg.lr_step,
        lr_gamma=cfg.lr_gamma,
    )
    history: list[dict[str, float]] = []
    start_epoch = 1
    if resume_state is not None:
        classifier.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        schedule.load_state_dict(resume_state["lr_scheduler"])
        history = list(resume_state["history"])
        start_epoch = resume_state["epoch"] + 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        classifier.train()
        loader = method.f_batches(train_set, epoch, device)
        if schedule.per_step and len(loader) != steps_per_epoch:
            raise RuntimeError(
                f"f's epoch {epoch} has {len(loader)} batches, epoch 1 had {steps_per_epoch}: "
                f"classifier.schedule={cfg.schedule} needs the same number every epoch"
            )
        lr = optimizer.param_groups[0]["lr"]
        # Summed on the device and read once per epoch: no host sync per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for batch in _progress(loader, progress, f"f epoch {epoch}/{cfg.epochs}", len(loader)):
            count, loss = method.f_step(classifier, optimizer, batch, runtime)
            schedule.after_step()
            loss_sum += loss.double() * count
            seen += count
        train_loss = loss_sum.item() / max(seen, 1)
        finite_weights = all(bool(torch.isfinite(p).all()) for p in classifier.parameters())
        if not (math.isfinite(train_loss) and finite_weights):
            what = f"training loss became {train_loss}" if finite_weights else "weights overflowed"
            raise FloatingPointError(
                f"f diverged in epoch {epoch}: its {what} (classifier.lr={cfg.lr:g}, "
                f"classifier.optimizer={cfg.optimizer}); nothing was saved"
            )
        schedule.after_epoch()
        metrics = {
            **method.f_validate(classifier, val_set, runtime),
            "train_loss": train_loss,
            "lr": lr,
        }
        history.append({"epoch": epoch, **metrics})
        if on_epoch is not None:

            def save(path: Path, _history: list = history, _epoch: int = epoch) -> None:
                save_classifier(
                    path,
                    classifier,
                    config,
                    splits.class_names,
                    _history,
                    training_state={
                        "optimizer": optimizer.state_dict(),
                        "lr_scheduler": schedule.state_dict(),
                        "epoch": _epoch,
                    },
                )

            on_epoch(EpochReport(epoch=epoch, metrics=metrics), save)
    return freeze(classifier), history


# --------------------------------------------------------------------------- g


def _thumbnail(score_map: np.ndarray) -> np.ndarray:
    height, width = score_map.shape
    scale = min(1.0, VISUAL_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        score_map = cv2.resize(score_map, size, interpolation=cv2.INTER_AREA)
    return (np.clip(score_map, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def validate_mask_generator(
    mask_generator: MaskGenerator,
    network: nn.Module,
    dataset: WsolDataset,
    config: RunConfig,
    runtime: Runtime,
    method: Method | None = None,
) -> tuple[dict[str, float], np.ndarray, list[Box]]:
    """One pass of g over the validation split (centre crops), under ``runtime``.

    Returns (metrics, maps of the first ``selection.num_visualized`` images as uint8,
    their predicted boxes). Metrics: ``val_s_score`` (mean Eq. 6) and
    ``val_s_score_se`` (its standard error over the images), the method's loss
    terms (``val_loss`` first), ``val_mask_mean``, ``val_box_fraction`` (mean inclusive
    box area / image area) and, over the images with boxes, ``val_gt_known_loc`` (%
    IoU >= 0.5; the validation split is carved from train, whose boxes datasets ship).
    """
    method = method or method_of(config)
    was_training = mask_generator.training
    mask_generator.eval()
    loader = make_eval_loader(dataset, config.mask.batch_size, config, runtime.device)
    evaluator = ValidationMapEvaluator(config.selection.threshold)
    losses = method.g_validation(network)
    visual_maps: list[np.ndarray] = []
    visual_boxes: list[Box] = []
    for batch in loader:
        images = runtime.images(batch["image"])
        with runtime.autocast():
            normalized = normalize(images, config.data.normalization)
            masks = mask_generator(normalized).float()
        losses.add(images, normalized, masks, runtime)
        maps = masks[:, 0].float().cpu().numpy().astype(np.float64)
        for score_map, gt_boxes in zip(maps, batch["boxes"], strict=True):
            image_id = str(evaluator.count)
            if len(gt_boxes):
                evaluator.add_ground_truth(image_id, gt_boxes.numpy())
            summary = evaluator.accumulate(score_map, image_id)
            if len(visual_maps) < config.selection.num_visualized:
                visual_maps.append(_thumbnail(score_map))
                visual_boxes.append(summary.box)
    mask_generator.train(was_training)
    if evaluator.count == 0:
        raise DatasetError("the validation split is empty; raise data.val_fraction")
    scores = evaluator.compute()
    metrics = {
        "val_s_score": scores["s_score"],
        "val_s_score_se": scores["s_score_se"],
        **losses.metrics(evaluator.count),
        "val_mask_mean": scores["mask_mean"],
        "val_box_fraction": scores["box_fraction"],
    }
    if "gt_known_loc" in scores:
        metrics["val_gt_known_loc"] = scores["gt_known_loc"]
    empty = np.zeros((0, 1, 1), np.uint8)
    return metrics, (np.stack(visual_maps) if visual_maps else empty), visual_boxes


def _check_network(network: nn.Module, method: Method) -> None:
    """Refuse g training against the wrong kind of f (a classifier.checkpoint of the other
    method), naming the field."""
    if not isinstance(network, method.f_type):
        raise ConfigError(
            f"mask.method={method.number} ({method.label}) trains g against a "
            f"{method.f_type.__name__} f, got a {type(network).__name__}; check "
            "classifier.checkpoint or mask.method"
        )


def _g_schedule(
    optimizer: torch.optim.Optimizer, cfg: MaskConfig, steps_per_epoch: int
) -> LrSchedule:
    """``mask.schedule`` over mask.epochs x ``steps_per_epoch`` steps: 'constant' never
    changes the lr; 'cosine' anneals it to 0 (:func:`wsol.compute.make_lr_schedule`)."""
    if cfg.schedule == "constant":
        constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return LrSchedule(constant, per_step=False)
    return make_lr_schedule(
        optimizer,
        cfg.schedule,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        lr_step=1,
        lr_gamma=1.0,
    )


def train_mask(
    config: RunConfig,
    classifier: nn.Module,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None = None,
    *,
    resume_state: dict[str, Any] | None = None,
    progress: bool = False,
) -> MaskTrainingResult:
    """Train g against the frozen ``classifier`` (f) with ``mask.method``'s loss;
    validate, guard and select every epoch.

    Each epoch's report carries the validation metrics (``val_s_score`` first), whether
    our guard excludes the epoch, and the selection so far; ``save(path)`` writes a
    checkpoint a later call can resume from via ``resume_state``
    (:func:`wsol.checkpoint.load_mask_state`), giving the same results as an
    uninterrupted run on CPU.
    """
    cfg = config.mask
    method = method_of(config, splits)
    _check_network(classifier, method)
    method.check_g_loss()
    device = resolve_device(config.device)
    runtime = runtime_for(config, device)
    seed_everything(config.seed, config.deterministic)
    network = runtime.frozen(classifier)
    mask_generator = runtime.module(build_mask_generator(cfg))
    optimizer = make_optimizer(
        mask_generator.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
    )
    train_set = make_dataset(splits.train, config.data, train=True, seed=config.seed)
    val_set = make_dataset(splits.val, config.data, train=False, seed=config.seed)
    steps_per_epoch = len(method.g_batches(train_set, 1, device))
    schedule = _g_schedule(optimizer, cfg, steps_per_epoch)
    history: list[dict[str, Any]] = []
    visuals: list[dict[str, Any]] = []
    start_epoch = 1
    if resume_state is not None:
        if resume_state.get("optimizer") is None:
            raise CheckpointError(
                f"the checkpoint of epoch {resume_state['epoch']} holds g's weights only (a "
                "kept, lean checkpoint); resume from the latest one"
            )
        # g's schedule is a function of the step count alone: replayed, not stored, so
        # the checkpoint format and what it holds stay one copy.
        with warnings.catch_warnings():  # "scheduler stepped before optimizer": a replay
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(resume_state["epoch"] * steps_per_epoch):
                schedule.after_step()
        mask_generator.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        history = list(resume_state["history"])
        visuals = list(resume_state["visuals"])
        start_epoch = resume_state["epoch"] + 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        mask_generator.train()
        loader = method.g_batches(train_set, epoch, device)
        if len(loader) != steps_per_epoch:
            raise RuntimeError(
                f"g's epoch {epoch} has {len(loader)} batches, epoch 1 had {steps_per_epoch}: "
                f"mask.schedule={cfg.schedule} needs the same number every epoch"
            )
        # The loss terms are summed on the device and read once per epoch: no host sync
        # per step (on CUDA, .item() would stall the queue of kernels every step).
        sums = torch.zeros(len(method.g_terms), dtype=torch.float64, device=device)
        seen = 0
        for batch in _progress(loader, progress, f"g epoch {epoch}/{cfg.epochs}", len(loader)):
            count, terms = method.g_step(network, mask_generator, optimizer, batch, runtime)
            schedule.after_step()
            sums += terms.double() * count
            seen += count
        totals = dict(zip(method.g_terms, sums.tolist(), strict=True))
        if not math.isfinite(totals["loss"]):
            raise FloatingPointError(f"g's training loss became {totals['loss']} in epoch {epoch}")
        val_metrics, maps, boxes = validate_mask_generator(
            mask_generator, network, val_set, config, runtime, method
        )
        reason = exclusion_reason(val_metrics, config.selection, epoch=epoch)
        metrics = {
            **val_metrics,
            "selection_score": selection_score(val_metrics["val_s_score"], reason is None),
            **{f"train_{key}": value / max(seen, 1) for key, value in totals.items()},
        }
        history.append(
            {
                "epoch": epoch,
                **metrics,
                "excluded_reason": reason,
                "selection_tolerance": config.selection.s_tolerance_se
                * val_metrics["val_s_score_se"],
            }
        )
        visuals.append({"epoch": epoch, "maps": maps, "boxes": boxes})
        if on_epoch is not None:
            save = GCheckpointer(mask_generator, optimizer, epoch, config, history, visuals)
            on_epoch(
                EpochReport(
                    epoch=epoch,
                    metrics=metrics,
                    excluded_reason=reason,
                    selection=select_epoch(history),
                    history=tuple(history),
                    visuals=tuple(visuals),
                ),
                save,
            )
    return MaskTrainingResult(history=history, selection=select_epoch(history), visuals=visuals)
