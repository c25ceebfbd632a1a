"""CUB-200-2011 with its separate segmentation release (segmentations/<class>/<name>.png,
grey level = annotator agreement), found inside the dataset folder or next to it."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsol.config import DataConfig
from wsol.data import DatasetError, read_test_split, read_training_splits
from wsol.data.check import check_dataset
from wsol.data.dataset import read_mask


@pytest.fixture
def cub_root(synthetic_root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic_root, tmp_path / "CUB_200_2011"))


def config_for(root: Path, **fields: object) -> DataConfig:
    return DataConfig(root=root, resize=72, crop=64, **fields)


def test_the_release_extracted_next_to_the_dataset_folder_is_found(cub_root: Path) -> None:
    shutil.move(cub_root / "segmentations", cub_root.parent / "segmentations")
    config = config_for(cub_root, require_masks=True)
    test = read_test_split(config)
    assert test and all(s.mask_path is not None for s in test)
    first = test[0]
    assert first.mask_path == (cub_root.parent / "segmentations" / first.image_id).with_suffix(
        ".png"
    )
    assert check_dataset(cub_root, "cub", require_masks=True).ok


def test_foreground_is_more_than_half_of_the_annotators(tmp_path: Path) -> None:
    path = tmp_path / "Black_Footed_Albatross_0001_796111.png"
    # five annotators: grey level 51 per vote
    cv2.imwrite(str(path), np.array([[0, 51, 102, 153, 204, 255]], np.uint8))
    assert read_mask(path).tolist() == [[False, False, False, True, True, True]]


def test_without_segmentations_require_masks_fails_reading_and_the_check(cub_root: Path) -> None:
    shutil.rmtree(cub_root / "segmentations")
    assert check_dataset(cub_root, "cub").ok  # masks are optional unless required
    report = check_dataset(cub_root, "cub", ["train"], require_masks=True)
    assert [str(p) for p in report.problems] == [
        "all 36 images of the train split have no mask (require_masks)"
    ]
    assert any("no segmentations/ folder" in note for note in report.notes)
    with pytest.raises(DatasetError, match=r"require_masks is set but 33 image\(s\) of the train"):
        read_training_splits(config_for(cub_root, require_masks=True))


def test_a_missing_mask_and_a_mask_of_another_size_are_reported(cub_root: Path) -> None:
    masks = sorted((cub_root / "segmentations").rglob("*.png"))
    masks[0].unlink()
    cv2.imwrite(str(masks[1]), np.zeros((5, 7), np.uint8))
    report = check_dataset(cub_root, "cub", require_masks=True)
    images = cub_root / "images"
    image_ids = [str(m.relative_to(cub_root / "segmentations").with_suffix(".jpg")) for m in masks]
    listed = {
        line.split()[1]: number
        for number, line in enumerate((cub_root / "images.txt").read_text().splitlines(), 1)
    }
    assert [str(p) for p in report.problems] == [
        f"{masks[1]}: mask is 7x5 px but its image {images / image_ids[1]} is 64x64 px; "
        "expected the same size",
        f"{cub_root / 'images.txt'}:{listed[image_ids[0]]}: {image_ids[0]} has no mask "
        "(require_masks)",
    ]
