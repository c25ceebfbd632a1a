"""evaluate_maps: streams the given samples through the eval transform and scores the maps
exactly as the metric functions of wsol.metrics would."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import wsol.data.dataset as dataset_module
from wsol.config import RunConfig, config_from_dict
from wsol.data import WsolDataset, build_transform, collate_samples, normalize, read_test_split
from wsol.evaluate import (
    MapExample,
    PixelPRCurve,
    cam_maps,
    choose_example_ids,
    evaluate_maps,
    load_examples,
    mask_generator_maps,
    save_examples,
)
from wsol.metrics import LocalizationEvaluator, MaxBoxAccV2Evaluator, pxap, top1_accuracy
from wsol.models import Classifier, MaskGenerator

CROP = 32


@pytest.fixture(scope="module")
def config(synthetic_root: Path) -> RunConfig:
    return config_from_dict(
        {
            "device": "cpu",
            "data": {
                "root": str(synthetic_root),
                "resize": 36,
                "crop": CROP,
                "normalization": "per_image",
            },
            "classifier": {"pretrained": False, "small_input_stem": True},
            "mask": {"pretrained": False, "batch_size": 5},
        }
    )


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(3, "resnet18", small_input_stem=True).eval()


def content_maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
    """A map that depends on each image alone (elementwise), so batching cannot change it."""
    del class_indices
    return torch.sigmoid(2.0 * images.mean(dim=1))


def test_numbers_equal_the_metric_functions_on_the_same_maps(
    config: RunConfig, classifier: Classifier
) -> None:
    samples = read_test_split(config.data)
    result = evaluate_maps(content_maps, classifier, samples, config, "cpu", num_examples=3)

    # The same maps, computed directly on all items at once, then scored by wsol.metrics.
    dataset = WsolDataset(samples, build_transform(config.data, train=False), config.seed)
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    normalized = normalize(batch["image"], config.data.normalization)
    with torch.no_grad():
        predicted = classifier(normalized).argmax(1).numpy()
    maps = content_maps(normalized, batch["label"]).numpy().astype(np.float64)
    ids, labels = batch["image_id"], batch["label"].numpy()
    gt_boxes = {i: boxes.numpy() for i, boxes in zip(ids, batch["boxes"], strict=True)}
    masks = [mask[0].numpy() > 0.5 for mask in batch["mask"]]

    localization = LocalizationEvaluator(
        gt_boxes, dict(zip(ids, labels.tolist(), strict=True)), config.selection.threshold
    )
    maxbox = MaxBoxAccV2Evaluator(gt_boxes)
    for image_id, score_map, label in zip(ids, maps, predicted, strict=True):
        localization.accumulate(score_map, image_id, int(label))
        maxbox.accumulate(score_map, image_id)
    expected = {
        **{k: v for k, v in localization.compute().items() if k != "count"},
        **{k: v for k, v in maxbox.compute().items() if k != "count"},
        "pxap": pxap(list(maps), masks),
        "mask_mean": float(maps.mean()),
        "count": float(len(samples)),
    }
    assert result.metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value, abs=1e-9), key
    assert result.metrics["top1_cls"] == pytest.approx(top1_accuracy(predicted, labels))

    assert [record.image_id for record in result.records] == ids
    assert [record.box for record in result.records] == [r.box for r in localization.records]
    assert result.pr_curve is not None and result.pr_curve.recall[-1] == pytest.approx(1.0)
    assert set(result.maxboxacc_thresholds) == {30, 50, 70}
    assert len(result.examples) == 3
    first = result.examples[0]
    index = ids.index(first.image_id)
    assert first.image.shape == (CROP, CROP, 3) and first.image.dtype == np.uint8
    np.testing.assert_allclose(first.score_map, maps[index], atol=1e-6)
    assert first.gt_boxes == [tuple(box) for box in gt_boxes[first.image_id].tolist()]
    np.testing.assert_array_equal(first.gt_mask, masks[index])
    assert first.label == labels[index]


def test_pxap_is_absent_when_a_sample_has_no_mask(
    config: RunConfig, classifier: Classifier
) -> None:
    samples = read_test_split(config.data)
    second = choose_example_ids(samples, 2)[1]
    samples = [
        dataclasses.replace(s, mask_path=None) if s.image_id == second else s for s in samples
    ]
    result = evaluate_maps(content_maps, classifier, samples, config, "cpu", num_examples=2)
    assert "pxap" not in result.metrics
    assert result.pr_curve is None
    assert result.examples[0].gt_mask is not None and result.examples[1].gt_mask is None
    assert result.metrics["count"] == len(samples)


def test_cam_and_mask_generator_give_unit_range_maps_of_crop_size(
    classifier: Classifier,
) -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, CROP, CROP)
    classes = torch.tensor([0, 2])
    mask_generator = MaskGenerator("resnet18", pretrained=False)
    for map_fn in (cam_maps(classifier), mask_generator_maps(mask_generator)):
        maps = map_fn(images, classes)
        assert maps.shape == (2, CROP, CROP)
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert not mask_generator.training
    g_maps = mask_generator_maps(mask_generator)
    torch.testing.assert_close(g_maps(images, classes), g_maps(images, torch.tensor([1, 1])))


def test_evaluates_a_mask_generator_end_to_end(config: RunConfig, classifier: Classifier) -> None:
    torch.manual_seed(0)
    mask_generator = MaskGenerator("resnet18", pretrained=False)
    samples = read_test_split(config.data)
    result = evaluate_maps(mask_generator_maps(mask_generator), classifier, samples, config, "cpu")
    metrics = result.metrics
    for key in ("gt_known_loc", "top1_loc", "top1_cls", "pxap", "maxboxacc_v2"):
        assert 0.0 <= metrics[key] <= 100.0
    assert 0.0 < metrics["mask_mean"] < 1.0
    assert metrics["top1_loc"] <= min(metrics["gt_known_loc"], metrics["top1_cls"])


def test_reads_only_the_given_samples(
    config: RunConfig, classifier: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[Path] = []
    original_image, original_mask = dataset_module.read_image_rgb, dataset_module.read_mask

    def recording_image(path: Path) -> np.ndarray:
        read.append(Path(path))
        return original_image(path)

    def recording_mask(path: Path) -> np.ndarray:
        read.append(Path(path))
        return original_mask(path)

    monkeypatch.setattr(dataset_module, "read_image_rgb", recording_image)
    monkeypatch.setattr(dataset_module, "read_mask", recording_mask)
    given = read_test_split(config.data)[::3]
    result = evaluate_maps(content_maps, classifier, given, config, "cpu")
    expected = {s.image_path for s in given} | {s.mask_path for s in given}
    assert set(read) == expected and len(read) == len(expected)
    assert [record.image_id for record in result.records] == [s.image_id for s in given]
    assert result.metrics["count"] == len(given)


def test_refuses_bad_maps_and_bad_sample_lists(config: RunConfig, classifier: Classifier) -> None:
    samples = read_test_split(config.data)[:2]

    def nan_maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
        maps = content_maps(images, class_indices)
        maps[:, 0, 0] = float("nan")
        return maps

    def flat_maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
        return content_maps(images, class_indices).flatten(1)

    with pytest.raises(ValueError, match=rf"{samples[0].image_id!r}.*NaN"):
        evaluate_maps(nan_maps, classifier, samples, config, "cpu")
    with pytest.raises(ValueError, match="expected"):
        evaluate_maps(flat_maps, classifier, samples, config, "cpu")
    with pytest.raises(ValueError, match="no samples"):
        evaluate_maps(content_maps, classifier, [], config, "cpu")
    with pytest.raises(ValueError, match="duplicated"):
        evaluate_maps(content_maps, classifier, [samples[0], samples[0]], config, "cpu")
    assert not classifier.training


def test_example_images_go_round_robin_over_the_classes_whatever_the_sample_order(
    config: RunConfig,
) -> None:
    samples = read_test_split(config.data)  # 3 classes, 4 test images each
    chosen = choose_example_ids(samples, 7)
    label_of = {s.image_id: s.label for s in samples}
    assert [label_of[i] for i in chosen] == [0, 1, 2, 0, 1, 2, 0]
    assert len(set(chosen)) == 7
    shuffled = list(samples)
    np.random.default_rng(0).shuffle(shuffled)
    assert choose_example_ids(shuffled, 7) == chosen
    assert choose_example_ids(samples, 100) == choose_example_ids(samples, len(samples))
    assert len(choose_example_ids(samples, 100)) == len(samples)


def test_every_map_function_keeps_the_same_example_images(
    config: RunConfig, classifier: Classifier
) -> None:
    samples = read_test_split(config.data)

    def inverted_maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
        return 1.0 - content_maps(images, class_indices)

    one = evaluate_maps(content_maps, classifier, samples, config, "cpu", num_examples=5)
    other = evaluate_maps(inverted_maps, classifier, samples, config, "cpu", num_examples=5)
    ids = [example.image_id for example in one.examples]
    assert ids == choose_example_ids(samples, 5)
    assert [example.image_id for example in other.examples] == ids
    assert [example.label for example in other.examples] == [0, 1, 2, 0, 1]
    assert not np.allclose(one.examples[0].score_map, other.examples[0].score_map)


def test_examples_and_pr_curve_round_trip_through_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    examples = [
        MapExample(
            image_id=f"class_{k}/image_{k}.jpg",
            image=rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8),
            score_map=rng.random((CROP, CROP)).astype(np.float32),
            box=(1, 2, 10 + k, 20),
            gt_boxes=[(0, 0, 5, 5)] * (k + 1),
            gt_mask=rng.random((CROP, CROP)) > 0.5 if k != 1 else None,
            label=k,
        )
        for k in range(3)
    ]
    curve = PixelPRCurve(rng.random(12), np.linspace(0, 1, 12), np.linspace(1, 0, 12))

    loaded, loaded_curve = load_examples(save_examples(tmp_path / "e.npz", examples, curve))

    for before, after in zip(examples, loaded, strict=True):
        assert (after.image_id, after.label, after.box) == (
            before.image_id,
            before.label,
            before.box,
        )
        assert after.gt_boxes == before.gt_boxes
        np.testing.assert_array_equal(after.image, before.image)
        np.testing.assert_allclose(after.score_map, before.score_map, atol=1e-3)  # float16
        if before.gt_mask is None:
            assert after.gt_mask is None
        else:
            np.testing.assert_array_equal(after.gt_mask, before.gt_mask)
    np.testing.assert_array_equal(loaded_curve.recall, curve.recall)
    assert load_examples(save_examples(tmp_path / "none.npz", [], None)) == ([], None)
