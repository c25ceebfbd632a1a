"""Score maps on held-out samples: the final test-split evaluation, as a library.

A map function turns a batch of images into score maps; :func:`evaluate_maps` runs one
over the given samples (the eval transform: resize, centre crop) and scores its maps
for the ground-truth class with the shared-interface evaluators of :mod:`wsol.metrics`:
GT-known / top-1 localization and top-1 classification (the paper's box rule, tau =
``selection.threshold`` of the map's max), PxAP (when every sample has a mask) and
MaxBoxAccV2. Maps are streamed: one batch at a time is held in memory.

It reads exactly the samples it is given; choosing them (e.g. with
:func:`wsol.data.read_test_split`, and only for already-selected checkpoints) is the
caller's job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from wsol.baselines import class_activation_maps
from wsol.config import RunConfig
from wsol.data import Sample, WsolDataset, build_transform, normalize
from wsol.loaders import make_eval_loader
from wsol.localize import Box, check_score_map
from wsol.metrics import LocalizationEvaluator, MaxBoxAccV2Evaluator, PxAPEvaluator
from wsol.models import Classifier, top1_classes

MapFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(normalised images (B,3,C,C), class indices (B,) int64) -> score maps (B,C,C) in [0,1]."""

GT_KNOWN_IOU = 0.5
"""IoU a box needs with a ground-truth box to count as GT-known correct (the paper's)."""


def mask_generator_maps(mask_generator: nn.Module) -> MapFunction:
    """The map function of a mask generator g (class-agnostic: the classes are ignored).

    Puts g in eval mode. The maps are g's output M (B,1,C,C) without its channel axis,
    unnormalised: the paper's weight map, already in [0, 1] (sigmoid).
    """
    mask_generator.eval()

    @torch.no_grad()
    def maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
        del class_indices
        return mask_generator(images)[:, 0]

    return maps


def cam_maps(classifier: Classifier) -> MapFunction:
    """The map function of CAM with ``classifier``: the requested class's CAM, bilinearly
    upsampled to C x C and min-max normalised per image (see
    :func:`wsol.baselines.class_activation_maps`). Puts the classifier in eval mode."""
    classifier.eval()

    def maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
        return class_activation_maps(classifier, images, class_indices)

    return maps


@dataclass(frozen=True)
class ImageResult:
    """One evaluated image.

    Attributes:
        image_id: the sample's id.
        label: its ground-truth class; predicted_label: f's top-1 class.
        box: the box read off its map (:func:`wsol.localize.box_from_map`), crop pixels.
        best_iou: the box's best IoU with a ground-truth box, in [0, 1].
        gt_known: ``best_iou >= 0.5``; correct_cls: ``predicted_label == label``.
        mask_mean: the mean of its map, in [0, 1].
    """

    image_id: str
    label: int
    predicted_label: int
    box: Box
    best_iou: float
    gt_known: bool
    correct_cls: bool
    mask_mean: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "image_id": self.image_id,
            "label": self.label,
            "predicted_label": self.predicted_label,
            "box": list(self.box),
            "best_iou": self.best_iou,
            "gt_known": self.gt_known,
            "correct_cls": self.correct_cls,
            "mask_mean": self.mask_mean,
        }


