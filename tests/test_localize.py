"""Map -> box and S-score on tiny hand-made maps whose answers are worked out by hand.

Reminder of the protocol (clovaai/wsolevaluation): a pixel is foreground when
``uint8(v * 255) > int(threshold * max_uint8)``, and the box is ``(x, y, x + w, y + h)``
from ``cv2.boundingRect`` clipped to the image, i.e. one pixel past the last foreground
column and row unless that falls off the image.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsol.localize import (
    MapSummary,
    box_area_fraction,
    box_from_map,
    boxes_from_map_all_contours,
    check_score_map,
    s_score,
    summarize_map,
)


def blank(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width), dtype=np.float64)


def test_single_rectangular_blob_gives_its_box_extended_one_pixel_as_in_reference() -> None:
    score_map = blank(6, 8)
    score_map[1:3, 2:5] = 1.0  # rows 1-2, columns 2-4
    assert box_from_map(score_map) == (2, 1, 5, 3)


def test_blob_of_uneven_values_above_tau_gives_same_box_as_flat_blob() -> None:
    score_map = blank(6, 8)
    score_map[1:3, 2:5] = [[0.2, 1.0, 0.5], [0.3, 0.9, 0.15]]
    assert box_from_map(score_map) == (2, 1, 5, 3)


def test_blob_touching_right_and_bottom_edge_is_clipped_to_last_pixel() -> None:
    score_map = blank(5, 6)
    score_map[2:5, 3:6] = 1.0  # rows 2-4, columns 3-5: touches both far edges
    assert box_from_map(score_map) == (3, 2, 5, 4)


def test_two_blobs_give_the_box_of_the_larger_contour_not_the_brighter_one() -> None:
    score_map = blank(10, 12)
    score_map[1:3, 1:3] = 1.0  # 2x2, contour area 1
    score_map[5:9, 6:9] = 0.5  # rows 5-8, columns 6-8, contour area 3 * 2 = 6
    assert box_from_map(score_map) == (6, 5, 9, 9)


def test_all_zero_map_gives_empty_box() -> None:
    assert box_from_map(blank(4, 5)) == (0, 0, 0, 0)
    assert boxes_from_map_all_contours(blank(4, 5)) == [(0, 0, 0, 0)]


def test_map_above_tau_everywhere_gives_whole_image_and_s_score_one() -> None:
    rng = np.random.default_rng(0)
    score_map = rng.uniform(0.5, 1.0, size=(7, 9))
    box = box_from_map(score_map)
    assert box == (0, 0, 8, 6)
    assert s_score(score_map, box) == pytest.approx(1.0)
    summary = summarize_map(score_map)
    assert summary.box_fraction == pytest.approx(1.0)
    assert summary.s_score == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("side_value", "expected_box"),
    [
        # 0.1 * 255 = 25.5 -> uint8 25 == int(0.1 * 255): not strictly above, excluded.
        (0.1, (1, 1, 4, 4)),
        # 0.104 * 255 = 26.52 -> uint8 26 > 25: included, the box grows by two columns.
        (0.104, (1, 1, 6, 4)),
    ],
)
def test_pixel_equal_to_uint8_threshold_is_excluded_and_one_above_is_included(
    side_value: float, expected_box: tuple[int, int, int, int]
) -> None:
    score_map = blank(6, 9)
    score_map[1:4, 1:4] = 1.0
    score_map[1:4, 4:6] = side_value
    assert box_from_map(score_map, threshold=0.1) == expected_box


# The unimodal and multimodal cases of wsolevaluation's evaluation_test.py, with the
# boxes that reference implementation expects at thresholds 0, 0.2, 0.4, 0.6, 0.8.
_UNIMODAL = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.4, 0.4, 0.4, 0.6],
        [0.0, 0.4, 1.0, 0.8, 0.6],
        [0.0, 0.4, 0.4, 0.4, 0.6],
    ]
)
_MULTIMODAL = np.array(
    [
        [0.4, 0.0, 0.2, 0.2, 0.2],
        [0.4, 0.4, 0.0, 0.4, 0.0],
        [0.0, 0.0, 0.0, 0.4, 0.0],
        [1.0, 0.6, 0.8, 0.2, 0.2],
    ]
)


@pytest.mark.parametrize(
    ("score_map", "expected_boxes"),
    [
        (_UNIMODAL, [(1, 1, 4, 3), (1, 1, 4, 3), (2, 1, 4, 3), (2, 2, 4, 3), (2, 2, 3, 3)]),
        (_MULTIMODAL, [(0, 0, 4, 3), (0, 0, 2, 2), (0, 3, 3, 3), (2, 3, 3, 3), (0, 3, 1, 3)]),
    ],
    ids=["unimodal", "multimodal"],
)
def test_boxes_match_reference_implementation_cases(
    score_map: np.ndarray, expected_boxes: list[tuple[int, int, int, int]]
) -> None:
    thresholds = [0.0, 0.2, 0.4, 0.6, 0.8]
    assert [box_from_map(score_map, t) for t in thresholds] == expected_boxes


def test_all_contours_gives_one_box_per_blob_and_contains_the_largest() -> None:
    score_map = blank(10, 12)
    score_map[1:3, 1:3] = 1.0
    score_map[5:9, 6:9] = 0.5
    boxes = boxes_from_map_all_contours(score_map, threshold=0.1)
    assert sorted(boxes) == [(1, 1, 3, 3), (6, 5, 9, 9)]
    assert box_from_map(score_map) in boxes


def test_findcontours_returning_three_values_as_in_opencv3_is_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_contours = cv2.findContours

    def opencv3_find_contours(image: np.ndarray, **kwargs: int) -> tuple:
        contours, hierarchy = real_find_contours(image, **kwargs)
        return image, contours, hierarchy

    monkeypatch.setattr(cv2, "findContours", opencv3_find_contours)
    score_map = blank(6, 8)
    score_map[1:3, 2:5] = 1.0
    assert box_from_map(score_map) == (2, 1, 5, 3)


@pytest.mark.parametrize(
    ("bad_map", "message_parts"),
    [
        (np.array([[0.5, np.nan], [np.nan, 0.1]]), ["2 NaN"]),
        (np.array([[0.5, np.inf], [0.0, 0.1]]), ["1 infinite"]),
        (np.array([[0.5, -0.5], [0.0, 1.5]]), ["[0, 1]", "min=-0.5", "max=1.5"]),
        (np.zeros((2, 3, 4)), ["2-D", "3-D", "(2, 3, 4)"]),
        (np.zeros(5), ["2-D", "1-D"]),
        (np.zeros((0, 4)), ["empty", "(0, 4)"]),
        (np.array([["a", "b"]]), ["real numbers"]),
    ],
    ids=["nan", "inf", "out-of-range", "3d", "1d", "empty", "strings"],
)
def test_invalid_score_map_is_refused_with_message_naming_the_problem(
    bad_map: np.ndarray, message_parts: list[str]
) -> None:
    for function in (check_score_map, box_from_map, boxes_from_map_all_contours, summarize_map):
        with pytest.raises(ValueError) as error:
            function(bad_map)
        for part in message_parts:
            assert part in str(error.value)
    with pytest.raises(ValueError):
        s_score(bad_map, (0, 0, 0, 0))


def test_check_score_map_returns_float_array_and_keeps_float32() -> None:
    as_float = check_score_map(np.array([[0, 1], [1, 0]], dtype=np.uint8))
    assert as_float.dtype == np.float64
    np.testing.assert_array_equal(as_float, [[0.0, 1.0], [1.0, 0.0]])
    assert check_score_map(np.zeros((2, 2), dtype=np.float32)).dtype == np.float32
    assert check_score_map(np.ones((2, 2), dtype=bool)).dtype == np.float64


def test_threshold_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        box_from_map(blank(3, 3), threshold=1.5)
    with pytest.raises(ValueError, match="threshold"):
        s_score(blank(3, 3), (0, 0, 0, 0), threshold=-0.1)


def test_s_score_of_two_blobs_is_the_mass_ratio_of_the_boxed_one() -> None:
    score_map = blank(8, 12)
    score_map[1:4, 1:5] = 1.0  # 3x4 = mass 12, contour area 2 * 3 = 6
    score_map[5:7, 8:10] = 1.0  # 2x2 = mass 4, contour area 1
    box = box_from_map(score_map)
    assert box == (1, 1, 5, 4)
    assert s_score(score_map, box) == pytest.approx(12 / 16)
    assert s_score(score_map, (8, 5, 9, 6)) == pytest.approx(4 / 16)


def test_s_score_of_all_zero_map_is_zero() -> None:
    assert s_score(blank(4, 4), (0, 0, 3, 3)) == 0.0
    assert summarize_map(blank(4, 4)).s_score == 0.0


def test_s_score_values_below_tau_do_not_count_toward_the_denominator() -> None:
    score_map = blank(6, 6)
    score_map[0:2, 0:2] = 1.0  # mass 4 in the box
    score_map[4:6, 4:6] = 0.09  # below tau = 0.1: zeroed
    assert s_score(score_map, (0, 0, 1, 1)) == pytest.approx(1.0)
    score_map[4:6, 4:6] = 0.25  # above tau: counts, 4 / (4 + 4 * 0.25)
    assert s_score(score_map, (0, 0, 1, 1)) == pytest.approx(0.8)


def test_s_score_keeps_values_equal_to_tau() -> None:
    score_map = blank(4, 4)
    score_map[0, 0] = 0.5
    score_map[3, 3] = 0.05  # tau = 0.1 * 0.5 = 0.05: kept, since only values < tau are zeroed
    assert s_score(score_map, (0, 0, 0, 0)) == pytest.approx(0.5 / 0.55)


def test_s_score_counts_the_box_inclusively() -> None:
    score_map = np.full((3, 3), 0.5)
    assert s_score(score_map, (1, 1, 1, 1)) == pytest.approx(1 / 9)
    assert s_score(score_map, (0, 0, 1, 2)) == pytest.approx(6 / 9)


@pytest.mark.parametrize(
    "bad_box",
    [(0, 0, 4, 2), (0, 0, 3, 3), (-1, 0, 2, 2), (2, 0, 1, 2), (0, 2, 2, 1)],
    ids=["x1-past-width", "y1-past-height", "negative-x0", "x1-before-x0", "y1-before-y0"],
)
def test_s_score_refuses_box_outside_image_or_inverted(bad_box: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError) as error:
        s_score(np.full((3, 4), 0.5), bad_box)
    assert str(bad_box) in str(error.value)
    assert "(3, 4)" in str(error.value)


def test_box_area_fraction_uses_inclusive_area() -> None:
    assert box_area_fraction((0, 0, 1, 1), 4, 4) == pytest.approx(4 / 16)
    assert box_area_fraction((0, 0, 0, 0), 4, 5) == pytest.approx(1 / 20)
    assert box_area_fraction((0, 0, 4, 3), 4, 5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(0, 0, 5, 3\)"):
        box_area_fraction((0, 0, 5, 3), 4, 5)


def test_summarize_map_reports_box_s_score_fraction_and_mean() -> None:
    score_map = blank(8, 10)
    score_map[2:4, 2:6] = 1.0  # rows 2-3, columns 2-5: mass 8, box (2, 2, 6, 4)
    score_map[7, 0] = 0.5  # an isolated pixel, smaller contour, mass 0.5 outside the box
    summary = summarize_map(score_map)
    assert isinstance(summary, MapSummary)
    assert summary.box == (2, 2, 6, 4)
    assert summary.s_score == pytest.approx(8 / 8.5)
    assert summary.box_fraction == pytest.approx(15 / 80)  # 5 columns x 3 rows
    assert summary.mean_value == pytest.approx(8.5 / 80)
