"""Training loops for the classifier f and the mask generator g (Method I).

Both loops call back once per epoch with that epoch's validation metrics and a way to
save a checkpoint; the single-run local mode and the Ray Tune trainable are two such
callbacks. The loops never see the test split: they take :class:`TrainingSplits`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsol.config import ClassifierConfig, MaskConfig, RunConfig, SelectionConfig
from wsol.data import TrainingSplits, WsolDataset, build_transform, collate_samples
from wsol.data.transforms import normalize
from wsol.localize import Box, summarize_map
from wsol.losses import method1_loss
from wsol.metrics import iou
from wsol.models import Classifier, MaskGenerator, freeze

CHECKPOINT_FORMAT = 1
VISUAL_MAX_SIDE = 96


# --------------------------------------------------------------------------- utilities


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_loader(
    dataset: WsolDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    num_workers: int,
) -> DataLoader:
    """A loader whose order (and the dataset's augmentation) depend only on seed and epoch.

    So a run resumed at epoch k sees exactly the batches an uninterrupted run would.
    """
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate_samples,
        persistent_workers=False,
    )


def _optimizer(
    parameters: Iterator[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    params = [p for p in parameters if p.requires_grad]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _progress(iterable: Any, enabled: bool, description: str, total: int) -> Any:
    return tqdm(iterable, desc=description, total=total, leave=False, disable=not enabled)


# --------------------------------------------------------------------------- classifier


@dataclass
class EpochReport:
    """One epoch's outcome, handed to the epoch callback.

    ``metrics`` is ordered: for g the mean validation S-score (``val_s_score``) first.
    ``excluded_reason`` is set when our degenerate-epoch guard makes the epoch
    unselectable. ``visual_maps`` (N,h,w) uint8 are the maps of the tracked validation
    images, with ``visual_boxes`` their predicted boxes in crop pixels.
    """

    epoch: int
    metrics: dict[str, float]
    excluded_reason: str | None = None
    visual_maps: np.ndarray | None = None
    visual_boxes: list[Box] = field(default_factory=list)

    @property
    def selectable(self) -> bool:
        return self.excluded_reason is None


SaveCheckpoint = Callable[[Path], None]
EpochCallback = Callable[[EpochReport, SaveCheckpoint], None]


def build_classifier(config: ClassifierConfig, num_classes: int) -> Classifier:
    return Classifier(
        num_classes,
        backbone=config.backbone,
        pretrained=config.pretrained,
        weights_path=config.weights_path,
        small_input_stem=config.small_input_stem,
    )


def save_classifier(
    path: Path, classifier: Classifier, config: RunConfig, class_names: list[str], history: list
) -> None:
    """classifier.pt: the model, the config it was trained with, class names, metrics."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "classifier",
            "model": classifier.state_dict(),
            "config": config.model_dump(mode="json"),
            "class_names": class_names,
            "history": history,
        },
        path,
    )


def load_classifier(path: Path, device: torch.device | str = "cpu") -> tuple[Classifier, dict]:
    """Load classifier.pt -> (frozen f on ``device``, the checkpoint's metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("kind") != "classifier":
        raise ValueError(f"{path} is not a classifier checkpoint (kind={state.get('kind')!r})")
    classifier_config = ClassifierConfig.model_validate(state["config"]["classifier"])
    classifier = build_classifier(
        classifier_config.model_copy(update={"pretrained": False, "weights_path": None}),
        len(state["class_names"]),
    )
    classifier.load_state_dict(state["model"])
    return freeze(classifier.to(device)), state


def train_classifier(
    config: RunConfig,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None = None,
    *,
    progress: bool = False,
) -> tuple[Classifier, list[dict[str, float]]]:
    """Train f with image-level labels; returns (frozen f, per-epoch metrics).

    Validation metrics each epoch: ``val_top1_cls`` (%), ``val_loss``; plus
    ``train_loss`` and ``lr``. The paper: SGD, batch 16, lr 1e-3, wd 1e-4, lr/10 every
    80 epochs, 200 epochs; all from ``config.classifier``.
    """
    cfg = config.classifier
    device = resolve_device(config.device)
    seed = cfg.seed
    seed_everything(seed, config.deterministic)
    classifier = build_classifier(cfg, len(splits.class_names)).to(device)
    optimizer = _optimizer(
        classifier.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    train_set = WsolDataset(splits.train, build_transform(config.data, True), seed)
    val_set = WsolDataset(splits.val, build_transform(config.data, False), seed)
    normalization = config.data.normalization
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        classifier.train()
        loader = make_loader(
            train_set,
            cfg.batch_size,
            train=True,
            seed=seed,
            epoch=epoch,
            num_workers=config.data.num_workers,
        )
        total_loss, seen = 0.0, 0
        for batch in _progress(loader, progress, f"f epoch {epoch}/{cfg.epochs}", len(loader)):
            images = normalize(batch["image"].to(device), normalization)
            labels = batch["label"].to(device)
            loss = F.cross_entropy(classifier(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            seen += len(labels)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        metrics = {
            **evaluate_classifier(classifier, val_set, config, device),
            "train_loss": total_loss / max(seen, 1),
            "lr": lr,
        }
        history.append({"epoch": epoch, **metrics})
        if on_epoch is not None:

            def save(path: Path, _history: list = history) -> None:
                save_classifier(path, classifier, config, splits.class_names, _history)

            on_epoch(EpochReport(epoch=epoch, metrics=metrics), save)
    return freeze(classifier), history


@torch.no_grad()
def evaluate_classifier(
    classifier: Classifier, dataset: WsolDataset, config: RunConfig, device: torch.device
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean CE of f on ``dataset`` (centre crops)."""
    was_training = classifier.training
    classifier.eval()
    loader = make_loader(
        dataset, 64, train=False, seed=0, epoch=0, num_workers=config.data.num_workers
    )
    correct, loss, seen = 0, 0.0, 0
    for batch in loader:
        images = normalize(batch["image"].to(device), config.data.normalization)
        labels = batch["label"].to(device)
        logits = classifier(images)
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    classifier.train(was_training)
    return {"val_top1_cls": 100.0 * correct / max(seen, 1), "val_loss": loss / max(seen, 1)}