@dataclass(frozen=True)
class PixelPRCurve:
    """The pooled pixel precision-recall curve behind PxAP (see
    :meth:`wsol.metrics.PxAPEvaluator.curve`): arrays (T + 2,) ordered by decreasing
    threshold."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class MapExample:
    """One image kept for figures, all in crop pixels.

    Attributes:
        image: (C, C, 3) uint8 RGB crop. score_map: (C, C) float32 map in [0, 1].
        box: the predicted box. gt_boxes: the ground-truth boxes. gt_mask: (C, C) bool
        or None when the sample has no mask. label: the ground-truth class.
    """

    image_id: str
    image: np.ndarray
    score_map: np.ndarray
    box: Box
    gt_boxes: list[Box]
    gt_mask: np.ndarray | None
    label: int = -1


def choose_example_ids(samples: Sequence[Sample], count: int) -> list[str]:
    """Up to ``count`` image ids of ``samples`` for figures, round-robin over the classes:
    the first image of each class (ascending label), then the second of each, and so on,
    each class's images in sorted id order.

    Depends on nothing but the samples' ids and labels, so every method evaluated on the
    same split shows the same images, in the same order, spread over the classes.
    """
    by_class: dict[int, list[str]] = {}
    for sample in samples:
        by_class.setdefault(int(sample.label), []).append(sample.image_id)
    queues = [sorted(ids) for _, ids in sorted(by_class.items())]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < count and any(depth < len(queue) for queue in queues):
        chosen.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return chosen[: max(count, 0)]


@dataclass
class TestEvaluation:
    """What :func:`evaluate_maps` returns.

    ``metrics``: ``gt_known_loc``, ``top1_loc``, ``top1_cls``, ``pxap`` (only when every
    sample has a mask), ``maxboxacc_v2`` (mean over IoU 30/50/70) and
    ``maxboxacc_v2_iou30/50/70``, all in percent; ``mask_mean`` in [0, 1]; ``count``.
    ``maxboxacc_thresholds``: delta -> the map threshold where BoxAcc(delta) peaks.
    """

    __test__ = False  # not a pytest test class, despite the name

    metrics: dict[str, float]
    records: list[ImageResult]
    pr_curve: PixelPRCurve | None
    examples: list[MapExample] = field(default_factory=list)
    maxboxacc_thresholds: dict[int, float] = field(default_factory=dict)


def _uint8_image(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _boxes_list(boxes: torch.Tensor) -> list[Box]:
    return [(int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in boxes.tolist()]


@torch.no_grad()
def evaluate_maps(
    map_fn: MapFunction,
    classifier: Classifier,
    samples: Sequence[Sample],
    config: RunConfig,
    device: torch.device | str,
    *,
    progress: bool = False,
    num_examples: int = 8,
) -> TestEvaluation:
    """Score ``map_fn``'s maps for the ground-truth class on ``samples``.

    Reads only ``samples``, through the eval transform of ``config.data`` (resize, centre
    crop C x C; ground-truth boxes and masks carried into crop pixels), in batches of
    ``config.mask.batch_size``, images normalised with ``config.data.normalization``.
    Top-1 cls is ``classifier``'s top-1 prediction (:func:`wsol.models.top1_classes`:
    for Method II's embedding network, the nearest training-split class mean); the box
    of a map is the largest contour above ``config.selection.threshold`` of its max;
    GT-known needs IoU >= 0.5.
    PxAP is computed on the maps as given (g's M, the paper's Eq. 7-8); MaxBoxAccV2
    min-max normalises each map first, as wsolevaluation does.

    Args:
        map_fn: see :data:`MapFunction`; must return (B, C, C) maps in [0, 1].
        classifier: f, used for top-1 classification (set to eval mode, then restored).
        samples: the images to evaluate, with unique ids and at least one box each.
        config: the run's config (data transform, batch size, box threshold).
        device: where the networks run.
        progress: show a progress bar.
        num_examples: how many images to keep as :class:`MapExample`: those
            :func:`choose_example_ids` picks (across classes), in its order.

    Returns:
        A :class:`TestEvaluation`.

    Raises:
        ValueError: for no samples, a duplicated id, a sample without a box, or a map of
            the wrong shape or outside [0, 1] (naming the image).
    """
    if not samples:
        raise ValueError("no samples to evaluate")
    ids = [sample.image_id for sample in samples]
    if len(set(ids)) != len(ids):
        duplicated = sorted({image_id for image_id in ids if ids.count(image_id) > 1})
        raise ValueError(f"samples hold duplicated image ids: {duplicated[:5]}")
    device = torch.device(device)
    was_training = classifier.training
    classifier.eval()
    with_masks = all(sample.mask_path is not None for sample in samples)
    box_evaluator = LocalizationEvaluator(
        {}, {}, threshold=config.selection.threshold, iou_threshold=GT_KNOWN_IOU
    )
    maxbox_evaluator = MaxBoxAccV2Evaluator({})
    pxap_evaluator = PxAPEvaluator({}) if with_masks else None
    dataset = WsolDataset(samples, build_transform(config.data, train=False), config.seed)
    loader = make_eval_loader(dataset, config.mask.batch_size, config, device)
    records: list[ImageResult] = []
    example_order = {
        image_id: rank for rank, image_id in enumerate(choose_example_ids(samples, num_examples))
    }
    examples: list[MapExample] = []
    batches = tqdm(loader, desc="evaluating", total=len(loader), leave=False, disable=not progress)
    try:
        for batch in batches:
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            normalized = normalize(images, config.data.normalization)
            predicted = top1_classes(classifier, normalized).cpu().tolist()
            maps = map_fn(normalized, labels)
            crop = images.shape[-1]
            if tuple(maps.shape) != (len(images), crop, crop):
                raise ValueError(
                    f"map function returned shape {tuple(maps.shape)}; expected "
                    f"({len(images)}, {crop}, {crop})"
                )
            maps_np = maps.detach().float().cpu().numpy().astype(np.float64)
            for index, image_id in enumerate(batch["image_id"]):
                score_map = maps_np[index]
                try:
                    check_score_map(score_map)
                except ValueError as error:
                    raise ValueError(f"map of image {image_id!r}: {error}") from None
                label = int(batch["label"][index])
                gt_boxes = batch["boxes"][index]
                if len(gt_boxes) == 0:
                    raise ValueError(f"image {image_id!r} has no ground-truth box")
                box_evaluator.add_ground_truth(image_id, gt_boxes.numpy(), label)
                record = box_evaluator.accumulate(score_map, image_id, predicted[index])
                maxbox_evaluator.add_ground_truth(image_id, gt_boxes.numpy())
                maxbox_evaluator.accumulate(score_map, image_id)
                gt_mask = batch["mask"][index, 0].numpy() > 0.5
                if pxap_evaluator is not None:
                    pxap_evaluator.add_ground_truth(image_id, gt_mask)
                    pxap_evaluator.accumulate(score_map, image_id)
                records.append(
                    ImageResult(
                        image_id=image_id,
                        label=label,
                        predicted_label=int(predicted[index]),
                        box=record.box,
                        best_iou=record.best_iou,
                        gt_known=record.gt_known,
                        correct_cls=bool(record.correct_cls),
                        mask_mean=float(score_map.mean()),
                    )
                )
                if image_id in example_order:
                    examples.append(
                        MapExample(
                            image_id=image_id,
                            image=_uint8_image(batch["image"][index]),
                            score_map=score_map.astype(np.float32),
                            box=record.box,
                            gt_boxes=_boxes_list(gt_boxes),
                            gt_mask=gt_mask if bool(batch["has_mask"][index]) else None,
                            label=label,
                        )
                    )
    finally:
        classifier.train(was_training)
    examples.sort(key=lambda example: example_order[example.image_id])

    localization = box_evaluator.compute()
    metrics: dict[str, float] = {
        "gt_known_loc": localization["gt_known_loc"],
        "top1_loc": localization["top1_loc"],
        "top1_cls": localization["top1_cls"],
    }
    pr_curve = None
    if pxap_evaluator is not None:
        metrics["pxap"] = pxap_evaluator.compute()["pxap"]
        pr_curve = PixelPRCurve(*pxap_evaluator.curve())
    maxbox = maxbox_evaluator.compute()
    metrics["maxboxacc_v2"] = maxbox["maxboxacc_v2"]
    for delta in maxbox_evaluator.iou_thresholds:
        metrics[f"maxboxacc_v2_iou{delta}"] = maxbox[f"maxboxacc_v2_iou{delta}"]
    metrics["mask_mean"] = float(np.mean([record.mask_mean for record in records]))
    metrics["count"] = float(len(records))
    return TestEvaluation(
        metrics=metrics,
        records=records,
        pr_curve=pr_curve,
        examples=examples,
        maxboxacc_thresholds=maxbox_evaluator.best_thresholds(),
    )


def save_examples(
    path: Path, examples: Sequence[MapExample], pr_curve: PixelPRCurve | None
) -> Path:
    """Write ``examples`` and ``pr_curve`` to one compressed ``.npz`` at ``path`` (what a
    report needs to draw methods side by side without scoring again); maps are stored
    as float16. Read back with :func:`load_examples`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    crop = examples[0].image.shape[0] if examples else 0
    arrays: dict[str, np.ndarray] = {
        "image_ids": np.array([example.image_id for example in examples], dtype=str),
        "labels": np.array([example.label for example in examples], dtype=np.int64),
        "images": np.array([example.image for example in examples], dtype=np.uint8).reshape(
            len(examples), crop, crop, 3
        ),
        "score_maps": np.array(
            [example.score_map for example in examples], dtype=np.float16
        ).reshape(len(examples), crop, crop),
        "boxes": np.array([example.box for example in examples], dtype=np.int64).reshape(-1, 4),
        "gt_box_counts": np.array([len(e.gt_boxes) for e in examples], dtype=np.int64),
        "gt_boxes": np.array(
            [box for example in examples for box in example.gt_boxes], dtype=np.int64
        ).reshape(-1, 4),
        "has_mask": np.array([example.gt_mask is not None for example in examples], dtype=bool),
        "gt_masks": np.array(
            [
                example.gt_mask if example.gt_mask is not None else np.zeros((crop, crop), bool)
                for example in examples
            ],
            dtype=bool,
        ).reshape(len(examples), crop, crop),
    }
    if pr_curve is not None:
        arrays["pr_precision"] = pr_curve.precision
        arrays["pr_recall"] = pr_curve.recall
        arrays["pr_thresholds"] = pr_curve.thresholds
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_examples(path: Path) -> tuple[list[MapExample], PixelPRCurve | None]:
    """The examples and PR curve :func:`save_examples` wrote to ``path``."""
    with np.load(Path(path)) as data:
        boxes = data["gt_boxes"].tolist()
        starts = np.concatenate([[0], np.cumsum(data["gt_box_counts"])]).tolist()
        examples = [
            MapExample(
                image_id=str(image_id),
                image=data["images"][index],
                score_map=data["score_maps"][index].astype(np.float32),
                box=tuple(int(v) for v in data["boxes"][index]),
                gt_boxes=[
                    tuple(int(v) for v in b) for b in boxes[starts[index] : starts[index + 1]]
                ],
                gt_mask=data["gt_masks"][index] if data["has_mask"][index] else None,
                label=int(data["labels"][index]),
            )
            for index, image_id in enumerate(data["image_ids"])
        ]
        curve = None
        if "pr_precision" in data:
            curve = PixelPRCurve(data["pr_precision"], data["pr_recall"], data["pr_thresholds"])
    return examples, curve
