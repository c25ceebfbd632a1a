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