# --------------------------------------------------------------------------- mask generator


def build_mask_generator(config: MaskConfig) -> MaskGenerator:
    return MaskGenerator(config.encoder, config.pretrained, config.weights_path)


def exclusion_reason(metrics: dict[str, float], selection: SelectionConfig) -> str | None:
    """Our guard (not the paper's): why this epoch may not be selected, or None.

    Eq. 6 is exactly 1.0 for a map above tau everywhere (one contour: the whole image),
    which a fresh g and a lambda = 0 g both output, and for a map that is empty but for a
    single speck (a g whose batch-norm statistics have not settled yet); either would win
    max-S while localizing nothing.
    """
    if not selection.skip_degenerate:
        return None
    fraction = metrics["val_box_fraction"]
    if fraction > selection.max_box_fraction:
        return (
            f"degenerate: mean predicted box covers {fraction:.1%} of the image "
            f"(> selection.max_box_fraction = {selection.max_box_fraction:.0%})"
        )
    if fraction < selection.min_box_fraction:
        return (
            f"degenerate: mean predicted box covers {fraction:.2%} of the image "
            f"(< selection.min_box_fraction = {selection.min_box_fraction:.0%})"
        )
    return None


def selection_score(s_score: float, selectable: bool) -> float:
    """One scalar whose maximum is the selected epoch: S in [0,1], excluded epochs in [-1,0).

    Lets a checkpoint manager that keeps "the best by one metric" (e.g. Ray Tune's)
    apply our guard: any selectable epoch outranks every excluded one.
    """
    return s_score if selectable else s_score - 1.0


@dataclass
class Selection:
    """The epoch picked by early stopping and why the others were not."""

    epoch: int
    s_score: float
    excluded: dict[int, str]
    fallback: bool  # every epoch was excluded: picked by plain max-S, flagged

    def describe(self) -> str:
        text = f"selected epoch {self.epoch} (validation S-score {self.s_score:.4f})"
        if self.fallback:
            text += "; every epoch was degenerate, so this is plain max-S (guard could not apply)"
        elif self.excluded:
            text += f"; excluded epochs {sorted(self.excluded)} as degenerate"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "s_score": self.s_score,
            "fallback": self.fallback,
            "excluded": {str(k): v for k, v in sorted(self.excluded.items())},
        }


def select_epoch(history: list[dict[str, Any]]) -> Selection:
    """Max validation S-score among selectable epochs (ties: the earliest).

    ``history`` rows hold ``epoch``, ``val_s_score`` and ``excluded_reason`` (None when
    selectable). If every epoch is excluded, falls back to max-S over all and says so.
    """
    if not history:
        raise ValueError("cannot select an epoch from an empty history")
    excluded = {row["epoch"]: row["excluded_reason"] for row in history if row["excluded_reason"]}
    best = max(
        history,
        key=lambda row: (
            selection_score(row["val_s_score"], not row["excluded_reason"]),
            -row["epoch"],
        ),
    )
    return Selection(
        epoch=best["epoch"],
        s_score=best["val_s_score"],
        excluded=excluded,
        fallback=len(excluded) == len(history),
    )


