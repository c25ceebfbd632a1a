"""The CUB-200-2011 reader, the train/validation carve and WsolDataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsol.config import DataConfig
from wsol.data import (
    DatasetError,
    Sample,
    WsolDataset,
    WsolTransform,
    build_transform,
    collate_samples,
    read_test_split,
    read_training_splits,
)
from wsol.data.cub import REQUIRED_FILES, cub_box_to_inclusive
from wsol.data.dataset import carve_validation, read_mask
from wsol.data.transforms import mask_bounding_box

CLASSES = ("001.Alpha_bird", "002.Beta_bird")
TRAIN_PER_CLASS = 8
TEST_PER_CLASS = 2
IMAGE_WIDTH, IMAGE_HEIGHT = 30, 20
MASKED_ID = "001.Alpha_bird/Alpha_bird_0000.jpg"  # image id 1: has a mask and two boxes


def write_cub(root: Path) -> Path:
    """A small CUB-format dataset: 2 classes x (8 train + 2 test) 30x20 px images.

    Image id 1 has two boxes and a mask; the other images have one box and no mask.
    Per class, images 0-7 are train and 8-9 test. Box of image k (0-based within its
    class): x y w h = (k, 2, 10, 8); image 1's second box is (15, 5, 12.4, 10.6).
    """
    rng = np.random.default_rng(0)
    images, labels, split, boxes = [], [], [], []
    image_id = 0
    for class_id, name in enumerate(CLASSES, start=1):
        (root / "images" / name).mkdir(parents=True)
        for k in range(TRAIN_PER_CLASS + TEST_PER_CLASS):
            image_id += 1
            relative = f"{name}/{name.split('.')[1]}_{k:04d}.jpg"
            pixels = rng.integers(0, 256, size=(IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.uint8)
            cv2.imwrite(str(root / "images" / relative), pixels)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {1 if k < TRAIN_PER_CLASS else 0}")
            boxes.append(f"{image_id} {k:.1f} 2.0 10.0 8.0")
    boxes.insert(1, "1 15.0 5.0 12.4 10.6")
    mask = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    mask[2:10, 0:10] = 255
    (root / "segmentations" / CLASSES[0]).mkdir(parents=True)
    cv2.imwrite(str(root / "segmentations" / Path(MASKED_ID).with_suffix(".png")), mask)
    (root / "classes.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CLASSES, 1)))
    for file_name, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
        ("bounding_boxes.txt", boxes),
    ):
        (root / file_name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def cub_root(tmp_path: Path) -> Path:
    return write_cub(tmp_path / "cub")


def config_for(root: Path, **fields: object) -> DataConfig:
    return DataConfig(root=root, resize=40, crop=32, **fields)


def replace_line(path: Path, line_number: int, new_line: str) -> None:
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- reading


def test_training_splits_give_zero_based_labels_all_boxes_and_mask_paths(cub_root: Path) -> None:
    splits = read_training_splits(config_for(cub_root))
    assert splits.class_names == list(CLASSES)
    samples = {s.image_id: s for s in splits.train + splits.val}
    assert len(samples) == len(CLASSES) * TRAIN_PER_CLASS
    first = samples[MASKED_ID]
    assert first.label == 0
    assert first.boxes == ((0, 2, 9, 9), (15, 5, 26, 15))
    assert first.mask_path == cub_root / "segmentations" / "001.Alpha_bird/Alpha_bird_0000.png"
    assert first.image_path == cub_root / "images" / MASKED_ID
    other = samples["002.Beta_bird/Beta_bird_0003.jpg"]
    assert (other.label, other.boxes, other.mask_path) == (1, ((3, 2, 12, 9),), None)


def test_cub_box_covers_width_pixels_rounding_half_up() -> None:
    assert cub_box_to_inclusive(60.0, 27.0, 325.0, 304.0) == (60, 27, 384, 330)
    assert cub_box_to_inclusive(10.5, 3.4, 0.4, 1.2) == (11, 3, 11, 4)  # x1 never below x0


def test_val_carve_is_deterministic_stratified_disjoint_and_changes_with_split_seed(
    cub_root: Path,
) -> None:
    config = config_for(cub_root, val_fraction=0.25, split_seed=3)
    first, second = read_training_splits(config), read_training_splits(config)
    assert [s.image_id for s in first.val] == [s.image_id for s in second.val]
    train_ids = {s.image_id for s in first.train}
    val_ids = {s.image_id for s in first.val}
    assert not train_ids & val_ids
    assert len(train_ids | val_ids) == len(CLASSES) * TRAIN_PER_CLASS
    assert [sum(s.label == c for s in first.val) for c in range(2)] == [2, 2]  # 0.25 * 8
    carves = {
        frozenset(
            s.image_id for s in read_training_splits(config_for(cub_root, split_seed=seed)).val
        )
        for seed in range(6)
    }
    assert len(carves) > 1


def test_val_carve_takes_at_least_one_per_class_and_leaves_one_in_train() -> None:
    def samples(label: int, count: int) -> list[Sample]:
        return [
            Sample(f"{label}/{i}.jpg", Path(f"{label}/{i}.jpg"), label, ((0, 0, 1, 1),))
            for i in range(count)
        ]

    pool = samples(0, 1) + samples(1, 2) + samples(2, 40)
    train, val = carve_validation(pool, 0.01, 0)
    assert [sum(s.label == c for s in val) for c in range(3)] == [0, 1, 1]
    train, val = carve_validation(pool, 0.99, 0)
    assert [sum(s.label == c for s in train) for c in range(3)] == [1, 1, 1]


def test_val_carve_does_not_depend_on_file_order(cub_root: Path) -> None:
    config = config_for(cub_root)
    before = {s.image_id for s in read_training_splits(config).val}
    for name in ("images.txt", "bounding_boxes.txt"):
        path = cub_root / name
        path.write_text("\n".join(reversed(path.read_text().splitlines())) + "\n")
    assert {s.image_id for s in read_training_splits(config).val} == before


def test_test_split_is_only_returned_by_read_test_split(cub_root: Path) -> None:
    config = config_for(cub_root)
    splits = read_training_splits(config)
    test = read_test_split(config)
    assert len(test) == len(CLASSES) * TEST_PER_CLASS
    test_ids = {s.image_id for s in test}
    assert all(s.image_id.endswith(("_0008.jpg", "_0009.jpg")) for s in test)
    assert not test_ids & {s.image_id for s in splits.train + splits.val}


def test_training_splits_work_when_test_images_are_deleted(cub_root: Path) -> None:
    config = config_for(cub_root)
    for sample in read_test_split(config):
        sample.image_path.unlink()
    splits = read_training_splits(config)
    assert len(splits.train) + len(splits.val) == len(CLASSES) * TRAIN_PER_CLASS
    with pytest.raises(DatasetError, match=r"4 image file\(s\) of the test split"):
        read_test_split(config)


# --------------------------------------------------------------------------- errors


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as error:
        read_training_splits(config_for(tmp_path / "nowhere"))
    assert "nowhere" in str(error.value)


@pytest.mark.parametrize("file_name", REQUIRED_FILES)
def test_missing_text_file_is_named_with_the_expected_files(cub_root: Path, file_name: str) -> None:
    (cub_root / file_name).unlink()
    with pytest.raises(DatasetError) as error:
        read_training_splits(config_for(cub_root))
    message = str(error.value)
    assert f"lacks {file_name}" in message
    assert all(name in message for name in REQUIRED_FILES)


@pytest.mark.parametrize(
    ("file_name", "line_number", "bad_line"),
    [
        ("images.txt", 3, "3"),
        ("classes.txt", 2, "two 002.Beta_bird"),
        ("image_class_labels.txt", 4, "4 1 extra"),
        ("train_test_split.txt", 5, "5 2"),
        ("bounding_boxes.txt", 6, "5 1.0 2.0 abc 4.0"),
        ("bounding_boxes.txt", 6, "5 1.0 2.0 -3.0 4.0"),
    ],
)
def test_malformed_line_is_reported_as_file_colon_line_with_the_expected_form(
    cub_root: Path, file_name: str, line_number: int, bad_line: str
) -> None:
    replace_line(cub_root / file_name, line_number, bad_line)
    with pytest.raises(DatasetError, match="expected '<") as error:
        read_training_splits(config_for(cub_root))
    assert f"{cub_root / file_name}:{line_number}:" in str(error.value)


def test_unknown_class_id_is_reported_with_its_line(cub_root: Path) -> None:
    replace_line(cub_root / "image_class_labels.txt", 7, "7 3")
    with pytest.raises(DatasetError, match=r"image_class_labels.txt:7: unknown class id 3"):
        read_training_splits(config_for(cub_root))


@pytest.mark.parametrize(
    "file_name", ["image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt"]
)
def test_image_id_missing_from_an_annotation_file_is_reported(
    cub_root: Path, file_name: str
) -> None:
    path = cub_root / file_name
    path.write_text(
        "\n".join(line for line in path.read_text().splitlines() if not line.startswith("12 "))
    )
    with pytest.raises(DatasetError, match=rf"{file_name} has no line for image id\(s\) 12"):
        read_training_splits(config_for(cub_root))


def test_annotation_of_an_unlisted_image_id_is_reported(cub_root: Path) -> None:
    with (cub_root / "bounding_boxes.txt").open("a") as handle:
        handle.write("99 1.0 1.0 2.0 2.0\n")
    with pytest.raises(DatasetError, match=r"image id 99 is not listed in images\.txt"):
        read_training_splits(config_for(cub_root))


def test_missing_training_image_is_named_when_reading_the_splits(cub_root: Path) -> None:
    (cub_root / "images" / "002.Beta_bird" / "Beta_bird_0001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"Beta_bird_0001\.jpg"):
        read_training_splits(config_for(cub_root))


def test_image_missing_or_corrupt_at_load_time_raises_naming_the_file(cub_root: Path) -> None:
    config = config_for(cub_root)
    splits = read_training_splits(config)
    dataset = WsolDataset(splits.train, build_transform(config, train=False))
    dataset.samples[0].image_path.unlink()
    with pytest.raises(DatasetError, match="image file not found") as error:
        dataset[0]
    assert str(dataset.samples[0].image_path) in str(error.value)
    dataset.samples[1].image_path.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match="cannot decode image") as error:
        dataset[1]
    assert str(dataset.samples[1].image_path) in str(error.value)


def test_mask_foreground_is_grey_level_above_half_of_255(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), np.array([[0, 127, 128, 255]], np.uint8))
    assert read_mask(path).tolist() == [[False, False, True, True]]


# --------------------------------------------------------------------------- WsolDataset


@pytest.fixture(scope="module")
def synthetic_splits(synthetic_root: Path) -> tuple[DataConfig, list[Sample]]:
    config = DataConfig(root=synthetic_root, resize=72, crop=64)
    return config, read_training_splits(config).train


def test_items_have_the_documented_dtypes_shapes_and_ranges(synthetic_splits) -> None:
    config, samples = synthetic_splits
    item = WsolDataset(samples, build_transform(config, train=True), seed=1)[3]
    image, mask, boxes = item["image"], item["mask"], item["boxes"]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert boxes.dtype == torch.int64 and boxes.shape == (1, 4)
    assert boxes.min() >= 0 and boxes.max() <= 63
    assert mask.dtype == torch.float32 and mask.shape == (1, 64, 64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert bool(item["has_mask"]) and item["index"] == 3
    assert item["image_id"] == samples[3].image_id


def test_sample_without_mask_gets_a_zero_mask_and_has_mask_false(cub_root: Path) -> None:
    config = config_for(cub_root)
    samples = [s for s in read_training_splits(config).train if s.mask_path is None]
    item = WsolDataset(samples, build_transform(config, train=True))[0]
    assert not bool(item["has_mask"]) and item["mask"].shape == (1, 32, 32)
    assert item["mask"].sum() == 0


def test_transformed_mask_box_equals_transformed_box_on_dataset_items(synthetic_splits) -> None:
    # Upscaling samples every source pixel and there is no crop, so the exact equality
    # holds for any shape (cropping a non-rectangular object may shrink its mask's box).
    _, samples = synthetic_splits
    dataset = WsolDataset(samples, WsolTransform(resize=96, crop=96, train=True), seed=5)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            box = mask_bounding_box(item["mask"][0].numpy() > 0)
            assert box == tuple(item["boxes"][0].tolist()), item["image_id"]


def test_same_seed_epoch_and_index_give_identical_tensors(synthetic_splits) -> None:
    config, samples = synthetic_splits
    first = WsolDataset(samples, build_transform(config, train=True), seed=7)
    second = WsolDataset(samples, build_transform(config, train=True), seed=7)
    first.set_epoch(4)
    second.set_epoch(4)
    for index in (0, 5, 11):
        a, b = first[index], second[index]
        for key in ("image", "mask", "boxes", "label"):
            assert torch.equal(a[key], b[key])


def test_different_epochs_give_different_training_augmentation(synthetic_splits) -> None:
    config, samples = synthetic_splits
    dataset = WsolDataset(samples, build_transform(config, train=True), seed=7)
    dataset.set_epoch(0)
    epoch0 = [dataset[i]["image"] for i in range(6)]
    dataset.set_epoch(1)
    epoch1 = [dataset[i]["image"] for i in range(6)]
    assert sum(not torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True)) >= 4


def test_evaluation_items_do_not_depend_on_epoch_or_seed(synthetic_splits) -> None:
    config, samples = synthetic_splits
    first = WsolDataset(samples, build_transform(config, train=False), seed=1)
    second = WsolDataset(samples, build_transform(config, train=False), seed=2)
    second.set_epoch(9)
    assert torch.equal(first[2]["image"], second[2]["image"])


def test_batches_do_not_depend_on_the_number_of_workers(synthetic_splits) -> None:
    config, samples = synthetic_splits
    dataset = WsolDataset(samples[:8], build_transform(config, train=True), seed=3)
    dataset.set_epoch(2)
    batches = [
        next(iter(DataLoader(dataset, 8, num_workers=workers, collate_fn=collate_samples)))
        for workers in (0, 2)
    ]
    assert torch.equal(batches[0]["image"], batches[1]["image"])


def test_collate_stacks_tensors_and_keeps_boxes_and_ids_as_lists(cub_root: Path) -> None:
    config = config_for(cub_root)
    samples = read_training_splits(config).train
    dataset = WsolDataset(samples, build_transform(config, train=False))
    batch = collate_samples([dataset[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 32, 32)
    assert batch["label"].shape == (3,) and batch["label"].dtype == torch.int64
    assert batch["mask"].shape == (3, 1, 32, 32)
    assert batch["has_mask"].dtype == torch.bool and batch["has_mask"].shape == (3,)
    assert batch["index"].tolist() == [0, 1, 2]
    assert isinstance(batch["boxes"], list) and all(b.shape[1] == 4 for b in batch["boxes"])
    assert batch["image_id"] == [s.image_id for s in samples[:3]]


def test_copied_dataset_reads_the_same(cub_root: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(cub_root, tmp_path / "copy")
    ids = [s.image_id for s in read_training_splits(config_for(copy)).val]
    assert ids == [s.image_id for s in read_training_splits(config_for(cub_root)).val]


def test_negative_index_gets_the_same_augmentation_as_its_positive_index(
    synthetic_splits,
) -> None:
    config, samples = synthetic_splits
    dataset = WsolDataset(samples, build_transform(config, train=True), seed=2)
    last = dataset[len(dataset) - 1]
    assert torch.equal(dataset[-1]["image"], last["image"]) and last["index"] == len(dataset) - 1
