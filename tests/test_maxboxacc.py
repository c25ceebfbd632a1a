"""MaxBoxAccV2 on tiny hand-made maps whose answers are worked out in the comments.

Reminders of the protocol (wsolevaluation, multi_contour_eval=True):
- thresholds tau = 0.00, 0.01, ..., 0.99; a pixel is foreground when its uint8 value
  int(255 * m) is strictly above int(tau * 255) (maps are min-max normalised first);
- a contour whose pixels span columns a..b gives x0 = a, x1 = b + 1 (boundingRect's
  x + w, clipped to W - 1): one pixel past the blob, and likewise for rows;
- an image is correct at (tau, delta) when some box at tau has IoU >= delta / 100 with
  some ground-truth box; BoxAcc(delta) = max over tau of the share of correct images.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wsol.localize import box_from_map
from wsol.metrics import (
    MaxBoxAccV2Evaluator,
    iou_matrix,
    max_iou_per_threshold,
    min_max_normalize,
)


def _evaluate(maps_and_boxes: dict[str, tuple[np.ndarray, list]], **kwargs) -> dict[str, float]:
    evaluator = MaxBoxAccV2Evaluator(
        {image_id: boxes for image_id, (_, boxes) in maps_and_boxes.items()}, **kwargs
    )
    for image_id, (score_map, _) in maps_and_boxes.items():
        evaluator.accumulate(score_map, image_id)
    return evaluator.compute()


def _expect(result: dict[str, float], iou30: float, iou50: float, iou70: float) -> None:
    assert result["maxboxacc_v2_iou30"] == pytest.approx(iou30)
    assert result["maxboxacc_v2_iou50"] == pytest.approx(iou50)
    assert result["maxboxacc_v2_iou70"] == pytest.approx(iou70)
    assert result["maxboxacc_v2"] == pytest.approx((iou30 + iou50 + iou70) / 3)


def test_single_square_blob_is_right_at_30_and_50_but_not_70() -> None:
    # A 4x4 blob of 1.0 at rows/cols 2-5 on a 10x10 zero map survives every tau (255 >
    # int(0.99 * 255) = 252; the zeros never do), always as the box (2, 2, 6, 6): 25 px.
    # Against the tight GT box (2, 2, 5, 5), 16 px: IoU = 16 / 25 = 0.64.
    score_map = np.zeros((10, 10))
    score_map[2:6, 2:6] = 1.0
    ious = max_iou_per_threshold(score_map, [(2, 2, 5, 5)], np.arange(0, 1, 0.01))
    np.testing.assert_allclose(ious, 0.64)
    result = _evaluate({"blob": (score_map, [(2, 2, 5, 5)])})
    _expect(result, 100.0, 100.0, 0.0)
    assert result["count"] == 1.0


def test_only_the_all_contours_rule_finds_the_small_object() -> None:
    # Two blobs of 1.0 on a 20x20 map: a big 8x8 distractor at rows/cols 0-7 and the
    # object, 3x3 at rows/cols 14-16, whose protocol box (14, 14, 17, 17) is the GT box.
    # The largest contour is the distractor: box (0, 0, 8, 8), IoU 0 with the GT box,
    # so the paper's single-box rule fails; among all contours the object's box has IoU 1
    # at every tau, so BoxAcc is 100 at every delta.
    score_map = np.zeros((20, 20))
    score_map[0:8, 0:8] = 1.0
    score_map[14:17, 14:17] = 1.0
    gt_box = (14, 14, 17, 17)
    assert box_from_map(score_map) == (0, 0, 8, 8)
    assert iou_matrix([box_from_map(score_map)], [gt_box])[0, 0] == 0.0
    _expect(_evaluate({"two_blobs": (score_map, [gt_box])}), 100.0, 100.0, 100.0)


def test_best_threshold_differs_per_iou_level_and_is_shared_by_all_images() -> None:
    # One 16x16 map for four images: a halo of 0.5 (uint8 127) at rows/cols 2-9 holding a
    # core of 1.0 (uint8 255) at rows/cols 2-7.
    #   tau <= 0.49 (int(tau*255) <= 124 < 127): halo + core, one blob -> L = (2, 2, 10, 10),
    #       81 px;
    #   tau >= 0.50 (127 is not > 127): core only -> H = (2, 2, 8, 8), 49 px.
    # IoU(L, H) = 49 / 81 = 0.605. GT boxes and their IoU at low / high tau:
    #   fits_low   GT = L                    1.000 / 0.605
    #   fits_high1 GT = H                    0.605 / 1.000
    #   fits_high2 GT = H                    0.605 / 1.000
    #   loose_low  GT = (6, 2, 14, 10), 81 px: inter with L 5x9 = 45 -> 45/117 = 0.385;
    #              inter with H 3x7 = 21 -> 21/109 = 0.193
    # Accuracy at low / high tau:
    #   delta 30: 4/4 / 3/4 -> 100 at low tau
    #   delta 50: 3/4 / 3/4 -> 75 (tie; the first tau, 0.0, is reported)
    #   delta 70: 1/4 / 2/4 -> 50 at high tau
    # Per-image best IoUs would give 100 / 75 / 75 at 30 / 50 / 70 (loose_low aside): the
    # single tau for all images is what makes delta 70 only 50.
    score_map = np.zeros((16, 16))
    score_map[2:10, 2:10] = 0.5
    score_map[2:8, 2:8] = 1.0
    low, high = (2, 2, 10, 10), (2, 2, 8, 8)
    images = {
        "fits_low": (score_map, [low]),
        "fits_high1": (score_map, [high]),
        "fits_high2": (score_map, [high]),
        "loose_low": (score_map, [(6, 2, 14, 10)]),
    }
    evaluator = MaxBoxAccV2Evaluator({image_id: boxes for image_id, (_, boxes) in images.items()})
    for image_id, (image_map, _) in images.items():
        evaluator.accumulate(image_map, image_id)
    _expect(evaluator.compute(), 100.0, 75.0, 50.0)
    assert evaluator.best_thresholds() == {30: 0.0, 50: 0.0, 70: 0.5}
    curves = evaluator.curves()
    assert curves[70][49] == pytest.approx(25.0) and curves[70][50] == pytest.approx(50.0)


def test_constant_map_gives_the_empty_box_after_normalisation() -> None:
    # A constant map min-max normalises to all zeros (as wsolevaluation's
    # normalize_scoremap): no pixel survives any tau, so every tau gives the box
    # (0, 0, 0, 0), 1 px. GT (0, 0, 1, 0) is 2 px: IoU 0.5 -> right at 30 and 50 only.
    for value in (0.0, 0.4, 1.0):
        constant = np.full((8, 8), value)
        _expect(_evaluate({"flat": (constant, [(0, 0, 1, 0)])}), 100.0, 100.0, 0.0)


def test_constant_map_without_normalisation_gives_the_whole_image() -> None:
    # Without normalisation tau is a fraction of the map's max: a constant 0.4 map
    # (uint8 102) is above int(tau * 102) < 102 everywhere, so every tau boxes the whole
    # 8x8 image, (0, 0, 7, 7) once clipped: IoU 1 with a whole-image GT box, 16/64 = 0.25
    # with a 4x4 one.
    constant = np.full((8, 8), 0.4)
    images = {"whole": (constant, [(0, 0, 7, 7)]), "quarter": (constant, [(0, 0, 3, 3)])}
    _expect(_evaluate(images, normalize=False), 50.0, 50.0, 50.0)


def test_normalisation_stretches_a_map_that_does_not_reach_one() -> None:
    # A 4x4 blob of 0.3 (uint8 76) at rows/cols 2-5 on 0.1 (uint8 25), 10x10; its
    # protocol box (2, 2, 6, 6) is the GT box. Normalised, the map is 1.0 on 0.0: the blob
    # alone at every tau, IoU 1. Unnormalised, tau is a fraction of the max 76: the
    # background survives while 25 > int(tau * 76), i.e. up to tau = 0.32, boxing the whole
    # image (0, 0, 9, 9), IoU 25 / 100; from tau = 0.33 on, the blob alone, IoU 1.
    score_map = np.full((10, 10), 0.1)
    score_map[2:6, 2:6] = 0.3
    normalised = min_max_normalize(score_map)
    assert normalised.min() == 0.0 and normalised.max() == 1.0
    gt = [(2, 2, 6, 6)]
    thresholds = np.arange(0, 1, 0.01)
    np.testing.assert_allclose(max_iou_per_threshold(normalised, gt, thresholds), 1.0)
    raw = max_iou_per_threshold(score_map, gt, thresholds)
    np.testing.assert_allclose(raw[:33], 0.25)
    np.testing.assert_allclose(raw[33:], 1.0)
    _expect(_evaluate({"img": (score_map, gt)}), 100.0, 100.0, 100.0)


def test_nan_map_is_refused_naming_the_image() -> None:
    evaluator = MaxBoxAccV2Evaluator({"bird_007": [(0, 0, 1, 1)]})
    score_map = np.zeros((4, 4))
    score_map[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"'bird_007'.*1 NaN"):
        evaluator.accumulate(score_map, "bird_007")
    with pytest.raises(ValueError, match="no score map"):
        evaluator.compute()


def test_evaluator_refuses_unknown_duplicate_and_bad_settings() -> None:
    evaluator = MaxBoxAccV2Evaluator({"img": [(0, 0, 1, 1)]})
    with pytest.raises(KeyError, match="other"):
        evaluator.accumulate(np.zeros((4, 4)), "other")
    evaluator.accumulate(np.zeros((4, 4)), "img")
    with pytest.raises(ValueError, match="already accumulated"):
        evaluator.accumulate(np.zeros((4, 4)), "img")
    with pytest.raises(ValueError, match="already has"):
        evaluator.add_ground_truth("img", [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="percentages"):
        MaxBoxAccV2Evaluator({}, iou_thresholds=(0.5,))
    with pytest.raises(ValueError, match="empty"):
        MaxBoxAccV2Evaluator({}, iou_thresholds=())
    with pytest.raises(ValueError, match="cam_curve_interval"):
        MaxBoxAccV2Evaluator({}, cam_curve_interval=0.0)
    with pytest.raises(ValueError, match="holds no box"):
        MaxBoxAccV2Evaluator({"none": []})


def test_ground_truth_added_while_streaming_equals_ground_truth_given_up_front() -> None:
    rng = np.random.default_rng(0)
    maps = [cv2.GaussianBlur(rng.random((24, 24)), (7, 7), 2) for _ in range(5)]
    maps = [min_max_normalize(m) for m in maps]
    boxes = [[(int(a), int(a), int(a) + 8, int(a) + 6)] for a in rng.integers(0, 14, 5)]
    up_front = MaxBoxAccV2Evaluator({str(i): b for i, b in enumerate(boxes)})
    streamed = MaxBoxAccV2Evaluator({})
    for index, (score_map, box) in enumerate(zip(maps, boxes, strict=True)):
        up_front.accumulate(score_map, str(index))
        streamed.add_ground_truth(str(index), box)
        streamed.accumulate(score_map, str(index))
    assert streamed.compute() == up_front.compute()


def _reference_box_acc(maps: list[np.ndarray], gt: list[list], deltas=(30, 50, 70)) -> list:
    """A direct transcription of wsolevaluation's BoxEvaluator (multi-contour) loop."""
    thresholds = np.arange(0, 1, 0.01)
    correct = {delta: np.zeros(len(thresholds)) for delta in deltas}
    for score_map, gt_boxes in zip(maps, gt, strict=True):
        image = np.expand_dims((score_map * 255).astype(np.uint8), 2)
        height, width = score_map.shape
        best = []
        for tau in thresholds:
            _, binary = cv2.threshold(image, int(tau * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            boxes = [[0, 0, 0, 0]] if not contours else []
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
            best.append(iou_matrix(boxes, gt_boxes).max())
        for delta in deltas:
            correct[delta][np.asarray(best) >= delta / 100] += 1
    return [correct[delta].max() * 100 / len(maps) for delta in deltas]


def test_matches_a_transcription_of_the_reference_on_random_smooth_maps() -> None:
    rng = np.random.default_rng(1)
    maps, gt = [], []
    for _ in range(6):
        noise = rng.random((32, 32)).astype(np.float32)
        maps.append(min_max_normalize(cv2.GaussianBlur(noise, (9, 9), 3)))
        x0, y0 = rng.integers(0, 16, 2)
        gt.append([(int(x0), int(y0), int(x0) + 12, int(y0) + 10)])
    result = _evaluate({str(i): (m, b) for i, (m, b) in enumerate(zip(maps, gt, strict=True))})
    _expect(result, *_reference_box_acc(maps, gt))
