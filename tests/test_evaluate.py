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
from wsol.evaluate import cam_maps, evaluate_maps, mask_generator_maps
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
    assert first.image.shape == (CROP, CROP, 3) and first.image.dtype == np.uint8
    np.testing.assert_allclose(first.score_map, maps[0], atol=1e-6)
    assert first.gt_boxes == [tuple(box) for box in gt_boxes[ids[0]].tolist()]
    np.testing.assert_array_equal(first.gt_mask, masks[0])


def test_pxap_is_absent_when_a_sample_has_no_mask(
    config: RunConfig, classifier: Classifier
) -> None:
    samples = read_test_split(config.data)
    samples[1] = dataclasses.replace(samples[1], mask_path=None)
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
