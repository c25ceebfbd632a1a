"""From a weight map to a box, and the label-free S-score (Eq. 6) used for early stopping.

Boxes follow the WSOL evaluation protocol of Choe et al. (CVPR 2020,
clovaai/wsolevaluation): ``(x0, y0, x1, y1)`` in pixels, inclusive, x along the width.
The box extraction reproduces that protocol's ``compute_bboxes_from_scoremaps``
exactly, including its quirk: ``x1 = x + w`` and ``y1 = y + h`` from
``cv2.boundingRect``, i.e. one pixel past the last foreground column/row (clipped to
``W - 1`` / ``H - 1``), so that published numbers stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, inclusive; 0 <= x0 <= x1 <= W-1, 0 <= y0 <= y1 <= H-1."""

EMPTY_BOX: Box = (0, 0, 0, 0)
"""The box the protocol returns when the thresholded map has no contour."""


def check_score_map(score_map: np.ndarray) -> np.ndarray:
    """Validate a score map and return it as a float array.

    Args:
        score_map: array-like of shape (H, W), H, W >= 1, finite real values in [0, 1].

    Returns:
        The map as a floating array of shape (H, W). A floating input keeps its dtype
        (and is not copied) so that the uint8 scaling matches the reference bit for bit;
        integer or bool input is converted to float64.

    Raises:
        ValueError: if the map is not 2-D, is empty, is not real-valued, contains NaN or
            inf (the message gives the count), or has values outside [0, 1] (the message
            gives the min and max found).
    """
    array = np.asarray(score_map)
    if array.ndim != 2:
        raise ValueError(
            f"score map must be 2-D (H, W); got {array.ndim}-D array of shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"score map must not be empty; got shape {array.shape}")
    if np.issubdtype(array.dtype, np.bool_) or np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64)
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"score map must hold real numbers; got dtype {array.dtype}")
    num_nan = int(np.isnan(array).sum())
    if num_nan:
        raise ValueError(
            f"score map of shape {array.shape} contains {num_nan} NaN value(s); "
            "expected finite values in [0, 1]"
        )
    num_inf = int(np.isinf(array).sum())
    if num_inf:
        raise ValueError(
            f"score map of shape {array.shape} contains {num_inf} infinite value(s); "
            "expected finite values in [0, 1]"
        )
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"score map values must lie in [0, 1]; found min={low:.6g}, max={high:.6g} "
            f"(shape {array.shape})"
        )
    return array


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (a fraction of the max); got {threshold}")