def _visual(score_map: np.ndarray) -> np.ndarray:
    height, width = score_map.shape
    scale = min(1.0, VISUAL_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        score_map = cv2.resize(score_map, size, interpolation=cv2.INTER_AREA)
    return (np.clip(score_map, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def validate_mask_generator(
    mask_generator: MaskGenerator,
    classifier: Classifier,
    dataset: WsolDataset,
    config: RunConfig,
    device: torch.device,
) -> tuple[dict[str, float], np.ndarray, list[Box]]:
    """One pass of g over the validation split (centre crops).

    Returns (metrics, maps of the first ``selection.num_visualized`` images as uint8,
    their predicted boxes). Metrics: ``val_s_score`` (mean Eq. 6), ``val_loss``,
    ``val_ce``, ``val_reg``, ``val_mask_mean``, ``val_box_fraction`` (mean inclusive
    box area / image area), ``val_gt_known_loc`` (% IoU >= 0.5 with a ground-truth box;
    the validation split is carved from train, whose boxes the datasets ship).
    """
    was_training = mask_generator.training
    mask_generator.eval()
    mask_cfg, data_cfg, sel_cfg = config.mask, config.data, config.selection
    loader = make_loader(
        dataset, mask_cfg.batch_size, train=False, seed=0, epoch=0, num_workers=data_cfg.num_workers
    )
    sums: dict[str, float] = dict.fromkeys(
        ("s_score", "loss", "ce", "reg", "mask_mean", "box_fraction", "gt_known"), 0.0
    )
    count, with_boxes = 0, 0
    visual_maps: list[np.ndarray] = []
    visual_boxes: list[Box] = []
    for batch in loader:
        images = batch["image"].to(device)
        normalized = normalize(images, data_cfg.normalization)
        masks = mask_generator(normalized)
        target_logits = classifier(normalized)
        terms = method1_loss(
            classifier,
            images,
            masks,
            target_logits,
            lam=mask_cfg.lam,
            use_ce=mask_cfg.ce,
            use_reg=mask_cfg.reg,
            normalization=data_cfg.normalization,
            apply_to=mask_cfg.apply_to,
        )
        batch_size = len(images)
        sums["loss"] += terms.total.item() * batch_size
        sums["ce"] += terms.ce.item() * batch_size
        sums["reg"] += terms.reg.item() * batch_size
        maps = masks[:, 0].float().cpu().numpy().astype(np.float64)
        for score_map, gt_boxes in zip(maps, batch["boxes"], strict=True):
            summary = summarize_map(score_map, sel_cfg.threshold)
            sums["s_score"] += summary.s_score
            sums["box_fraction"] += summary.box_fraction
            sums["mask_mean"] += summary.mean_value
            if len(gt_boxes):
                with_boxes += 1
                best = max(iou(summary.box, tuple(box.tolist())) for box in gt_boxes)
                sums["gt_known"] += float(best >= 0.5)
            if len(visual_maps) < sel_cfg.num_visualized:
                visual_maps.append(_visual(score_map))
                visual_boxes.append(summary.box)
            count += 1
    mask_generator.train(was_training)
    if count == 0:
        raise ValueError("the validation split is empty; raise data.val_fraction")
    metrics = {
        "val_s_score": sums["s_score"] / count,
        "val_loss": sums["loss"] / count,
        "val_ce": sums["ce"] / count,
        "val_reg": sums["reg"] / count,
        "val_mask_mean": sums["mask_mean"] / count,
        "val_box_fraction": sums["box_fraction"] / count,
    }
    if with_boxes:
        metrics["val_gt_known_loc"] = 100.0 * sums["gt_known"] / with_boxes
    empty = np.zeros((0, 1, 1), np.uint8)
    return metrics, (np.stack(visual_maps) if visual_maps else empty), visual_boxes


def save_mask_state(
    path: Path,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    config: RunConfig,
    history: list[dict[str, Any]],
    visuals: list[dict[str, Any]],
) -> None:
    """A g checkpoint holding everything a resume needs (model, optimizer, epoch, config,
    the metrics history and tracked maps so far), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "mask_generator",
            "model": mask_generator.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": None,
            "epoch": epoch,
            "config": config.model_dump(mode="json"),
            "history": history,
            "visuals": visuals,
        },
        temporary,
    )
    temporary.replace(path)


def load_mask_state(path: Path) -> dict[str, Any]:
    """Read a g checkpoint written by :func:`save_mask_state` (on CPU)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    if state.get("kind") != "mask_generator":
        raise ValueError(f"{path} is not a mask-generator checkpoint (kind={state.get('kind')!r})")
    return state


def load_mask_generator(path: Path, device: torch.device | str = "cpu") -> MaskGenerator:
    """g from a checkpoint, in eval mode on ``device``."""
    state = load_mask_state(path)
    mask_config = MaskConfig.model_validate(state["config"]["mask"])
    mask_generator = build_mask_generator(
        mask_config.model_copy(update={"pretrained": False, "weights_path": None})
    )
    mask_generator.load_state_dict(state["model"])
    return mask_generator.to(device).eval()


@dataclass
class MaskTrainingResult:
    history: list[dict[str, Any]]
    selection: Selection
    visuals: list[dict[str, Any]]


def train_mask(
    config: RunConfig,
    classifier: Classifier,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None = None,
    *,
    resume_state: dict[str, Any] | None = None,
    progress: bool = False,
) -> MaskTrainingResult:
    """Train g with Eq. 1 against the frozen ``classifier``; validate every epoch.

    Each epoch's report carries the validation metrics (``val_s_score`` first) and
    whether our guard excludes the epoch; ``save(path)`` in the callback writes a
    checkpoint a later call can resume from via ``resume_state``
    (:func:`load_mask_state`), giving the same results as an uninterrupted run on CPU.
    """
    cfg = config.mask
    if not (cfg.ce or cfg.reg):
        raise ValueError("mask.ce and mask.reg are both false: Eq. 1 has nothing to minimise")
    device = resolve_device(config.device)
    seed_everything(config.seed, config.deterministic)
    classifier = freeze(classifier.to(device))
    mask_generator = build_mask_generator(cfg).to(device)
    optimizer = _optimizer(
        mask_generator.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
    )
    history: list[dict[str, Any]] = []
    visuals: list[dict[str, Any]] = []
    start_epoch = 1
    if resume_state is not None:
        mask_generator.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        history = list(resume_state["history"])
        visuals = list(resume_state["visuals"])
        start_epoch = resume_state["epoch"] + 1
    train_set = WsolDataset(splits.train, build_transform(config.data, True), config.seed)
    val_set = WsolDataset(splits.val, build_transform(config.data, False), config.seed)
    normalization = config.data.normalization
    for epoch in range(start_epoch, cfg.epochs + 1):
        mask_generator.train()
        loader = make_loader(
            train_set,
            cfg.batch_size,
            train=True,
            seed=config.seed,
            epoch=epoch,
            num_workers=config.data.num_workers,
        )
        totals = {"loss": 0.0, "ce": 0.0, "reg": 0.0}
        seen = 0
        for batch in _progress(loader, progress, f"g epoch {epoch}/{cfg.epochs}", len(loader)):
            images = batch["image"].to(device)
            normalized = normalize(images, normalization)
            with torch.no_grad():
                target_logits = classifier(normalized)
            masks = mask_generator(normalized)
            terms = method1_loss(
                classifier,
                images,
                masks,
                target_logits,
                lam=cfg.lam,
                use_ce=cfg.ce,
                use_reg=cfg.reg,
                normalization=normalization,
                apply_to=cfg.apply_to,
            )
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            for key, value in (("loss", terms.total), ("ce", terms.ce), ("reg", terms.reg)):
                totals[key] += value.item() * len(images)
            seen += len(images)
        if not math.isfinite(totals["loss"]):
            raise FloatingPointError(f"g's training loss became {totals['loss']} in epoch {epoch}")
        val_metrics, maps, boxes = validate_mask_generator(
            mask_generator, classifier, val_set, config, device
        )
        reason = exclusion_reason(val_metrics, config.selection)
        metrics = {
            **val_metrics,
            "selection_score": selection_score(val_metrics["val_s_score"], reason is None),
            **{f"train_{key}": value / max(seen, 1) for key, value in totals.items()},
        }
        history.append({"epoch": epoch, **metrics, "excluded_reason": reason})
        visuals.append({"epoch": epoch, "maps": maps, "boxes": boxes})
        if on_epoch is not None:

            def save(path: Path, _epoch: int = epoch) -> None:
                save_mask_state(path, mask_generator, optimizer, _epoch, config, history, visuals)

            on_epoch(
                EpochReport(
                    epoch=epoch,
                    metrics=metrics,
                    excluded_reason=reason,
                    visual_maps=maps,
                    visual_boxes=boxes,
                ),
                save,
            )
    return MaskTrainingResult(history=history, selection=select_epoch(history), visuals=visuals)
