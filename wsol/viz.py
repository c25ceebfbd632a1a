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

from wsol.colors import row_color
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


def _fixed_grid(
    rows: int,
    columns: int,
    *,
    cell: float,
    top: float,
    gap: float = 0.08,
    row_gap: float | None = None,
    left: float = 0.1,
    pad: float = 0.1,
) -> tuple[Any, Any]:
    """A figure of ``rows`` x ``columns`` square cells of ``cell`` inches with fixed
    margins in inches (``top`` above the first row for the suptitle and column titles,
    ``row_gap`` between rows for per-image titles, ``left`` for row labels). Not
    tight_layout: it does not leave room for a suptitle, which then overlaps the titles."""
    row_gap = gap if row_gap is None else row_gap
    width = left + columns * cell + (columns - 1) * gap + pad
    height = top + rows * cell + (rows - 1) * row_gap + pad
    figure, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    figure.subplots_adjust(
        left=left / width,
        right=1 - pad / width,
        top=1 - top / height,
        bottom=pad / height,
        wspace=gap / cell,
        hspace=row_gap / cell,
    )
    return figure, axes


def _suptitle(figure: Any, text: str, fontsize: float = 9) -> None:
    """``text`` at the top edge, inside the room :func:`_fixed_grid` left for it."""
    height = figure.get_size_inches()[1]
    figure.suptitle(text, fontsize=fontsize, y=1 - 0.08 / height, va="top")


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
    lines = 1 + bool(title)
    figure, axes = _fixed_grid(
        rows, columns, cell=2.2, top=0.25 + 0.2 * lines + 0.2, row_gap=0.3, gap=0.15
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
        axis.set_title(Path(str(example.image_id)).name[-28:], fontsize=7)
    _suptitle(figure, (title + "\n" if title else "") + "green: ground truth, red: predicted")
    return _save(figure, path)


def masks_figure(path: Path, examples: Sequence[Any], title: str = "") -> Path:
    """The paper's Fig. 6-7: each image, its weight map and its ground-truth mask."""
    with_masks = [example for example in examples if example.gt_mask is not None]
    if not with_masks:
        raise ValueError("nothing to draw: no example has a ground-truth mask")
    figure, axes = _fixed_grid(len(with_masks), 3, cell=2.0, top=0.3 + (0.3 if title else 0))
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
        _suptitle(figure, title)
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


#: CAM's colour in combined figures; a row's is wsol.colors.row_color, as in MLflow.
CAM_COLOR = "#333333"
TRIAL_LINESTYLES = ("-", "--", ":", "-.")


def method_color(method: str, rows: Sequence[str]) -> str:
    """The colour of ``method`` ("CAM" or one of ``rows``) in every combined figure: a
    row's own colour (the same as its trials' MLflow runs), dark grey for CAM."""
    if method == "CAM" or method not in rows:
        return CAM_COLOR
    return row_color(method)


def comparison_grid(
    path: Path, columns: Sequence[tuple[str, Sequence[Any]]], title: str = ""
) -> Path:
    """The paper's Fig. 5-7 across methods: a line per test image, the image with its
    ground-truth box (green), then each method's map with its predicted (red) and the
    ground-truth boxes.

    ``columns``: (method label, its :class:`wsol.evaluate.MapExample` list), every list
    on the same images in the same order (checked: ValueError naming the method). Each
    line names its image id and class on the left.
    """
    if not columns or not columns[0][1]:
        raise ValueError("nothing to draw: no methods or no examples")
    reference = [example.image_id for example in columns[0][1]]
    for label, examples in columns:
        if [example.image_id for example in examples] != reference:
            raise ValueError(
                f"method {label!r} shows other images ({[e.image_id for e in examples][:3]}...) "
                f"than {columns[0][0]!r} ({reference[:3]}...): the grid needs the same ones"
            )
    lines = len(reference)
    # The id labels get room on the left, the two-line column titles room on top.
    figure, axes = _fixed_grid(lines, 1 + len(columns), cell=1.9, top=1.0, left=1.4)
    for line, first in enumerate(columns[0][1]):
        axes[line, 0].imshow(first.image)
        for box in first.gt_boxes:
            _draw_box(axes[line, 0], box, GT_COLOR)
        name = Path(str(first.image_id)).stem
        axes[line, 0].set_ylabel(
            f"{_wrap(name, 18)}\nclass {first.label}",
            fontsize=7,
            rotation=0,
            ha="right",
            va="center",
        )
        for column, (_, examples) in enumerate(columns, start=1):
            example = examples[line]
            axis = axes[line, column]
            axis.imshow(example.image)
            axis.imshow(example.score_map, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for box in example.gt_boxes:
                _draw_box(axis, box, GT_COLOR)
            _draw_box(axis, example.box, PRED_COLOR)
    axes[0, 0].set_title("image", fontsize=8)
    for column, (label, _) in enumerate(columns, start=1):
        axes[0, column].set_title(_wrap(label), fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    _suptitle(
        figure, (title + "\n" if title else "") + "green: ground truth, red: box from the map"
    )
    return _save(figure, path)


def _wrap(label: str, width: int = 16) -> str:
    """``label`` on two lines when longer than ``width``: after its first ``/`` or
    ``_`` (a trial name: its row, then its trial id), or at its first space, else at
    ``width``, so a title stays within its column."""
    if len(label) <= width:
        return label
    for separator in ("/", "_", " "):
        head, found, tail = label.partition(separator)
        if found:
            return head + (separator if separator != " " else "") + "\n" + tail
    return label[:width] + "\n" + label[width:]


def pr_curves_figure(
    path: Path, curves: Sequence[tuple[str, Any, float, str, str]], title: str = ""
) -> Path:
    """All methods' pixel precision-recall curves on one plot: (label, curve with
    ``precision`` and ``recall``, PxAP in percent, colour, line style) each; the legend
    sits beside the axes so it never hides a curve."""
    if not curves:
        raise ValueError("nothing to draw: no PR curves")
    figure, axis = plt.subplots(figsize=(10.0, 4.4))
    for label, curve, value, color, style in curves:
        axis.plot(
            curve.recall, curve.precision, style, color=color, label=f"{label} (PxAP {value:.1f})"
        )
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    axis.set_title(title or "pixel precision-recall (test split)", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def val_s_curves_figure(path: Path, curves: Sequence[dict[str, Any]], title: str = "") -> Path:
    """The validation S-score of every trial against epoch on one plot, excluded
    (degenerate) epochs drawn as grey crosses, each trial's selected epoch as a star.

    ``curves``: ``{"label", "color", "style", "epochs", "s_scores", "excluded"
    (epochs), "selected" (epoch or None)}`` each.
    """
    if not curves:
        raise ValueError("nothing to draw: no trials")
    figure, axis = plt.subplots(figsize=(10.0, 4.4))
    for curve in curves:
        epochs, scores = list(curve["epochs"]), list(curve["s_scores"])
        axis.plot(
            epochs,
            scores,
            curve["style"],
            color=curve["color"],
            label=curve["label"],
            marker="o",
            markersize=3,
            linewidth=2,
            alpha=0.85,
        )
        by_epoch = dict(zip(epochs, scores, strict=True))
        excluded = [epoch for epoch in curve["excluded"] if epoch in by_epoch]
        axis.plot(excluded, [by_epoch[e] for e in excluded], "x", color="0.45", markersize=8, mew=2)
        if curve["selected"] in by_epoch:
            axis.plot(
                [curve["selected"]],
                [by_epoch[curve["selected"]]],
                "*",
                color=curve["color"],
                markersize=15,
                markeredgecolor="black",
            )
    axis.plot([], [], "x", color="0.45", markersize=8, mew=2, label="excluded (degenerate)")
    axis.plot([], [], "*", color="white", markeredgecolor="black", markersize=15, label="selected")
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation S-score")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    axis.set_title(title or "validation S-score per epoch", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)