def _contours(score_map: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Contours of the binarised map, exactly as in wsolevaluation (map already validated)."""
    _check_threshold(threshold)
    image = (score_map * 255).astype(np.uint8)
    _, binary = cv2.threshold(
        image, thresh=int(threshold * image.max()), maxval=255, type=cv2.THRESH_BINARY
    )
    # OpenCV 3 returns (image, contours, hierarchy), 4 and later (contours, hierarchy).
    found = cv2.findContours(binary, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)
    return list(found[-2])


def _contour_box(contour: np.ndarray, height: int, width: int) -> Box:
    x, y, w, h = cv2.boundingRect(contour)
    return (int(x), int(y), int(min(x + w, width - 1)), int(min(y + h, height - 1)))


def _largest_contour_box(score_map: np.ndarray, threshold: float) -> Box:
    contours = _contours(score_map, threshold)
    if not contours:
        return EMPTY_BOX
    height, width = score_map.shape
    return _contour_box(max(contours, key=cv2.contourArea), height, width)


def box_from_map(score_map: np.ndarray, threshold: float = 0.1) -> Box:
    """The box of the largest contour of the thresholded map (the paper's and CAM's rule).

    Pixels whose uint8 value ``int(score_map * 255)`` is strictly above
    ``int(threshold * max_uint8)`` are foreground; the contour of largest
    ``cv2.contourArea`` (the first one on ties) gives ``(x, y, x + w, y + h)`` from
    ``cv2.boundingRect``, with x1 clipped to ``W - 1`` and y1 to ``H - 1``.

    Args:
        score_map: (H, W) float map with values in [0, 1].
        threshold: fraction of the map's maximum, in [0, 1]; 0.1 is the paper's tau.

    Returns:
        An inclusive box inside the image; ``(0, 0, 0, 0)`` when no pixel survives.

    Raises:
        ValueError: for an invalid map (see :func:`check_score_map`) or threshold.
    """
    return _largest_contour_box(check_score_map(score_map), threshold)


def boxes_from_map_all_contours(score_map: np.ndarray, threshold: float = 0.1) -> list[Box]:
    """Every contour's box, in OpenCV's order (as MaxBoxAccV2's multi-contour evaluation).

    Same thresholding and box rules as :func:`box_from_map`; ``RETR_TREE`` also returns
    the inner contours of holes, and each gets its box.

    Returns:
        A non-empty list: ``[(0, 0, 0, 0)]`` when no pixel survives, as in the reference.

    Raises:
        ValueError: for an invalid map or threshold.
    """
    score_map = check_score_map(score_map)
    contours = _contours(score_map, threshold)
    if not contours:
        return [EMPTY_BOX]
    height, width = score_map.shape
    return [_contour_box(contour, height, width) for contour in contours]


def _check_box(box: Box, height: int, width: int) -> None:
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 <= width - 1 and 0 <= y0 <= y1 <= height - 1):
        raise ValueError(
            f"box {tuple(box)} is not an inclusive (x0, y0, x1, y1) box inside an image of "
            f"shape (H, W) = ({height}, {width}); need 0 <= x0 <= x1 <= {width - 1} and "
            f"0 <= y0 <= y1 <= {height - 1}"
        )


def _s_score(score_map: np.ndarray, box: Box, threshold: float) -> float:
    tau = threshold * float(score_map.max())
    thresholded = np.where(score_map < tau, 0.0, score_map)
    total = float(thresholded.sum(dtype=np.float64))
    if total == 0.0:
        return 0.0
    x0, y0, x1, y1 = box
    inside = float(thresholded[y0 : y1 + 1, x0 : x1 + 1].sum(dtype=np.float64))
    return inside / total


def s_score(score_map: np.ndarray, box: Box, threshold: float = 0.1) -> float:
    """Eq. 6: the share of the thresholded map's mass that lies inside ``box``.

    ``M_hat`` is the map with values below ``tau = threshold * max(map)`` set to zero
    (values equal to tau are kept, unlike the strict uint8 rule of :func:`box_from_map`);
    ``S = sum(M_hat inside the inclusive box) / sum(M_hat)``.

    Args:
        score_map: (H, W) float map with values in [0, 1].
        box: inclusive (x0, y0, x1, y1) inside the image.
        threshold: fraction of the map's maximum, in [0, 1].

    Returns:
        S in [0, 1]; 0.0 for an all-zero map.

    Raises:
        ValueError: for an invalid map, threshold, or a box outside the image or with
            x1 < x0 or y1 < y0 (the message names the box and the map shape).
    """
    score_map = check_score_map(score_map)
    _check_threshold(threshold)
    _check_box(box, *score_map.shape)
    return _s_score(score_map, box, threshold)


def box_area_fraction(box: Box, height: int, width: int) -> float:
    """Inclusive box area ``(x1 - x0 + 1) * (y1 - y0 + 1)`` over the image area ``H * W``.

    Returns:
        A fraction in (0, 1]; ``(0, 0, 0, 0)`` covers one pixel.

    Raises:
        ValueError: if height or width is not positive, or the box is not inside the image.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image height and width must be >= 1; got ({height}, {width})")
    _check_box(box, height, width)
    x0, y0, x1, y1 = box
    return (x1 - x0 + 1) * (y1 - y0 + 1) / (height * width)


@dataclass(frozen=True)
class MapSummary:
    """What the training loop records per validation map.

    Attributes:
        box: the protocol box of the largest contour (:func:`box_from_map`).
        s_score: Eq. 6 for that box, in [0, 1].
        box_fraction: the box's share of the image area, in (0, 1].
        mean_value: the mean of the raw (unthresholded) map, in [0, 1].
    """

    box: Box
    s_score: float
    box_fraction: float
    mean_value: float


def summarize_map(score_map: np.ndarray, threshold: float = 0.1) -> MapSummary:
    """Box, S-score, box area fraction and mean of one map, validating it once.

    Args:
        score_map: (H, W) float map with values in [0, 1].
        threshold: fraction of the map's maximum used by both the box and Eq. 6.

    Raises:
        ValueError: for an invalid map or threshold.
    """
    score_map = check_score_map(score_map)
    _check_threshold(threshold)
    box = _largest_contour_box(score_map, threshold)
    height, width = score_map.shape
    return MapSummary(
        box=box,
        s_score=_s_score(score_map, box, threshold),
        box_fraction=box_area_fraction(box, height, width),
        mean_value=float(score_map.mean()),
    )
