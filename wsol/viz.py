"""Figures a person would rather look at than read (Fig. 4-style weight-map evolution)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as patches
import matplotlib.pyplot as plt
import numpy as np

from wsol.localize import Box

GT_COLOR = "#00c000"
PRED_COLOR = "#ff2020"


def pick_epochs(epochs: Sequence[int], must_include: Sequence[int], limit: int = 8) -> list[int]:
    """Up to ``limit`` epochs spread evenly over ``epochs``, always with ``must_include``."""
    epochs = sorted(epochs)
    if len(epochs) <= limit:
        return epochs
    picks = set(must_include) & set(epochs)
    spread = np.linspace(0, len(epochs) - 1, max(limit - len(picks), 2)).round().astype(int)
    picks.update(epochs[i] for i in spread)
    return sorted(picks)


def _draw_box(axis: Any, box: Sequence[int], color: str, scale: float = 1.0) -> None:
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    axis.add_patch(
        patches.Rectangle(
            (x0 - 0.5, y0 - 0.5),
            x1 - x0 + scale,
            y1 - y0 + scale,
            fill=False,
            edgecolor=color,
            linewidth=1.5,
        )
    )


def weight_map_evolution(
    path: Path,
    images: Sequence[np.ndarray],
    gt_boxes: Sequence[Sequence[Box]],
    visuals: Sequence[dict[str, Any]],
    selected_epoch: int | None,
    excluded_epochs: Sequence[int] = (),
    title: str = "",
) -> Path:
    """Write a PNG grid: one row per tracked validation image, the input with its
    ground-truth box (green), then g's map at several epochs with the predicted (red)
    and ground-truth (green) boxes; the selected epoch's column is marked.

    images: (C,C,3) uint8 crops; gt_boxes in crop pixels; visuals: per epoch
    ``{"epoch", "maps": (N,h,w) uint8, "boxes": [Box]}`` with boxes in crop pixels.
    """
    by_epoch = {int(v["epoch"]): v for v in visuals}
    must = [selected_epoch] if selected_epoch is not None else []
    epochs = pick_epochs(list(by_epoch), must)
    rows = min(len(images), *(len(by_epoch[e]["maps"]) for e in epochs)) if epochs else 0
    if rows == 0:
        raise ValueError("nothing to draw: no tracked validation images or no epochs")
    columns = 1 + len(epochs)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.6 * columns, 1.6 * rows + 0.5), squeeze=False
    )
    for row in range(rows):
        image = images[row]
        axes[row, 0].imshow(image)
        for box in gt_boxes[row]:
            _draw_box(axes[row, 0], box, GT_COLOR)
        for column, epoch in enumerate(epochs, start=1):
            visual = by_epoch[epoch]
            score_map = visual["maps"][row]
            scale = score_map.shape[0] / image.shape[0]
            axis = axes[row, column]
            axis.imshow(score_map, cmap="jet", vmin=0, vmax=255)
            for box in gt_boxes[row]:
                _draw_box(axis, box, GT_COLOR, scale)
            _draw_box(axis, visual["boxes"][row], PRED_COLOR, scale)
    axes[0, 0].set_title("input", fontsize=8)
    for column, epoch in enumerate(epochs, start=1):
        label = f"epoch {epoch}"
        if epoch == selected_epoch:
            label += "\nselected"
        elif epoch in excluded_epochs:
            label += "\nexcluded"
        axes[0, column].set_title(
            label, fontsize=8, color="black" if epoch != selected_epoch else PRED_COLOR
        )
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(
        (title + "\n" if title else "") + "green: ground truth, red: box from g's map",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _save(figure: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def boxes_figure(path: Path, examples: Sequence[Any], title: str = "") -> Path:
    """The paper's Fig. 5: test images with ground-truth (green) and predicted (red) boxes,
    the map overlaid. ``examples``: :class:`wsol.evaluate.MapExample` (crop pixels)."""
    if not examples:
        raise ValueError("nothing to draw: no examples")
    columns = min(4, len(examples))
    rows = -(-len(examples) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 2.2 * rows + 0.5), squeeze=False
    )
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.axis("off")
    for axis, example in zip(axes.flat, examples, strict=False):
        axis.imshow(example.image)
        axis.imshow(example.score_map, cmap="jet", alpha=0.35, vmin=0, vmax=1)
        for box in example.gt_boxes:
            _draw_box(axis, box, GT_COLOR)
        _draw_box(axis, example.box, PRED_COLOR)
        axis.set_title(Path(str(example.image_id)).name[-24:], fontsize=6)
    figure.suptitle((title + "\n" if title else "") + "green: ground truth, red: predicted")
    figure.tight_layout()
    return _save(figure, path)


def masks_figure(path: Path, examples: Sequence[Any], title: str = "") -> Path:
    """The paper's Fig. 6-7: each image, its weight map and its ground-truth mask."""
    with_masks = [example for example in examples if example.gt_mask is not None]
    if not with_masks:
        raise ValueError("nothing to draw: no example has a ground-truth mask")
    figure, axes = plt.subplots(
        len(with_masks), 3, figsize=(6.0, 2.0 * len(with_masks) + 0.5), squeeze=False
    )
    for row, example in enumerate(with_masks):
        axes[row, 0].imshow(example.image)
        axes[row, 1].imshow(example.score_map, cmap="gray", vmin=0, vmax=1)
        axes[row, 2].imshow(example.gt_mask, cmap="gray", vmin=0, vmax=1)
    for column, label in enumerate(("image", "weight map", "ground-truth mask")):
        axes[0, column].set_title(label, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def pr_curve_figure(path: Path, curves: dict[str, tuple[Any, float]], title: str = "") -> Path:
    """Pixel precision-recall curves behind PxAP: label -> (curve with ``precision`` and
    ``recall`` arrays, its PxAP in percent)."""
    figure, axis = plt.subplots(figsize=(4.5, 4.0))
    for label, (curve, value) in curves.items():
        axis.plot(curve.recall, curve.precision, label=f"{label} (PxAP {value:.1f})")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title or "pixel precision-recall", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def epoch_curve_figure(
    path: Path,
    epochs: Sequence[int],
    test_loc: Sequence[float],
    val_s_score: Sequence[float],
    selected_epoch: int,
    excluded_epochs: Sequence[int] = (),
    title: str = "",
) -> Path:
    """The early-stopping diagnostic: test GT-known loc (%) and validation S-score per
    epoch, the S-selected epoch marked. A diagnostic: never used for selection."""
    figure, loc_axis = plt.subplots(figsize=(6.0, 3.6))
    loc_axis.plot(epochs, test_loc, "o-", color=PRED_COLOR, label="test GT-known loc (%)")
    loc_axis.set_xlabel("epoch")
    loc_axis.set_ylabel("test GT-known loc (%)", color=PRED_COLOR)
    s_axis = loc_axis.twinx()
    s_axis.plot(epochs, val_s_score, "s--", color="#2060ff", label="validation S-score")
    s_axis.set_ylabel("validation S-score", color="#2060ff")
    for epoch in excluded_epochs:
        loc_axis.axvspan(epoch - 0.5, epoch + 0.5, color="0.85", zorder=0)
    loc_axis.axvline(selected_epoch, color="black", linestyle=":", label="S-selected epoch")
    loc_axis.legend(loc="lower right", fontsize=7)
    figure.suptitle(
        "DIAGNOSTIC (never used for selection)" + ("\n" + title if title else ""), fontsize=9
    )
    figure.tight_layout()
    return _save(figure, path)
