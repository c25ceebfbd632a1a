"""The Oxford Flowers 102 reader: setid.mat splits, imagelabels.mat labels and the segmim
masks (background painted blue) from which boxes are derived."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_layouts import (
    FLOWERS_LABELS,
    FLOWERS_OBJECTS,
    FLOWERS_SIZE,
    FLOWERS_SPLITS,
    write_flowers,
)
from scipy.io import savemat

from wsol.config import DataConfig
from wsol.data import (
    DatasetError,
    WsolDataset,
    WsolTransform,
    read_test_split,
    read_training_splits,
)
from wsol.data.check import check_dataset
from wsol.data.dataset import read_mask


@pytest.fixture
def flowers_root(tmp_path: Path) -> Path:
    return write_flowers(tmp_path / "flowers102")


def config_for(root: Path, **fields: object) -> DataConfig:
    return DataConfig(root=root, format="flowers", resize=64, crop=64, **fields)


def numbers(samples) -> list[int]:
    return [int(s.image_id[len("jpg/image_") : -len(".jpg")]) for s in samples]


def test_trnid_valid_tstid_are_train_validation_and_test(flowers_root: Path) -> None:
    config = config_for(flowers_root, val_fraction=0.5)  # not used: valid is the val split
    splits = read_training_splits(config)
    assert numbers(splits.train) == FLOWERS_SPLITS["trnid"]
    assert numbers(splits.val) == FLOWERS_SPLITS["valid"]
    test = read_test_split(config)
    assert numbers(test) == FLOWERS_SPLITS["tstid"]
    assert splits.class_names == ["class_001", "class_002", "class_003"]
    for sample in splits.train + splits.val + test:
        k = numbers([sample])[0]
        assert sample.label == FLOWERS_LABELS[k - 1] - 1
        assert sample.image_path == flowers_root / "jpg" / f"image_{k:05d}.jpg"
        assert sample.mask_path == flowers_root / "segmim" / f"segmim_{k:05d}.jpg"
        assert sample.boxes == () and sample.mask_encoding == "not_blue"


def near(box: list[int], expected: tuple[int, int, int, int]) -> bool:
    """Equal up to one pixel per side: JPEG's chroma upsampling mixes the blue and the
    flower in a one-pixel band along the outline, as in the real segmim files."""
    return all(abs(a - b) <= 1 for a, b in zip(box, expected, strict=True))


def test_mask_is_everything_but_the_blue_background(flowers_root: Path) -> None:
    width, height = FLOWERS_SIZE
    kernel = np.ones((3, 3), np.uint8)
    for k, (x0, y0, x1, y1) in FLOWERS_OBJECTS.items():
        mask = read_mask(flowers_root / "segmim" / f"segmim_{k:05d}.jpg", "not_blue")
        expected = np.zeros((height, width), np.uint8)
        expected[y0 : y1 + 1, x0 : x1 + 1] = 1
        inner = cv2.erode(expected, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
        outer = cv2.dilate(expected, kernel).astype(bool)
        assert not (inner & ~mask).any() and not (mask & ~outer).any(), k


def test_blue_within_tolerance_is_background_and_blue_flowers_are_not(tmp_path: Path) -> None:
    path = tmp_path / "segmim_00001.png"
    bgr = np.array([[[255, 0, 0], [254, 0, 0], [216, 39, 39], [200, 0, 0], [255, 60, 0]]])
    cv2.imwrite(str(path), bgr.astype(np.uint8))
    assert read_mask(path, "not_blue").tolist() == [[False, False, False, True, True]]


def test_dataset_items_get_the_box_of_the_mask_foreground(flowers_root: Path) -> None:
    test = read_test_split(config_for(flowers_root))
    dataset = WsolDataset(test, WsolTransform(resize=48, crop=48, train=False))
    for index, sample in enumerate(test):
        item = dataset[index]
        x0, _, x1, _ = FLOWERS_OBJECTS[numbers([sample])[0]]
        # 48 x 32 -> 48 x 48: x unchanged, y scaled by 1.5 (rows 0..15 -> 0..23)
        (box,) = item["boxes"].tolist()
        assert near(box, (x0, 0, x1, 23)), (sample.image_id, box)
        ys, xs = item["mask"][0].nonzero(as_tuple=True)
        assert [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] == box


def test_the_check_of_a_good_copy_counts_every_split(flowers_root: Path) -> None:
    report = check_dataset(flowers_root, "flowers", require_masks=True)
    assert report.ok, report.render()
    assert {name: c.images for name, c in report.splits.items()} == {
        "train": 6,
        "val": 3,
        "test": 4,
    }
    assert report.splits["test"].with_masks == 4 and report.splits["test"].with_boxes == 0


def test_a_missing_annotation_file_is_named(flowers_root: Path) -> None:
    (flowers_root / "setid.mat").unlink()
    with pytest.raises(DatasetError, match=r"setid\.mat: missing; expected variables trnid"):
        read_training_splits(config_for(flowers_root))


def test_bad_image_numbers_are_named_by_variable_and_entry(flowers_root: Path) -> None:
    splits = {name: list(ids) for name, ids in FLOWERS_SPLITS.items()}
    splits["tstid"][1] = 99  # beyond imagelabels.mat
    splits["valid"][0] = 2  # already in trnid
    savemat(flowers_root / "setid.mat", {n: np.array([i], np.uint16) for n, i in splits.items()})
    setid = flowers_root / "setid.mat"
    assert [str(p) for p in check_dataset(flowers_root, "flowers").problems] == [
        f"{setid}:valid(1): image number 2 is already trnid(2)",
        f"{setid}:tstid(2): image number 99 is not in 1..13 of imagelabels.mat",
    ]


def test_a_missing_image_is_named(flowers_root: Path) -> None:
    (flowers_root / "jpg" / "image_00008.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image_00008\.jpg \(.*setid\.mat:valid\(2\)\)"):
        read_training_splits(config_for(flowers_root))


def test_an_unreadable_mask_and_a_mask_of_another_size_are_reported(flowers_root: Path) -> None:
    (flowers_root / "segmim" / "segmim_00011.jpg").write_bytes(b"GIF89a? no")
    cv2.imwrite(str(flowers_root / "segmim" / "segmim_00012.jpg"), np.zeros((8, 8, 3), np.uint8))
    problems = [str(p) for p in check_dataset(flowers_root, "flowers").problems]
    assert len(problems) == 2
    assert problems[0].startswith(f"{flowers_root / 'segmim' / 'segmim_00011.jpg'}: mask ")
    assert problems[1] == (
        f"{flowers_root / 'segmim' / 'segmim_00012.jpg'}: mask is 8x8 px but its image "
        f"{flowers_root / 'jpg' / 'image_00012.jpg'} is 48x32 px; expected the same size"
    )


def test_without_segmentations_the_scored_splits_are_reported_once(flowers_root: Path) -> None:
    for path in (flowers_root / "segmim").iterdir():
        path.unlink()
    (flowers_root / "segmim").rmdir()
    assert read_training_splits(config_for(flowers_root)).train  # training needs no mask
    report = check_dataset(flowers_root, "flowers")
    assert [str(p) for p in report.problems] == [
        "all 3 images of the val split have neither a box nor a mask, so they cannot be scored",
        "all 4 images of the test split have neither a box nor a mask, so they cannot be scored",
    ]
    assert any("segmim" in note for note in report.notes)
    with pytest.raises(DatasetError, match="require_masks is set but 6 image"):
        read_training_splits(config_for(flowers_root, require_masks=True))
