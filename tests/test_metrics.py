"""IoU, localization accuracies and PxAP on tiny cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from wsol.metrics import (
    LocalizationEvaluator,
    LocalizationRecord,
    PxAPEvaluator,
    ValidationMapEvaluator,
    iou,
    iou_matrix,
    pxap,
    top1_accuracy,
)


def blob_map(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    score_map = np.zeros((height, width))
    score_map[rows, cols] = 1.0
    return score_map


# ---------------------------------------------------------------- IoU


def test_iou_of_identical_boxes_is_one() -> None:
    assert iou((2, 3, 7, 9), (2, 3, 7, 9)) == 1.0
    assert iou((4, 4, 4, 4), (4, 4, 4, 4)) == 1.0  # a single pixel has area 1


def test_iou_of_disjoint_boxes_is_zero_even_when_adjacent() -> None:
    assert iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0.0
    assert iou((0, 0, 1, 1), (2, 0, 3, 1)) == 0.0


def test_iou_counts_pixels_inclusively() -> None:
    # 2x2 boxes sharing one pixel: 1 / (4 + 4 - 1).
    assert iou((0, 0, 1, 1), (1, 1, 2, 2)) == pytest.approx(1 / 7)
    # wsolevaluation's "realistic" case: 5x5 and 2x5 boxes sharing 2x4 pixels.
    assert iou((1, 2, 5, 6), (3, 1, 4, 5)) == pytest.approx(8 / 27)
    # A 2x2 box inside a 4x4 box.
    assert iou((0, 0, 3, 3), (1, 1, 2, 2)) == pytest.approx(4 / 16)


def test_iou_refuses_inverted_box() -> None:
    with pytest.raises(ValueError, match="x1 >= x0"):
        iou((3, 0, 1, 2), (0, 0, 1, 1))


def test_iou_matrix_agrees_with_pairwise_iou() -> None:
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 20, size=(9, 2, 2))
    boxes = [(int(min(c[0])), int(min(c[1])), int(max(c[0])), int(max(c[1]))) for c in corners]
    boxes_a, boxes_b = boxes[:4], boxes[4:]
    matrix = iou_matrix(np.array(boxes_a), np.array(boxes_b))
    assert matrix.shape == (4, 5)
    expected = [[iou(a, b) for b in boxes_b] for a in boxes_a]
    np.testing.assert_allclose(matrix, expected)


def test_iou_matrix_of_same_disjoint_boxes_is_identity() -> None:
    boxes = np.array([[1, 1, 3, 3], [4, 4, 5, 5]])
    np.testing.assert_array_equal(iou_matrix(boxes, boxes), np.eye(2))


def test_iou_matrix_with_no_boxes_has_empty_shape() -> None:
    assert iou_matrix(np.zeros((0, 4)), [(0, 0, 1, 1)]).shape == (0, 1)


def test_iou_matrix_refuses_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        iou_matrix(np.zeros((2, 3)), np.zeros((1, 4)))


def test_top1_accuracy_is_percent_of_matches() -> None:
    assert top1_accuracy([1, 2, 3, 4], [1, 2, 0, 0]) == pytest.approx(50.0)
    assert top1_accuracy(np.array([7]), np.array([7])) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="length"):
        top1_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        top1_accuracy([], [])


# ---------------------------------------------------------------- LocalizationEvaluator

# A 3x3 blob at rows/columns 5-7 of a 12x12 map gives the protocol box (5, 5, 8, 8).
_BLOB = blob_map(12, 12, slice(5, 8), slice(5, 8))
_BLOB_BOX = (5, 5, 8, 8)
_FAR_BOX = (0, 0, 2, 2)


def test_gt_known_counts_an_image_whose_box_matches_any_ground_truth_box() -> None:
    evaluator = LocalizationEvaluator(
        {"second_matches": [_FAR_BOX, _BLOB_BOX], "none_matches": [_FAR_BOX]}
    )
    evaluator.accumulate(_BLOB, "second_matches")
    evaluator.accumulate(_BLOB, "none_matches")
    assert evaluator.compute() == {"gt_known_loc": pytest.approx(50.0), "count": 2.0}
    first, second = evaluator.records
    assert first == LocalizationRecord(
        image_id="second_matches", box=_BLOB_BOX, best_iou=1.0, gt_known=True, correct_cls=None
    )
    assert second.best_iou == 0.0
    assert not second.gt_known


def test_iou_exactly_at_threshold_counts_as_correct() -> None:
    # One row, columns 0-2 -> protocol box (0, 0, 3, 1), area 8; GT (0, 0, 1, 1), area 4.
    score_map = blob_map(6, 6, slice(0, 1), slice(0, 3))
    evaluator = LocalizationEvaluator({"img": [(0, 0, 1, 1)]}, iou_threshold=0.5)
    record = evaluator.accumulate(score_map, "img")
    assert record.box == (0, 0, 3, 1)
    assert record.best_iou == pytest.approx(0.5)
    assert evaluator.compute()["gt_known_loc"] == pytest.approx(100.0)


def test_top1_loc_requires_both_a_correct_box_and_a_correct_class() -> None:
    gt_boxes = {"box_ok_cls_wrong": [_BLOB_BOX], "both_ok": [_BLOB_BOX], "cls_ok": [_FAR_BOX]}
    gt_labels = {"box_ok_cls_wrong": 1, "both_ok": 2, "cls_ok": 3}
    evaluator = LocalizationEvaluator(gt_boxes, gt_labels)
    evaluator.accumulate(_BLOB, "box_ok_cls_wrong", predicted_label=0)
    evaluator.accumulate(_BLOB, "both_ok", predicted_label=2)
    evaluator.accumulate(_BLOB, "cls_ok", predicted_label=3)
    result = evaluator.compute()
    assert result == {
        "gt_known_loc": pytest.approx(200 / 3),
        "top1_loc": pytest.approx(100 / 3),
        "top1_cls": pytest.approx(200 / 3),
        "count": 3.0,
    }
    assert [r.correct_cls for r in evaluator.records] == [False, True, True]


def test_localization_evaluator_refuses_unknown_image_id_naming_it() -> None:
    evaluator = LocalizationEvaluator({"known": [_BLOB_BOX]})
    with pytest.raises(KeyError, match="mystery"):
        evaluator.accumulate(_BLOB, "mystery")


def test_localization_evaluator_refuses_the_same_image_twice() -> None:
    evaluator = LocalizationEvaluator({"img": [_BLOB_BOX]})
    evaluator.accumulate(_BLOB, "img")
    with pytest.raises(ValueError, match="'img' was already accumulated"):
        evaluator.accumulate(_BLOB, "img")
    assert len(evaluator.records) == 1


def test_localization_evaluator_compute_with_nothing_accumulated_raises() -> None:
    with pytest.raises(ValueError, match="no score map"):
        LocalizationEvaluator({"img": [_BLOB_BOX]}).compute()


def test_localization_evaluator_refuses_mixing_calls_with_and_without_labels() -> None:
    evaluator = LocalizationEvaluator({"a": [_BLOB_BOX], "b": [_BLOB_BOX]}, {"a": 0, "b": 0})
    evaluator.accumulate(_BLOB, "a", predicted_label=0)
    with pytest.raises(ValueError, match="every image or for none"):
        evaluator.accumulate(_BLOB, "b")


def test_localization_evaluator_refuses_predicted_label_without_gt_labels() -> None:
    evaluator = LocalizationEvaluator({"a": [_BLOB_BOX]})
    with pytest.raises(ValueError, match="no gt_labels"):
        evaluator.accumulate(_BLOB, "a", predicted_label=0)


def test_localization_evaluator_refuses_image_without_ground_truth_box() -> None:
    with pytest.raises(ValueError, match=r"\['empty'\] holds no box"):
        LocalizationEvaluator({"empty": []})


# ---------------------------------------------------------------- PxAP


_MASK_4X4 = np.zeros((4, 4), dtype=bool)
_MASK_4X4[1:3, 1:3] = True  # 4 foreground pixels out of 16


def test_pxap_of_perfect_map_is_100() -> None:
    assert pxap([_MASK_4X4.astype(float)], [_MASK_4X4]) == pytest.approx(100.0)


def test_pxap_of_inversely_ranked_map_is_the_foreground_share() -> None:
    # Every background score beats every foreground score: precision is 0 until the
    # last threshold, where recall jumps 0 -> 1 at precision 4/16.
    inverse = (~_MASK_4X4).astype(float)
    assert pxap([inverse], [_MASK_4X4]) == pytest.approx(25.0)


def test_pxap_of_constant_map_is_the_foreground_share() -> None:
    for value in (0.0, 0.5, 1.0):
        assert pxap([np.full((4, 4), value)], [_MASK_4X4]) == pytest.approx(25.0)


def test_pxap_of_tiny_2x2_case_computed_by_hand() -> None:
    # Descending scores: 0.9 fg, 0.5 bg, 0.3 fg, 0.1 bg. Recall reaches 0.5 at precision 1
    # and 1.0 at precision 2/3: AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    score_map = np.array([[0.9, 0.5], [0.3, 0.1]])
    mask = np.array([[1, 0], [1, 0]])
    assert pxap([score_map], [mask]) == pytest.approx(100 * 5 / 6)


def test_pxap_ties_scores_within_one_threshold_bin() -> None:
    # With 2 thresholds the bins are [0, .5), [.5, 1): 0.9 fg ties with 0.6 bg and 0.3 fg
    # with 0.1 bg, so both recall steps come at precision 1/2: AP = 0.5.
    score_map = np.array([[0.9, 0.6], [0.3, 0.1]])
    mask = np.array([[1, 0], [1, 0]])
    assert pxap([score_map], [mask], num_thresholds=2) == pytest.approx(50.0)


def test_pxap_pools_pixels_over_images() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.uniform(size=(5, 6)), rng.uniform(size=(5, 4))]
    masks = [rng.uniform(size=(5, 6)) > 0.6, rng.uniform(size=(5, 4)) > 0.3]
    pooled = pxap([np.hstack(maps)], [np.hstack(masks)])
    assert pxap(maps, masks) == pytest.approx(pooled)


def test_pxap_curve_is_ordered_by_decreasing_threshold() -> None:
    evaluator = PxAPEvaluator({"img": _MASK_4X4}, num_thresholds=10)
    evaluator.accumulate(_MASK_4X4.astype(float), "img")
    precision, recall, thresholds = evaluator.curve()
    assert precision.shape == recall.shape == thresholds.shape == (12,)
    np.testing.assert_allclose(thresholds[:3], [2.0, 1.0, 0.9])
    assert thresholds[-1] == 0.0
    assert precision[0] == 0.0  # nothing predicted at threshold 2
    np.testing.assert_allclose(recall[1:], 1.0)  # all foreground scores are 1.0
    np.testing.assert_allclose(precision[-1], 4 / 16)
    assert np.all(np.diff(recall) >= 0)


def test_pxap_refuses_shape_mismatch_naming_image_and_both_shapes() -> None:
    evaluator = PxAPEvaluator({"bird_001": _MASK_4X4})
    with pytest.raises(ValueError) as error:
        evaluator.accumulate(np.zeros((4, 5)), "bird_001")
    message = str(error.value)
    assert "bird_001" in message
    assert "(4, 5)" in message
    assert "(4, 4)" in message


def test_pxap_evaluator_refuses_unknown_and_duplicate_ids_and_empty_compute() -> None:
    evaluator = PxAPEvaluator({"img": _MASK_4X4})
    with pytest.raises(ValueError, match="no score map"):
        evaluator.compute()
    with pytest.raises(KeyError, match="other"):
        evaluator.accumulate(np.zeros((4, 4)), "other")
    evaluator.accumulate(np.zeros((4, 4)), "img")
    with pytest.raises(ValueError, match="already accumulated"):
        evaluator.accumulate(np.zeros((4, 4)), "img")


def test_pxap_refuses_masks_without_foreground_or_with_other_values() -> None:
    with pytest.raises(ValueError, match="no foreground"):
        pxap([np.zeros((2, 2))], [np.zeros((2, 2), dtype=bool)])
    with pytest.raises(ValueError, match="only 0 and 1"):
        PxAPEvaluator({"img": np.array([[0, 255], [1, 0]])})


def test_pxap_refuses_invalid_score_map() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pxap([np.full((4, 4), np.nan)], [_MASK_4X4])


def test_pxap_refuses_sequences_of_different_length() -> None:
    with pytest.raises(ValueError, match="length"):
        pxap([np.zeros((4, 4))], [_MASK_4X4, _MASK_4X4])


# ---------------------------------------------------------------- validation S and its SE


def two_blob_map() -> np.ndarray:
    """Two equal, disjoint blobs: the largest contour holds half the mass (S = 0.5)."""
    score_map = blob_map(16, 16, slice(1, 5), slice(1, 5))
    score_map[10:14, 10:14] = 1.0
    return score_map


def test_validation_s_score_standard_error_of_one_and_two_blob_maps() -> None:
    # S = 1, 0.5, 1, 0.5: mean 0.75, sample std 0.2887, SE = 0.2887 / 2.
    evaluator = ValidationMapEvaluator(threshold=0.1)
    one_blob = blob_map(16, 16, slice(4, 10), slice(4, 10))
    for index, score_map in enumerate([one_blob, two_blob_map()] * 2):
        evaluator.accumulate(score_map, str(index))
    result = evaluator.compute()
    assert result["s_score"] == pytest.approx(0.75)
    assert result["s_score_se"] == pytest.approx(np.std([1, 0.5, 1, 0.5], ddof=1) / 2)


def test_validation_s_score_standard_error_is_zero_for_equal_maps_and_one_map() -> None:
    evaluator = ValidationMapEvaluator()
    for index in range(3):
        evaluator.accumulate(two_blob_map(), str(index))
    assert evaluator.compute()["s_score_se"] == 0.0
    single = ValidationMapEvaluator()
    single.accumulate(two_blob_map(), "a")
    assert single.compute()["s_score_se"] == 0.0
