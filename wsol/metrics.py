"""Localization metrics: IoU, GT-known / top-1 localization, top-1 classification, PxAP,
MaxBoxAccV2.

Modelled on the evaluation protocol of Choe et al. (CVPR 2020, clovaai/wsolevaluation):
boxes are inclusive ``(x0, y0, x1, y1)`` pixel boxes (areas count ``+1`` on each side),
and evaluators are built with the ground truth keyed by image id, fed one score map at a
time with ``accumulate(score_map, image_id, ...)``, then read with ``compute()``.
Ground truth that is only known while streaming (e.g. boxes carried through a crop) can
be registered one image at a time with ``add_ground_truth(image_id, ...)`` before that
image's ``accumulate``. All accuracies are percentages in [0, 100].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wsol.localize import (
    Box,
    MapSummary,
    box_from_map,
    boxes_from_map_all_contours,
    check_score_map,
    summarize_map,
)


def _as_box_array(boxes: np.ndarray | Sequence[Box], name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) of (x0, y0, x1, y1); got {array.shape}")
    bad = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"{name}[{index}] = {tuple(array[index].tolist())} is not an (x0, y0, x1, y1) box: "
            "need x1 >= x0 and y1 >= y0"
        )
    return array


def iou_matrix(
    boxes_a: np.ndarray | Sequence[Box], boxes_b: np.ndarray | Sequence[Box]
) -> np.ndarray:
    """Pairwise IoU of inclusive pixel boxes.

    Args:
        boxes_a: (N, 4) boxes (x0, y0, x1, y1), x1 >= x0 and y1 >= y0.
        boxes_b: (M, 4) boxes, same convention.

    Returns:
        (N, M) float64 array in [0, 1]; entry (i, j) is IoU(boxes_a[i], boxes_b[j]) with
        areas ``(x1 - x0 + 1) * (y1 - y0 + 1)``.

    Raises:
        ValueError: on a wrong shape or a box with x1 < x0 or y1 < y0.
    """
    a = _as_box_array(boxes_a, "boxes_a")[:, None, :]
    b = _as_box_array(boxes_b, "boxes_b")[None, :, :]
    inter_w = np.maximum(
        0.0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    )
    inter_h = np.maximum(
        0.0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    )
    intersection = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return intersection / (area_a + area_b - intersection)


def iou(box_a: Box, box_b: Box) -> float:
    """IoU of two inclusive pixel boxes (x0, y0, x1, y1), in [0, 1]; 0.0 when disjoint.

    Raises:
        ValueError: if either box has x1 < x0 or y1 < y0.
    """
    return float(iou_matrix([box_a], [box_b])[0, 0])


def top1_accuracy(
    predicted: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> float:
    """Percentage of positions where the predicted class equals the label, in [0, 100].

    Raises:
        ValueError: if the sequences are empty or differ in length.
    """
    predicted_array = np.asarray(predicted).reshape(-1)
    label_array = np.asarray(labels).reshape(-1)
    if predicted_array.shape != label_array.shape:
        raise ValueError(
            f"predicted and labels differ in length: {predicted_array.size} vs {label_array.size}"
        )
    if predicted_array.size == 0:
        raise ValueError("top-1 accuracy of no predictions is undefined")
    return float((predicted_array == label_array).mean() * 100.0)


@dataclass(frozen=True)
class LocalizationRecord:
    """One accumulated image, kept for figures.

    Attributes:
        image_id: the image's key in the ground truth.
        box: the predicted box (:func:`wsol.localize.box_from_map`).
        best_iou: the highest IoU of that box with any ground-truth box, in [0, 1].
        gt_known: ``best_iou >= iou_threshold``.
        correct_cls: whether the predicted label matched; None when no label was given.
    """

    image_id: str
    box: Box
    best_iou: float
    gt_known: bool
    correct_cls: bool | None


class LocalizationEvaluator:
    """GT-known localization, top-1 localization and top-1 classification accuracy.

    An image is GT-known correct when the box from its map has IoU >= ``iou_threshold``
    with any of its ground-truth boxes, top-1 cls correct when the predicted label equals
    its label, and top-1 loc correct when both hold. Either every ``accumulate`` call
    passes ``predicted_label`` or none does.

    Args:
        gt_boxes: image id -> one or more inclusive ground-truth boxes, in the pixel
            coordinates of the score maps that will be accumulated.
        gt_labels: image id -> class index; needed only to pass ``predicted_label``.
        threshold: box threshold, a fraction of each map's maximum (see ``box_from_map``).
        iou_threshold: minimum IoU for a correct box, in [0, 1].

    Raises:
        ValueError: if an image has no ground-truth box, a box is malformed, or a
            threshold is outside [0, 1].
    """

    def __init__(
        self,
        gt_boxes: Mapping[str, Sequence[Box]],
        gt_labels: Mapping[str, int] | None = None,
        threshold: float = 0.1,
        iou_threshold: float = 0.5,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1]; got {threshold}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must lie in [0, 1]; got {iou_threshold}")
        self._gt_boxes: dict[str, np.ndarray] = {}
        for image_id, boxes in gt_boxes.items():
            array = _as_box_array(boxes, f"gt_boxes[{image_id!r}]")
            if len(array) == 0:
                raise ValueError(f"gt_boxes[{image_id!r}] holds no box; every image needs one")
            self._gt_boxes[image_id] = array
        self._gt_labels = dict(gt_labels) if gt_labels is not None else None
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        self.records: list[LocalizationRecord] = []
        self._seen: set[str] = set()

    def add_ground_truth(
        self, image_id: str, boxes: np.ndarray | Sequence[Box], label: int | None = None
    ) -> None:
        """Register one more image's ground truth (for ground truth known only while streaming).

        Args:
            image_id: an id with no ground-truth boxes yet.
            boxes: (N, 4) inclusive boxes, N >= 1, in the pixel coordinates of its score map.
            label: its class index; needed only if its ``accumulate`` passes a
                ``predicted_label``.

        Raises:
            ValueError: if the id already has ground truth, or the boxes are malformed or none.
        """
        if image_id in self._gt_boxes:
            raise ValueError(f"image id {image_id!r} already has ground-truth boxes")
        array = _as_box_array(boxes, f"gt_boxes[{image_id!r}]")
        if len(array) == 0:
            raise ValueError(f"gt_boxes[{image_id!r}] holds no box; every image needs one")
        self._gt_boxes[image_id] = array
        if label is not None:
            if self._gt_labels is None:
                self._gt_labels = {}
            self._gt_labels[image_id] = int(label)

    def accumulate(
        self,
        score_map: np.ndarray,
        image_id: str,
        predicted_label: int | None = None,
        *,
        box: Box | None = None,
    ) -> LocalizationRecord:
        """Score one map and remember the outcome.

        Args:
            score_map: (H, W) float map in [0, 1], in the ground truth's pixel coordinates.
            image_id: a key of ``gt_boxes``, not accumulated before.
            predicted_label: the classifier's top-1 class for this image, or None.
            box: the map's box if the caller already has it
                (``box_from_map(score_map, threshold)``), so it is not traced twice.

        Returns:
            The record appended to ``records``.

        Raises:
            KeyError: for an image id without ground truth (box, or label when
                ``predicted_label`` is given).
            ValueError: for an invalid map, an id accumulated twice, or mixing calls with
                and without ``predicted_label``.
        """
        if image_id not in self._gt_boxes:
            raise KeyError(f"image id {image_id!r} has no ground-truth boxes")
        if image_id in self._seen:
            raise ValueError(f"image id {image_id!r} was already accumulated")
        if self.records and (self.records[0].correct_cls is None) != (predicted_label is None):
            raise ValueError(
                f"image id {image_id!r}: predicted_label must be given for every image or for none"
            )
        correct_cls: bool | None = None
        if predicted_label is not None:
            if self._gt_labels is None:
                raise ValueError(
                    f"image id {image_id!r}: predicted_label given but the evaluator has no "
                    "gt_labels"
                )
            if image_id not in self._gt_labels:
                raise KeyError(f"image id {image_id!r} has no ground-truth label")
            correct_cls = int(predicted_label) == int(self._gt_labels[image_id])
        if box is None:
            box = box_from_map(score_map, self.threshold)
        best_iou = float(iou_matrix([box], self._gt_boxes[image_id]).max())
        record = LocalizationRecord(
            image_id=image_id,
            box=box,
            best_iou=best_iou,
            gt_known=best_iou >= self.iou_threshold,
            correct_cls=correct_cls,
        )
        self.records.append(record)
        self._seen.add(image_id)
        return record

    def compute(self) -> dict[str, float]:
        """Accuracies over the accumulated images, in percent.

        Returns:
            ``gt_known_loc`` and ``count`` (the number of images); plus ``top1_loc`` and
            ``top1_cls`` when predicted labels were accumulated.

        Raises:
            ValueError: if nothing was accumulated.
        """
        if not self.records:
            raise ValueError("no score map was accumulated; nothing to compute")
        count = len(self.records)
        gt_known = np.array([r.gt_known for r in self.records])

        def percent(hits: np.ndarray) -> float:
            return 100.0 * int(np.count_nonzero(hits)) / count

        result = {"gt_known_loc": percent(gt_known)}
        if self.records[0].correct_cls is not None:
            correct_cls = np.array([bool(r.correct_cls) for r in self.records])
            result["top1_loc"] = percent(gt_known & correct_cls)
            result["top1_cls"] = percent(correct_cls)
        result["count"] = float(count)
        return result


class ValidationMapEvaluator:
    """What the g loop measures on the validation split each epoch: the label-free
    S-score (Eq. 6) that selects the epoch, the box's share of the image and the map's
    mean that our guard reads, and GT-known localization on the images with boxes.

    ``accumulate(score_map, image_id)`` takes every validation map; boxes are optional
    per image (``add_ground_truth`` first, for those that have them). The S-score and the
    guard never read them.

    Args:
        threshold: tau as a fraction of each map's maximum, for the box and Eq. 6.
    """

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold
        self._localization = LocalizationEvaluator({}, threshold=threshold)
        self._with_boxes: set[str] = set()
        self._sums = {"s_score": 0.0, "box_fraction": 0.0, "mask_mean": 0.0}
        self._s_score_squares = 0.0
        self.count = 0

    def add_ground_truth(self, image_id: str, boxes: np.ndarray | Sequence[Box]) -> None:
        """Register the ground-truth boxes (N >= 1) of one image before its ``accumulate``."""
        self._localization.add_ground_truth(image_id, boxes)
        self._with_boxes.add(image_id)

    def accumulate(self, score_map: np.ndarray, image_id: str) -> MapSummary:
        """Summarise one (H, W) map in [0, 1]; returns its box, S-score, box fraction, mean."""
        summary = summarize_map(score_map, self.threshold)
        self._sums["s_score"] += summary.s_score
        self._s_score_squares += summary.s_score**2
        self._sums["box_fraction"] += summary.box_fraction
        self._sums["mask_mean"] += summary.mean_value
        if image_id in self._with_boxes:
            self._localization.accumulate(score_map, image_id, box=summary.box)
        self.count += 1
        return summary

    def compute(self) -> dict[str, float]:
        """Means over the accumulated maps: ``s_score`` in [0, 1], ``box_fraction`` in
        (0, 1], ``mask_mean`` in [0, 1], ``count``; ``s_score_se``, the standard error of
        the mean S (sample standard deviation over the maps / sqrt(count); 0.0 for one
        map); ``gt_known_loc`` (%) over the images with boxes, when there were any.

        Raises:
            ValueError: if nothing was accumulated.
        """
        if not self.count:
            raise ValueError("no score map was accumulated; nothing to compute")
        result = {name: total / self.count for name, total in self._sums.items()}
        result["s_score_se"] = _standard_error(
            self._sums["s_score"], self._s_score_squares, self.count
        )
        if self._localization.records:
            result["gt_known_loc"] = self._localization.compute()["gt_known_loc"]
        result["count"] = float(self.count)
        return result


def _standard_error(total: float, squares: float, count: int) -> float:
    """Standard error of a mean from the sum and sum of squares of ``count`` values."""
    if count < 2:
        return 0.0
    mean = total / count
    # max(): rounding can take the difference a hair below zero for equal values.
    variance = max(squares - count * mean * mean, 0.0) / (count - 1)
    return math.sqrt(variance / count)


def _check_mask(mask: np.ndarray, image_id: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask of image {image_id!r} must be 2-D (H, W); got shape {array.shape}")
    if array.dtype != np.bool_:
        values = np.unique(array)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"mask of image {image_id!r} must be boolean or hold only 0 and 1; found "
                f"values {values[:10].tolist()}"
            )
    return array.astype(bool)


class PxAPEvaluator:
    """Pixel average precision: the area under the pixel-wise precision-recall curve.

    Follows wsolevaluation's ``MaskEvaluator``: scores are binned with right edges
    ``[0, 1/T, ..., 1 - 1/T, 1, 2, 3]`` (T = ``num_thresholds``), so a score of exactly
    1.0 lands in ``[1, 2)``; foreground and background histograms are summed over all
    accumulated images, and precision and recall are taken at every bin edge from the
    top down (the paper's Eq. 7-8).

    Args:
        gt_masks: image id -> (H, W) foreground mask, bool or 0/1.
        num_thresholds: T, the number of score thresholds in [0, 1).

    Raises:
        ValueError: for a mask that is not 2-D or holds values other than 0/1, or
            ``num_thresholds < 1``.
    """

    def __init__(self, gt_masks: Mapping[str, np.ndarray], num_thresholds: int = 100) -> None:
        if num_thresholds < 1:
            raise ValueError(f"num_thresholds must be >= 1; got {num_thresholds}")
        self._gt_masks = {
            image_id: _check_mask(mask, image_id) for image_id, mask in gt_masks.items()
        }
        self.num_thresholds = num_thresholds
        self.thresholds = np.arange(0, 1, 1 / num_thresholds)
        self._bin_edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self._fg_hist = np.zeros(len(self._bin_edges) - 1, dtype=np.float64)
        self._bg_hist = np.zeros(len(self._bin_edges) - 1, dtype=np.float64)
        self._seen: set[str] = set()

    def add_ground_truth(self, image_id: str, mask: np.ndarray) -> None:
        """Register one more image's (H, W) bool or 0/1 mask.

        Raises:
            ValueError: if the id already has a mask or was accumulated, or the mask is
                invalid (see the class).
        """
        if image_id in self._gt_masks or image_id in self._seen:
            raise ValueError(f"image id {image_id!r} already has a ground-truth mask")
        self._gt_masks[image_id] = _check_mask(mask, image_id)

    def accumulate(self, score_map: np.ndarray, image_id: str) -> None:
        """Add one map's foreground and background score histograms.

        The image's mask is released once accumulated, so memory stays bounded by the
        masks registered but not yet accumulated.

        Args:
            score_map: (H, W) float map in [0, 1], the same shape as the image's mask.
            image_id: a key of ``gt_masks``, not accumulated before.

        Raises:
            KeyError: for an image id without a mask.
            ValueError: for an invalid map, a shape mismatch (naming the id and both
                shapes) or an id accumulated twice.
        """
        if image_id in self._seen:
            raise ValueError(f"image id {image_id!r} was already accumulated")
        if image_id not in self._gt_masks:
            raise KeyError(f"image id {image_id!r} has no ground-truth mask")
        score_map = check_score_map(score_map)
        mask = self._gt_masks[image_id]
        if score_map.shape != mask.shape:
            raise ValueError(
                f"image {image_id!r}: score map shape {score_map.shape} differs from mask "
                f"shape {mask.shape}"
            )
        self._fg_hist += np.histogram(score_map[mask], bins=self._bin_edges)[0]
        self._bg_hist += np.histogram(score_map[~mask], bins=self._bin_edges)[0]
        self._seen.add(image_id)
        del self._gt_masks[image_id]

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pixel precision-recall curve over the accumulated images.

        Returns:
            ``(precision, recall, thresholds)``, each of shape (T + 2,), ordered by
            decreasing threshold: entry i is for predicting foreground where
            ``score >= thresholds[i]``, with thresholds ``[2, 1, 1 - 1/T, ..., 0]``.
            Precision is 0 where nothing is predicted; recall is non-decreasing, ending
            at 1.

        Raises:
            ValueError: if nothing was accumulated or no foreground pixel was seen.
        """
        if not self._seen:
            raise ValueError("no score map was accumulated; nothing to compute")
        num_fg = self._fg_hist.sum()
        if num_fg == 0:
            raise ValueError("the accumulated masks hold no foreground pixel; PxAP is undefined")
        tp = self._fg_hist[::-1].cumsum()
        fp = self._bg_hist[::-1].cumsum()
        predicted = tp + fp
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = tp / num_fg
        return precision, recall, self._bin_edges[:-1][::-1].copy()

    def compute(self) -> dict[str, float]:
        """``{"pxap": area under the PR curve in percent, in [0, 100]}``.

        Raises:
            ValueError: if nothing was accumulated or no foreground pixel was seen.
        """
        precision, recall, _ = self.curve()
        return {"pxap": float((precision[1:] * np.diff(recall)).sum() * 100.0)}


def pxap(
    score_maps: Sequence[np.ndarray], masks: Sequence[np.ndarray], num_thresholds: int = 100
) -> float:
    """PxAP in percent of maps against their masks, pooled over all pairs.

    Args:
        score_maps: (H_i, W_i) float maps in [0, 1].
        masks: matching (H_i, W_i) bool or 0/1 masks, same length as ``score_maps``.
        num_thresholds: number of score thresholds in [0, 1).

    Raises:
        ValueError: if the sequences differ in length or as :class:`PxAPEvaluator`.
    """
    if len(score_maps) != len(masks):
        raise ValueError(
            f"score_maps and masks differ in length: {len(score_maps)} vs {len(masks)}"
        )
    evaluator = PxAPEvaluator(
        {str(index): mask for index, mask in enumerate(masks)}, num_thresholds=num_thresholds
    )
    for index, score_map in enumerate(score_maps):
        evaluator.accumulate(score_map, str(index))
    return evaluator.compute()["pxap"]


# ---------------------------------------------------------------- MaxBoxAccV2

DEFAULT_BOX_IOU_THRESHOLDS: tuple[int, ...] = (30, 50, 70)
"""MaxBoxAccV2's IoU thresholds delta, in percent (Choe et al., CVPR 2020)."""


def min_max_normalize(score_map: np.ndarray) -> np.ndarray:
    """``(map - min) / (max - min)``, as wsolevaluation's ``normalize_scoremap``.

    Args:
        score_map: (H, W) finite real map.

    Returns:
        A new (H, W) floating map in [0, 1] whose max is 1.0; all zeros for a constant
        map (no pixel then survives any threshold: the box is ``(0, 0, 0, 0)``).
    """
    array = np.asarray(score_map)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    low, high = array.min(), array.max()
    if high == low:
        return np.zeros_like(array)
    return (array - low) / (high - low)


def max_iou_per_threshold(
    score_map: np.ndarray,
    gt_boxes: np.ndarray | Sequence[Box],
    cam_thresholds: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """For each score-map threshold, the best IoU of any contour's box with any GT box.

    At threshold tau the boxes are those of *all* contours of the map above tau
    (:func:`wsol.localize.boxes_from_map_all_contours`, i.e. wsolevaluation's
    ``compute_bboxes_from_scoremaps(..., multi_contour_eval=True)``: tau is a fraction
    of the map's maximum, so on a min-max-normalised map it is the absolute value).

    Args:
        score_map: (H, W) float map in [0, 1].
        gt_boxes: (N, 4) inclusive ground-truth boxes, N >= 1, in the map's pixels.
        cam_thresholds: T thresholds in [0, 1].

    Returns:
        (T,) float64 array of IoUs in [0, 1].

    Raises:
        ValueError: for an invalid map, threshold or box.
    """
    score_map = check_score_map(score_map)
    gt_array = _as_box_array(gt_boxes, "gt_boxes")
    if len(gt_array) == 0:
        raise ValueError("gt_boxes holds no box; need at least one")
    boxes: list[Box] = []
    starts: list[int] = []
    for threshold in cam_thresholds:
        starts.append(len(boxes))
        boxes.extend(boxes_from_map_all_contours(score_map, float(threshold)))
    if not boxes:
        return np.zeros(0, dtype=np.float64)
    best_per_box = iou_matrix(boxes, gt_array).max(axis=1)
    return np.maximum.reduceat(best_per_box, starts)


class MaxBoxAccV2Evaluator:
    """MaxBoxAccV2 (Choe et al., CVPR 2020; wsolevaluation's ``BoxEvaluator`` with
    ``multi_contour_eval=True``).

    For every score-map threshold tau in ``np.arange(0, 1, cam_curve_interval)``, an
    image is correct at IoU threshold delta when some box of some contour of its map
    above tau has IoU >= delta / 100 with some ground-truth box (see
    :func:`max_iou_per_threshold`). BoxAcc(delta) is the best accuracy over tau (one
    tau for the whole data set, not one per image); MaxBoxAccV2 is the mean over the
    deltas.

    Args:
        gt_boxes: image id -> one or more inclusive boxes in the maps' pixel coordinates
            (more can be added with :meth:`add_ground_truth`).
        iou_thresholds: the deltas, in percent, each in (0, 100].
        cam_curve_interval: the spacing of the tau grid, in (0, 1].
        normalize: min-max normalise each map first (:func:`min_max_normalize`), as
            wsolevaluation's inference does before ``BoxEvaluator.accumulate``; with
            False, tau stays a fraction of each map's own maximum.

    Raises:
        ValueError: for an empty or out-of-range ``iou_thresholds``, a bad interval, an
            image without boxes or a malformed box.
    """

    def __init__(
        self,
        gt_boxes: Mapping[str, Sequence[Box]],
        iou_thresholds: Sequence[int] = DEFAULT_BOX_IOU_THRESHOLDS,
        cam_curve_interval: float = 0.01,
        normalize: bool = True,
    ) -> None:
        deltas = tuple(int(delta) for delta in iou_thresholds)
        if not deltas:
            raise ValueError("iou_thresholds is empty; give IoU thresholds in percent, e.g. 50")
        if (
            any(not 0 < delta <= 100 for delta in deltas)
            or len(set(deltas)) != len(deltas)
            or any(delta != given for delta, given in zip(deltas, iou_thresholds, strict=True))
        ):
            raise ValueError(
                f"iou_thresholds must be distinct percentages in (0, 100]; got {list(deltas)}"
            )
        if not 0.0 < cam_curve_interval <= 1.0:
            raise ValueError(f"cam_curve_interval must lie in (0, 1]; got {cam_curve_interval}")
        self.iou_thresholds = deltas
        self.cam_curve_interval = cam_curve_interval
        self.cam_thresholds = np.arange(0, 1, cam_curve_interval)
        self.normalize = normalize
        self._gt_boxes: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()
        for image_id, boxes in gt_boxes.items():
            self.add_ground_truth(image_id, boxes)
        self._num_correct = {
            delta: np.zeros(len(self.cam_thresholds), dtype=np.int64) for delta in deltas
        }

    @property
    def count(self) -> int:
        """The number of images accumulated so far."""
        return len(self._seen)

    def add_ground_truth(self, image_id: str, boxes: np.ndarray | Sequence[Box]) -> None:
        """Register one more image's (N, 4) inclusive boxes, N >= 1.

        Raises:
            ValueError: if the id already has boxes, or the boxes are malformed or none.
        """
        if image_id in self._gt_boxes or image_id in self._seen:
            raise ValueError(f"image id {image_id!r} already has ground-truth boxes")
        array = _as_box_array(boxes, f"gt_boxes[{image_id!r}]")
        if len(array) == 0:
            raise ValueError(f"gt_boxes[{image_id!r}] holds no box; every image needs one")
        self._gt_boxes[image_id] = array

    def accumulate(self, score_map: np.ndarray, image_id: str) -> np.ndarray:
        """Score one map at every threshold and count it.

        Args:
            score_map: (H, W) float map in [0, 1], in the ground truth's pixels.
            image_id: an id with ground truth, not accumulated before.

        Returns:
            The image's (T,) best IoU at each threshold of ``cam_thresholds``.

        Raises:
            KeyError: for an id without ground-truth boxes.
            ValueError: for an invalid map (NaN, inf, outside [0, 1]; the message names
                the image) or an id accumulated twice.
        """
        if image_id in self._seen:
            raise ValueError(f"image id {image_id!r} was already accumulated")
        if image_id not in self._gt_boxes:
            raise KeyError(f"image id {image_id!r} has no ground-truth boxes")
        try:
            score_map = check_score_map(score_map)
        except ValueError as error:
            raise ValueError(f"image {image_id!r}: {error}") from None
        if self.normalize:
            score_map = min_max_normalize(score_map)
        ious = max_iou_per_threshold(score_map, self._gt_boxes.pop(image_id), self.cam_thresholds)
        for delta in self.iou_thresholds:
            self._num_correct[delta] += ious >= delta / 100
        self._seen.add(image_id)
        return ious

    def curves(self) -> dict[int, np.ndarray]:
        """delta -> (T,) box accuracy in percent at each threshold of ``cam_thresholds``.

        Raises:
            ValueError: if nothing was accumulated.
        """
        if not self._seen:
            raise ValueError("no score map was accumulated; nothing to compute")
        return {delta: correct * 100.0 / self.count for delta, correct in self._num_correct.items()}

    def best_thresholds(self) -> dict[int, float]:
        """delta -> the (first) threshold tau at which BoxAcc(delta) peaks."""
        return {
            delta: float(self.cam_thresholds[int(np.argmax(curve))])
            for delta, curve in self.curves().items()
        }

    def compute(self) -> dict[str, float]:
        """``maxboxacc_v2_iou{delta}`` for each delta, their mean ``maxboxacc_v2`` (all in
        percent) and ``count``.

        Raises:
            ValueError: if nothing was accumulated.
        """
        result = {
            f"maxboxacc_v2_iou{delta}": float(curve.max()) for delta, curve in self.curves().items()
        }
        result["maxboxacc_v2"] = float(np.mean(list(result.values())))
        result["count"] = float(self.count)
        return result
