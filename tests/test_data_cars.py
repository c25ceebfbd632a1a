"""The Stanford Cars reader, on a miniature devkit layout written with scipy.io.savemat."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_layouts import CARS_CLASSES, CARS_TEST, CARS_TRAIN, cars_annotations, write_cars
from scipy.io import savemat

from wsol.config import DataConfig
from wsol.data import (
    DatasetError,
    WsolDataset,
    build_transform,
    read_test_split,
    read_training_splits,
)
from wsol.data.cars import read_cars_split
from wsol.data.check import check_dataset


@pytest.fixture
def cars_root(tmp_path: Path) -> Path:
    return write_cars(tmp_path / "stanford_cars")


def config_for(root: Path, **fields: object) -> DataConfig:
    return DataConfig(root=root, format="cars", resize=40, crop=32, **fields)


def expected(folder: str, rows: list) -> list[tuple]:
    return [
        (f"{folder}/{fname}", class_id - 1, ((x1 - 1, y1 - 1, x2 - 1, y2 - 1),))
        for fname, class_id, (x1, y1, x2, y2) in rows
    ]


def test_splits_labels_and_1_based_boxes_become_0_based_inclusive(cars_root: Path) -> None:
    class_names, train = read_cars_split(cars_root, "train")
    assert class_names == list(CARS_CLASSES)
    assert [(s.image_id, s.label, s.boxes) for s in train] == expected("cars_train", CARS_TRAIN)
    assert all(s.mask_path is None and s.image_path.is_file() for s in train)
    test = read_test_split(config_for(cars_root))
    assert [(s.image_id, s.label, s.boxes) for s in test] == expected("cars_test", CARS_TEST)


def test_validation_is_carved_from_train_per_class_and_never_holds_test_images(
    cars_root: Path,
) -> None:
    splits = read_training_splits(config_for(cars_root, val_fraction=0.34))
    assert sorted(s.label for s in splits.val) == [0, 1, 2]
    ids = {s.image_id for s in splits.train + splits.val}
    assert ids == {image_id for image_id, _, _ in expected("cars_train", CARS_TRAIN)}


def test_mat_files_are_found_at_the_root_or_in_devkit(cars_root: Path) -> None:
    shutil.move(cars_root / "devkit" / "cars_train_annos.mat", cars_root)
    shutil.move(cars_root / "cars_test_annos_withlabels.mat", cars_root / "devkit")
    assert len(read_cars_split(cars_root, "train")[1]) == len(CARS_TRAIN)
    assert len(read_cars_split(cars_root, "test")[1]) == len(CARS_TEST)


def test_a_missing_annotation_file_is_named(cars_root: Path) -> None:
    (cars_root / "devkit" / "cars_train_annos.mat").unlink()
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat: missing; expected"):
        read_training_splits(config_for(cars_root))


def test_test_annotations_without_class_are_refused_pointing_to_the_labelled_file(
    cars_root: Path,
) -> None:
    annotations = cars_annotations(CARS_TEST)
    unlabelled = np.zeros(annotations.shape, [(n, "O") for n in annotations.dtype.names[:4]])
    for name in unlabelled.dtype.names:
        unlabelled[name] = annotations[name]
    savemat(cars_root / "cars_test_annos_withlabels.mat", {"annotations": unlabelled})
    with pytest.raises(DatasetError, match=r"lacks the field.*class.*withlabels"):
        read_test_split(config_for(cars_root))
    assert read_training_splits(config_for(cars_root)).train  # train does not need it


def test_bad_entries_are_named_by_file_and_matlab_index(cars_root: Path) -> None:
    rows = list(CARS_TRAIN)
    rows[3] = (rows[3][0], 9, rows[3][2])  # an unknown class
    rows[5] = (rows[5][0], 1, (10, 2, 5, 8))  # x2 < x1
    savemat(cars_root / "devkit" / "cars_train_annos.mat", {"annotations": cars_annotations(rows)})
    report = check_dataset(cars_root, "cars")
    annos = cars_root / "devkit" / "cars_train_annos.mat"
    assert [str(p) for p in report.problems] == [
        f"{annos}:annotations(4): class 9 is not a class id 1..3 of cars_meta.mat",
        f"{annos}:annotations(6): box (10, 2, 5, 8) has bbox_x2 < bbox_x1 or bbox_y2 < bbox_y1",
    ]
    with pytest.raises(DatasetError, match=r"annotations\(4\): class 9"):
        read_cars_split(cars_root, "train")


def test_a_missing_image_is_named_with_its_annotation_entry(cars_root: Path) -> None:
    (cars_root / "cars_train" / "00002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"cars_train/00002\.jpg \(.*annotations\(2\)\)"):
        read_training_splits(config_for(cars_root))


def test_an_unreadable_image_is_named_by_the_check_and_when_loaded(cars_root: Path) -> None:
    broken = cars_root / "cars_train" / "00003.jpg"
    broken.write_bytes(b"\x00garbage, not a JPEG")
    (problem,) = check_dataset(cars_root, "cars").problems
    assert problem.where == str(broken) and "not an image" in problem.message
    config = config_for(cars_root)
    samples = [s for s in read_cars_split(cars_root, "train")[1] if s.image_path == broken]
    with pytest.raises(DatasetError, match=rf"cannot decode image file {broken}"):
        WsolDataset(samples, build_transform(config, train=False))[0]


def test_a_box_outside_its_image_is_reported_with_its_entry(cars_root: Path) -> None:
    rows = list(CARS_TRAIN)
    rows[2] = (rows[2][0], rows[2][1], (1, 1, 33, 24))  # x2 = 33 > width 32 (1-based)
    savemat(cars_root / "devkit" / "cars_train_annos.mat", {"annotations": cars_annotations(rows)})
    (problem,) = check_dataset(cars_root, "cars").problems
    assert problem.where == f"{cars_root / 'devkit' / 'cars_train_annos.mat'}:annotations(3)"
    assert "box (0, 0, 32, 23) lies outside its image cars_train/00003.jpg (32x24 px" in str(
        problem
    )
