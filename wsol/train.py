"""Training loops for the network f and the mask generator g (Methods I and II).

f is Method I's softmax classifier or Method II's Siamese embedding network
(``classifier.kind``); g is trained with Eq. 1 or with Eq. 3 + 4 (``mask.method``). The
entry points :func:`train_classifier`, :func:`save_classifier`, :func:`load_classifier`
and :func:`train_mask` dispatch on the config, so callers need not know the method.

All loops call back once per epoch with that epoch's validation metrics and a way to
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

from wsol.compute import Runtime, pins_memory, resolve_num_workers, runtime_for
from wsol.config import ClassifierConfig, MaskConfig, RunConfig, SelectionConfig
from wsol.data import TrainingSplits, WsolDataset, collate_samples, make_dataset
from wsol.data.transforms import normalize
from wsol.localize import Box, summarize_map
from wsol.losses import (
    LossTerms,
    Method2Terms,
    method1_loss,
    method2_loss,
    triplet_loss,
    triplet_losses,
    weighted_input,
)
from wsol.metrics import iou
from wsol.models import Classifier, EmbeddingNet, MaskGenerator, freeze
from wsol.triplets import TripletDataset, TripletSampler, collate_triplets

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
    num_workers: int | str,
    device: torch.device | None = None,
) -> DataLoader:
    """A loader whose order (and the dataset's augmentation) depend only on seed and epoch.

    So a run resumed at epoch k sees exactly the batches an uninterrupted run would.
    ``num_workers``: a count or ``"auto"`` (:func:`wsol.compute.resolve_num_workers`, sized
    to the CPU share for ``device``); batches are pinned when ``device`` is CUDA.
    """
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        generator=generator,
        num_workers=resolve_num_workers(num_workers, device),
        collate_fn=collate_samples,
        persistent_workers=False,
        pin_memory=pins_memory(device),
    )


def make_eval_loader(
    dataset: WsolDataset, batch_size: int, config: RunConfig, device: torch.device
) -> DataLoader:
    """Batches of ``dataset`` in order, for a validation or test pass (its eval transform
    decides the crops); workers and pinning as :func:`make_loader`."""
    return make_loader(
        dataset,
        batch_size,
        train=False,
        seed=0,
        epoch=0,
        num_workers=config.data.num_workers,
        device=device,
    )


def _optimizer(
    parameters: Iterator[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    params = [p for p in parameters if p.requires_grad]
    # One fused kernel over every parameter and its state instead of a dozen passes (the
    # same update; measured by benchmarks/speed.py), where torch has it.
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)


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


def build_classifier(config: ClassifierConfig, num_classes: int) -> Classifier | EmbeddingNet:
    """f as ``config.kind`` says: a softmax :class:`Classifier` or an :class:`EmbeddingNet`."""
    if config.kind == "embedding":
        return EmbeddingNet(
            num_classes,
            embedding_dim=config.embedding_dim,
            normalize=config.normalize_embedding,
            backbone=config.backbone,
            pretrained=config.pretrained,
            weights_path=config.weights_path,
            small_input_stem=config.small_input_stem,
        )
    return Classifier(
        num_classes,
        backbone=config.backbone,
        pretrained=config.pretrained,
        weights_path=config.weights_path,
        small_input_stem=config.small_input_stem,
    )


def save_classifier(
    path: Path,
    classifier: Classifier | EmbeddingNet,
    config: RunConfig,
    class_names: list[str],
    history: list,
) -> None:
    """classifier.pt: the model, the config it was trained with, class names, metrics.

    For Method II's embedding network the model's state holds its training-split class
    means (buffers ``class_means``, ``class_counts``), which classify by nearest mean.
    """
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


def load_classifier(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[Classifier | EmbeddingNet, dict]:
    """Load classifier.pt -> (frozen f on ``device``, the checkpoint's metadata).

    f is a :class:`Classifier` or an :class:`EmbeddingNet`, as the stored config's
    ``classifier.kind`` says (checkpoints from before Method II are softmax classifiers).
    """
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


def classifier_train_step(
    classifier: Classifier,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalization: str,
    runtime: Runtime,
) -> torch.Tensor:
    """One f step: CE of f's logits on a batch (images (B,3,H,W) in [0,1]), backward,
    optimizer step, under ``runtime``'s placement and precision. Returns the loss
    (detached, on the device: reading it is left to the caller, once per epoch)."""
    images = runtime.images(images)
    labels = labels.to(runtime.device, non_blocking=runtime.pin_memory)
    with runtime.autocast():
        logits = classifier(normalize(images, normalization))
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


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

    With ``classifier.kind: embedding`` this trains Method II's Siamese embedding
    instead (:func:`train_embedding`), reporting the same metric names.
    """
    if config.classifier.kind == "embedding":
        return train_embedding(config, splits, on_epoch, progress=progress)
    cfg = config.classifier
    device = resolve_device(config.device)
    runtime = runtime_for(config, device)
    seed = cfg.seed
    seed_everything(seed, config.deterministic)
    classifier = runtime.module(build_classifier(cfg, len(splits.class_names)))
    optimizer = _optimizer(
        classifier.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    train_set = make_dataset(splits.train, config.data, train=True, seed=seed)
    val_set = make_dataset(splits.val, config.data, train=False, seed=seed)
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
            device=device,
        )
        # Summed on the device and read once per epoch: no host sync per step.
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for batch in _progress(loader, progress, f"f epoch {epoch}/{cfg.epochs}", len(loader)):
            loss = classifier_train_step(
                classifier, optimizer, batch["image"], batch["label"], normalization, runtime
            )
            total_loss += loss.double() * len(batch["label"])
            seen += len(batch["label"])
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        metrics = {
            **evaluate_classifier(classifier, val_set, config, device, runtime),
            "train_loss": total_loss.item() / max(seen, 1),
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
    classifier: Classifier,
    dataset: WsolDataset,
    config: RunConfig,
    device: torch.device,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean CE of f on ``dataset`` (centre crops), under
    ``runtime``'s placement and precision (default: plain fp32 on ``device``)."""
    runtime = runtime or Runtime(device)
    was_training = classifier.training
    classifier.eval()
    loader = make_eval_loader(dataset, 64, config, device)
    correct, loss, seen = 0, 0.0, 0
    for batch in loader:
        images = runtime.images(batch["image"])
        labels = batch["label"].to(device)
        with runtime.autocast():
            logits = classifier(normalize(images, config.data.normalization)).float()
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
    runtime: Runtime | None = None,
) -> tuple[dict[str, float], np.ndarray, list[Box]]:
    """One pass of g over the validation split (centre crops), under ``runtime``'s
    placement and precision (default: plain fp32 on ``device``).

    Returns (metrics, maps of the first ``selection.num_visualized`` images as uint8,
    their predicted boxes). Metrics: ``val_s_score`` (mean Eq. 6), ``val_loss``,
    ``val_ce``, ``val_reg``, ``val_mask_mean``, ``val_box_fraction`` (mean inclusive
    box area / image area), ``val_gt_known_loc`` (% IoU >= 0.5 with a ground-truth box;
    the validation split is carved from train, whose boxes the datasets ship).
    """
    runtime = runtime or Runtime(device)
    was_training = mask_generator.training
    mask_generator.eval()
    mask_cfg, data_cfg, sel_cfg = config.mask, config.data, config.selection
    loader = make_eval_loader(dataset, mask_cfg.batch_size, config, device)
    sums: dict[str, float] = dict.fromkeys(
        ("s_score", "loss", "ce", "reg", "mask_mean", "box_fraction", "gt_known"), 0.0
    )
    count, with_boxes = 0, 0
    visual_maps: list[np.ndarray] = []
    visual_boxes: list[Box] = []
    for batch in loader:
        images = runtime.images(batch["image"])
        with runtime.autocast():
            normalized = normalize(images, data_cfg.normalization)
            masks = mask_generator(normalized).float()
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
                normalized=normalized,
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


def load_mask_generator_state(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[MaskGenerator, dict[str, Any]]:
    """(g in eval mode on ``device``, the checkpoint's full state: epoch, config, history)."""
    state = load_mask_state(path)
    return load_mask_generator(path, device, state=state), state


def load_mask_generator(
    path: Path, device: torch.device | str = "cpu", *, state: dict[str, Any] | None = None
) -> MaskGenerator:
    """g from a checkpoint, in eval mode on ``device`` (``state``: already loaded)."""
    state = state if state is not None else load_mask_state(path)
    mask_config = MaskConfig.model_validate(state["config"]["mask"])
    mask_generator = build_mask_generator(
        mask_config.model_copy(update={"pretrained": False, "weights_path": None})
    )
    mask_generator.load_state_dict(state["model"])
    return mask_generator.to(device).eval()


def _end_mask_epoch(
    epoch: int,
    val_metrics: dict[str, float],
    maps: np.ndarray,
    boxes: list[Box],
    train_means: dict[str, float],
    config: RunConfig,
    history: list[dict[str, Any]],
    visuals: list[dict[str, Any]],
    on_epoch: EpochCallback | None,
    save: SaveCheckpoint,
) -> None:
    """What every g epoch ends with, for both methods: apply the guard, record the epoch's
    metrics and tracked maps, and report to ``on_epoch`` with a way to ``save`` it."""
    reason = exclusion_reason(val_metrics, config.selection)
    metrics = {
        **val_metrics,
        "selection_score": selection_score(val_metrics["val_s_score"], reason is None),
        **{f"train_{key}": value for key, value in train_means.items()},
    }
    history.append({"epoch": epoch, **metrics, "excluded_reason": reason})
    visuals.append({"epoch": epoch, "maps": maps, "boxes": boxes})
    if on_epoch is not None:
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


def method1_train_step(
    classifier: Classifier,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    config: RunConfig,
    runtime: Runtime,
) -> LossTerms:
    """One g step of Eq. 1 on a batch (images (B,3,H,W) in [0,1]), under ``runtime``'s
    placement and precision: g forward and backward; the frozen f (no parameter
    gradients) on I once, under no_grad, for the target f(I), and on I*M with gradients
    to its input only; the optimizer step. I*M reuses the normalised batch. Returns the
    loss terms, detached and on the device (read them once per epoch, not per step)."""
    cfg, normalization = config.mask, config.data.normalization
    images = runtime.images(images)
    with runtime.autocast():
        normalized = normalize(images, normalization)
        with torch.no_grad():
            target_logits = classifier(normalized)
        masks = mask_generator(normalized).float()
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
            normalized=normalized,
        )
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    return LossTerms(total=terms.total.detach(), ce=terms.ce.detach(), reg=terms.reg.detach())


@dataclass
class MaskTrainingResult:
    history: list[dict[str, Any]]
    selection: Selection
    visuals: list[dict[str, Any]]


@dataclass
class _MaskTraining:
    """What :func:`_train_mask_generator` builds for either method before its first epoch."""

    network: nn.Module  # the frozen f: Method I's classifier or Method II's embedding
    mask_generator: MaskGenerator
    optimizer: torch.optim.Optimizer
    runtime: Runtime
    train_set: WsolDataset
    val_set: WsolDataset


@dataclass
class _MaskMethod:
    """What differs between the methods' g loops."""

    term_names: tuple[str, ...]  # the step's loss terms, "loss" (the total) first
    loader: Callable[[int], DataLoader]  # epoch -> that epoch's training batches
    step: Callable[[Any], tuple[int, torch.Tensor]]  # batch -> (images, terms on device)
    validate: Callable[[], tuple[dict[str, float], np.ndarray, list[Box]]]


def _train_mask_generator(
    config: RunConfig,
    network: nn.Module,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None,
    resume_state: dict[str, Any] | None,
    progress: bool,
    method_for: Callable[[_MaskTraining], _MaskMethod],
) -> MaskTrainingResult:
    """g's training loop for both methods: set up g and its optimizer (or restore them
    from ``resume_state``), then per epoch train on ``method_for``'s batches, validate,
    guard, record and report (:func:`_end_mask_epoch`)."""
    cfg = config.mask
    device = resolve_device(config.device)
    runtime = runtime_for(config, device)
    seed_everything(config.seed, config.deterministic)
    network = runtime.frozen(network)
    mask_generator = runtime.module(build_mask_generator(cfg))
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
    method = method_for(
        _MaskTraining(
            network=network,
            mask_generator=mask_generator,
            optimizer=optimizer,
            runtime=runtime,
            train_set=make_dataset(splits.train, config.data, train=True, seed=config.seed),
            val_set=make_dataset(splits.val, config.data, train=False, seed=config.seed),
        )
    )
    for epoch in range(start_epoch, cfg.epochs + 1):
        mask_generator.train()
        loader = method.loader(epoch)
        # The loss terms are summed on the device and read once per epoch: no host sync
        # per step (on CUDA, .item() would stall the queue of kernels every step).
        sums = torch.zeros(len(method.term_names), dtype=torch.float64, device=device)
        seen = 0
        for batch in _progress(loader, progress, f"g epoch {epoch}/{cfg.epochs}", len(loader)):
            count, terms = method.step(batch)
            sums += terms.double() * count
            seen += count
        totals = dict(zip(method.term_names, sums.tolist(), strict=True))
        if not math.isfinite(totals["loss"]):
            raise FloatingPointError(f"g's training loss became {totals['loss']} in epoch {epoch}")
        val_metrics, maps, boxes = method.validate()
        _end_mask_epoch(
            epoch,
            val_metrics,
            maps,
            boxes,
            {key: value / max(seen, 1) for key, value in totals.items()},
            config,
            history,
            visuals,
            on_epoch,
            lambda path, _epoch=epoch: save_mask_state(
                path, mask_generator, optimizer, _epoch, config, history, visuals
            ),
        )
    return MaskTrainingResult(history=history, selection=select_epoch(history), visuals=visuals)


def train_mask(
    config: RunConfig,
    classifier: Classifier | EmbeddingNet,
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

    With ``mask.method: 2`` this trains g with Method II's loss against the frozen
    embedding network instead (:func:`train_mask_method2`).
    """
    _check_network_matches_method(classifier, config)
    if config.mask.method == 2:
        return train_mask_method2(
            config, classifier, splits, on_epoch, resume_state=resume_state, progress=progress
        )
    cfg = config.mask
    if not (cfg.ce or cfg.reg):
        raise ValueError("mask.ce and mask.reg are both false: Eq. 1 has nothing to minimise")

    def method1(training: _MaskTraining) -> _MaskMethod:
        device = training.runtime.device

        def step(batch: dict[str, Any]) -> tuple[int, torch.Tensor]:
            terms = method1_train_step(
                training.network,
                training.mask_generator,
                training.optimizer,
                batch["image"],
                config,
                training.runtime,
            )
            return len(batch["image"]), torch.stack([terms.total, terms.ce, terms.reg])

        return _MaskMethod(
            term_names=("loss", "ce", "reg"),
            loader=lambda epoch: make_loader(
                training.train_set,
                cfg.batch_size,
                train=True,
                seed=config.seed,
                epoch=epoch,
                num_workers=config.data.num_workers,
                device=device,
            ),
            step=step,
            validate=lambda: validate_mask_generator(
                training.mask_generator,
                training.network,
                training.val_set,
                config,
                device,
                training.runtime,
            ),
        )

    return _train_mask_generator(
        config, classifier, splits, on_epoch, resume_state, progress, method1
    )


# --------------------------------------------------------------------------- Method II

TRIPLET_ROLES = ("anchor", "positive", "negative")


def _check_network_matches_method(network: nn.Module, config: RunConfig) -> None:
    """Refuse g training against the wrong kind of f (e.g. a classifier.checkpoint of the
    other method), naming the fields."""
    method = config.mask.method
    is_embedding = isinstance(network, EmbeddingNet)
    if method == 2 and not is_embedding:
        raise ValueError(
            "mask.method=2 (Method II) needs a Siamese embedding network f "
            f"(classifier.kind=embedding), got a {type(network).__name__}; check "
            "classifier.checkpoint"
        )
    if method == 1 and is_embedding:
        raise ValueError(
            "mask.method=1 (Method I) needs a softmax classifier f (classifier.kind=softmax), "
            "got an EmbeddingNet; set mask.method=2 for an embedding network, or check "
            "classifier.checkpoint"
        )


def make_triplet_loader(
    dataset: WsolDataset,
    triplets: np.ndarray,
    batch_size: int,
    *,
    epoch: int,
    num_workers: int | str,
    device: torch.device | None = None,
) -> DataLoader:
    """Batches of ``triplets`` (already in a seeded random order, see
    :class:`TripletSampler`) with ``dataset``'s augmentation of ``epoch``; a batch holds
    ``batch_size`` triplets, so 3 x ``batch_size`` images. Workers and pinning as
    :func:`make_loader`."""
    dataset.set_epoch(epoch)
    return DataLoader(
        TripletDataset(dataset, triplets),
        batch_size=batch_size,
        shuffle=False,
        drop_last=len(triplets) > batch_size,
        num_workers=resolve_num_workers(num_workers, device),
        collate_fn=collate_triplets,
        persistent_workers=False,
        pin_memory=pins_memory(device),
    )


def validation_triplets(samples: list[Any]) -> np.ndarray | None:
    """Fixed triplets over the validation split (seed 0, epoch 0), the same every epoch and
    run, for the triplet losses' validation values; None when the split admits none
    (fewer than 2 classes, or no class with 2 images)."""
    try:
        return TripletSampler([sample.label for sample in samples], seed=0).triplets(0)
    except ValueError:
        return None


@torch.no_grad()
def embed_dataset(
    network: EmbeddingNet,
    dataset: WsolDataset,
    config: RunConfig,
    device: torch.device,
    runtime: Runtime | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (N, D), labels (N,)) of ``dataset`` in order, on the CPU, in eval mode
    (fp32 embeddings; computed under ``runtime``'s placement and precision)."""
    runtime = runtime or Runtime(device)
    was_training = network.training
    network.eval()
    loader = make_eval_loader(dataset, 64, config, device)
    embeddings, labels = [], []
    for batch in loader:
        images = runtime.images(batch["image"])
        with runtime.autocast():
            embedded = network(normalize(images, config.data.normalization))
        embeddings.append(embedded.float().cpu())
        labels.append(batch["label"])
    network.train(was_training)
    if not embeddings:
        return torch.zeros(0, network.embedding_dim), torch.zeros(0, dtype=torch.int64)
    return torch.cat(embeddings), torch.cat(labels)


@torch.no_grad()
def evaluate_embedding(
    network: EmbeddingNet,
    train_set: WsolDataset,
    val_set: WsolDataset,
    val_triplets: np.ndarray | None,
    config: RunConfig,
    device: torch.device,
    runtime: Runtime | None = None,
) -> dict[str, float]:
    """Set f's class means from ``train_set`` (centre crops), then on ``val_set``:
    ``val_top1_cls`` (%, nearest class mean) and ``val_loss`` (mean Eq. 2 over
    ``val_triplets``; NaN when there are none)."""
    train_embeddings, train_labels = embed_dataset(network, train_set, config, device, runtime)
    network.set_class_means(train_embeddings.to(device), train_labels.to(device))
    val_embeddings, val_labels = embed_dataset(network, val_set, config, device, runtime)
    predicted = network.logits_from_embeddings(val_embeddings.to(device)).argmax(1).cpu()
    correct = int((predicted == val_labels).sum())
    loss = math.nan
    if val_triplets is not None and len(val_triplets):
        anchor, positive, negative = (val_embeddings[val_triplets[:, k]] for k in range(3))
        loss = triplet_loss(anchor, positive, negative, config.classifier.triplet_margin).item()
    return {"val_top1_cls": 100.0 * correct / max(len(val_labels), 1), "val_loss": loss}


def train_embedding(
    config: RunConfig,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None = None,
    *,
    progress: bool = False,
) -> tuple[EmbeddingNet, list[dict[str, float]]]:
    """Train Method II's Siamese embedding f with the triplet loss of Eq. 2.

    Each epoch draws triplets from the training split (:class:`TripletSampler`, seeded
    by ``classifier.seed`` and the epoch; ``classifier.triplets_per_anchor`` per image);
    a batch is ``classifier.batch_size`` triplets, embedded in one forward pass. After
    each epoch f's class means are recomputed on the training split (centre crops) and
    stored in f, so a checkpoint saved at any epoch classifies by nearest class mean.
    Metrics as :func:`train_classifier`: ``val_top1_cls`` (nearest class mean),
    ``val_loss`` (Eq. 2 on fixed validation triplets), ``train_loss``, ``lr``.
    Returns (frozen f, per-epoch metrics).
    """
    cfg = config.classifier
    device = resolve_device(config.device)
    runtime = runtime_for(config, device)
    seed = cfg.seed
    seed_everything(seed, config.deterministic)
    network = runtime.module(build_classifier(cfg, len(splits.class_names)))
    assert isinstance(network, EmbeddingNet)
    optimizer = _optimizer(
        network.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step, cfg.lr_gamma)
    train_set = make_dataset(splits.train, config.data, train=True, seed=seed)
    means_set = make_dataset(splits.train, config.data, train=False, seed=seed)
    val_set = make_dataset(splits.val, config.data, train=False, seed=seed)
    sampler = TripletSampler([s.label for s in splits.train], seed, cfg.triplets_per_anchor)
    val_triplets = validation_triplets(splits.val)
    normalization = config.data.normalization
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        network.train()
        loader = make_triplet_loader(
            train_set,
            sampler.triplets(epoch),
            cfg.batch_size,
            epoch=epoch,
            num_workers=config.data.num_workers,
            device=device,
        )
        # Summed on the device and read once per epoch: no host sync per step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for batch in _progress(loader, progress, f"f epoch {epoch}/{cfg.epochs}", len(loader)):
            count = len(batch["anchor"]["image"])
            images = runtime.images(torch.cat([batch[role]["image"] for role in TRIPLET_ROLES]))
            with runtime.autocast():
                embeddings = network(normalize(images, normalization)).float()
            anchor, positive, negative = embeddings.split(count)
            loss = triplet_loss(anchor, positive, negative, cfg.triplet_margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * count
            seen += count
        total_loss = loss_sum.item()
        if not math.isfinite(total_loss):
            raise FloatingPointError(f"f's triplet loss became {total_loss} in epoch {epoch}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        metrics = {
            **evaluate_embedding(
                network, means_set, val_set, val_triplets, config, device, runtime
            ),
            "train_loss": total_loss / max(seen, 1),
            "lr": lr,
        }
        history.append({"epoch": epoch, **metrics})
        if on_epoch is not None:

            def save(path: Path, _history: list = history) -> None:
                save_classifier(path, network, config, splits.class_names, _history)

            on_epoch(EpochReport(epoch=epoch, metrics=metrics), save)
    return freeze(network), history


class _MapScores:
    """Accumulates the per-map validation numbers shared by both methods: S-score, box
    fraction, map mean, GT-known loc, and the tracked maps/boxes."""

    def __init__(self, selection: SelectionConfig) -> None:
        self.selection = selection
        self.sums = dict.fromkeys(("s_score", "box_fraction", "mask_mean", "gt_known"), 0.0)
        self.count, self.with_boxes = 0, 0
        self.visual_maps: list[np.ndarray] = []
        self.visual_boxes: list[Box] = []

    def add(self, masks: torch.Tensor, gt_boxes: list[torch.Tensor]) -> None:
        maps = masks[:, 0].float().cpu().numpy().astype(np.float64)
        for score_map, boxes in zip(maps, gt_boxes, strict=True):
            summary = summarize_map(score_map, self.selection.threshold)
            self.sums["s_score"] += summary.s_score
            self.sums["box_fraction"] += summary.box_fraction
            self.sums["mask_mean"] += summary.mean_value
            if len(boxes):
                self.with_boxes += 1
                best = max(iou(summary.box, tuple(box.tolist())) for box in boxes)
                self.sums["gt_known"] += float(best >= 0.5)
            if len(self.visual_maps) < self.selection.num_visualized:
                self.visual_maps.append(_visual(score_map))
                self.visual_boxes.append(summary.box)
            self.count += 1

    def metrics(self) -> dict[str, float]:
        """``val_mask_mean``, ``val_box_fraction`` and (with boxes) ``val_gt_known_loc``."""
        result = {
            "val_mask_mean": self.sums["mask_mean"] / self.count,
            "val_box_fraction": self.sums["box_fraction"] / self.count,
        }
        if self.with_boxes:
            result["val_gt_known_loc"] = 100.0 * self.sums["gt_known"] / self.with_boxes
        return result

    def maps(self) -> np.ndarray:
        return np.stack(self.visual_maps) if self.visual_maps else np.zeros((0, 1, 1), np.uint8)


@torch.no_grad()
def validate_mask_generator_method2(
    mask_generator: MaskGenerator,
    embedding: EmbeddingNet,
    dataset: WsolDataset,
    config: RunConfig,
    device: torch.device,
    triplets: np.ndarray | None,
    runtime: Runtime | None = None,
) -> tuple[dict[str, float], np.ndarray, list[Box]]:
    """One pass of g over the validation split (centre crops) for Method II, under
    ``runtime``'s placement and precision (default: plain fp32 on ``device``).

    Metrics, named as Method I's where they mean the same: ``val_s_score``,
    ``val_loss`` (the sum of the active terms), ``val_inner`` (Eq. 3, mean over every
    image), ``val_outer`` (Eq. 4 over ``triplets`` of validation images, fixed across
    epochs; left out when there are none), ``val_reg``, ``val_mask_mean``,
    ``val_box_fraction``, ``val_gt_known_loc``. Returns (metrics, tracked maps, boxes).
    """
    runtime = runtime or Runtime(device)
    was_training = mask_generator.training
    mask_generator.eval()
    mask_cfg, data_cfg = config.mask, config.data
    loader = make_eval_loader(dataset, mask_cfg.batch_size, config, device)
    scores = _MapScores(config.selection)
    inner_sum, reg_sum = 0.0, 0.0
    foregrounds: list[torch.Tensor] = []
    normalization, apply_to = data_cfg.normalization, mask_cfg.apply_to
    for batch in loader:
        images = runtime.images(batch["image"])
        with runtime.autocast():
            normalized = normalize(images, normalization)
            masks = mask_generator(normalized).float()
            target = embedding(normalized).float()
            fore = embedding(weighted_input(images, masks, normalization, apply_to)).float()
            back = embedding(weighted_input(images, 1.0 - masks, normalization, apply_to)).float()
        inner_sum += triplet_losses(target, fore, back, mask_cfg.triplet_margin).sum().item()
        reg_sum += masks.mean(dim=(1, 2, 3)).sum().item()
        foregrounds.append(fore.cpu())
        scores.add(masks, batch["boxes"])
    mask_generator.train(was_training)
    if scores.count == 0:
        raise ValueError("the validation split is empty; raise data.val_fraction")
    count = scores.count
    inner, reg = inner_sum / count, reg_sum / count
    outer = None
    if triplets is not None and len(triplets):
        fore_all = torch.cat(foregrounds)
        outer = triplet_loss(
            *(fore_all[triplets[:, k]] for k in range(3)), mask_cfg.triplet_margin
        ).item()
    loss = (
        (inner if mask_cfg.inner else 0.0)
        + (outer if mask_cfg.outer and outer is not None else 0.0)
        + (mask_cfg.lam * reg if mask_cfg.reg else 0.0)
    )
    metrics = {
        "val_s_score": scores.sums["s_score"] / count,
        "val_loss": loss,
        "val_inner": inner,
        **({"val_outer": outer} if outer is not None else {}),
        "val_reg": reg,
        **scores.metrics(),
    }
    return metrics, scores.maps(), scores.visual_boxes


def method2_train_step(
    embedding: EmbeddingNet,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    triplet: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: RunConfig,
    runtime: Runtime,
) -> Method2Terms:
    """One g step of Method II on a batch of triplets (anchor, positive, negative images,
    each (B,3,H,W) in [0,1]), under ``runtime``: g maps the 3B images in one pass; the
    frozen f embeds the anchors once under no_grad for the target, and I*M with gradients
    to its input only; the optimizer step. Returns the terms, detached, on the device."""
    cfg, normalization = config.mask, config.data.normalization
    roles = [runtime.images(images) for images in triplet]
    count = len(roles[0])
    with runtime.autocast():
        normalized = normalize(torch.cat(roles), normalization)
        with torch.no_grad():
            anchor_embedding = embedding(normalized[:count]).float()
        masks = mask_generator(normalized).float().split(count)
        terms = method2_loss(
            embedding,
            (roles[0], roles[1], roles[2]),
            (masks[0], masks[1], masks[2]),
            anchor_embedding,
            lam=cfg.lam,
            use_inner=cfg.inner,
            use_outer=cfg.outer,
            use_reg=cfg.reg,
            margin=cfg.triplet_margin,
            normalization=normalization,
            apply_to=cfg.apply_to,
        )
    optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    optimizer.step()
    return Method2Terms(
        total=terms.total.detach(),
        inner=terms.inner.detach(),
        outer=terms.outer.detach(),
        reg=terms.reg.detach(),
    )


def train_mask_method2(
    config: RunConfig,
    embedding: EmbeddingNet,
    splits: TrainingSplits,
    on_epoch: EpochCallback | None = None,
    *,
    resume_state: dict[str, Any] | None = None,
    progress: bool = False,
) -> MaskTrainingResult:
    """Train g with Method II's loss against the frozen Siamese ``embedding``:
    L_inner (Eq. 3) + L_outer (Eq. 4) + lam * R(M_a), each switchable (``mask.inner``,
    ``mask.outer``, ``mask.reg``); see :func:`wsol.losses.method2_loss`.

    Each epoch every training image is the anchor of one random triplet
    (:class:`TripletSampler` seeded by the run seed and the epoch); a batch is
    ``mask.batch_size`` triplets, whose 3 x batch_size images g maps in one pass.
    Validation, selection, checkpoints and resume are as in :func:`train_mask`, with
    :func:`validate_mask_generator_method2`'s metrics (``val_s_score`` first) and
    ``train_loss``, ``train_inner``, ``train_outer``, ``train_reg``.
    """
    cfg = config.mask
    if not (cfg.inner or cfg.outer or cfg.reg):
        raise ValueError(
            "mask.inner, mask.outer and mask.reg are all false: Method II's loss has "
            "nothing to minimise"
        )
    sampler = TripletSampler([sample.label for sample in splits.train], config.seed)
    val_triplets = validation_triplets(splits.val)

    def method2(training: _MaskTraining) -> _MaskMethod:
        device = training.runtime.device

        def step(batch: dict[str, Any]) -> tuple[int, torch.Tensor]:
            triplet = tuple(batch[role]["image"] for role in TRIPLET_ROLES)
            terms = method2_train_step(
                training.network,
                training.mask_generator,
                training.optimizer,
                triplet,
                config,
                training.runtime,
            )
            return len(triplet[0]), torch.stack([terms.total, terms.inner, terms.outer, terms.reg])

        return _MaskMethod(
            term_names=("loss", "inner", "outer", "reg"),
            loader=lambda epoch: make_triplet_loader(
                training.train_set,
                sampler.triplets(epoch),
                cfg.batch_size,
                epoch=epoch,
                num_workers=config.data.num_workers,
                device=device,
            ),
            step=step,
            validate=lambda: validate_mask_generator_method2(
                training.mask_generator,
                training.network,
                training.val_set,
                config,
                device,
                val_triplets,
                training.runtime,
            ),
        )

    return _train_mask_generator(
        config, embedding, splits, on_epoch, resume_state, progress, method2
    )
