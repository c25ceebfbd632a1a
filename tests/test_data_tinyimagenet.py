"""The Tiny-ImageNet-200 reader: train/<wnid>/ with its boxes file, the labelled val/
split as the test split, validation carved from train."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_layouts import (
    TINY_TRAIN_PER_CLASS,
    TINY_VAL,
    TINY_WNIDS,
    TINY_WORDS,
    replace_line,
    tiny_train_box,
    write_tinyimagenet,
)

from wsol.config import DataConfig
from wsol.data import DatasetError, read_test_split, read_training_splits
from wsol.data.check import check_dataset
from wsol.data.tinyimagenet import read_tinyimagenet_split


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return write_tinyimagenet(tmp_path / "tiny-imagenet-200")


def config_for(root: Path, **fields: object) -> DataConfig:
    return DataConfig(root=root, format="tinyimagenet", resize=32, crop=32, **fields)


def test_train_split_labels_follow_wnids_and_boxes_are_kept_inclusive(tiny_root: Path) -> None:
    class_names, train = read_tinyimagenet_split(tiny_root, "train")
    assert class_names == [TINY_WORDS[wnid] for wnid in TINY_WNIDS]
    assert [(s.image_id, s.label, s.boxes) for s in train] == [
        (f"train/{wnid}/images/{wnid}_{k}.JPEG", label, (tiny_train_box(label, k),))
        for label, wnid in enumerate(TINY_WNIDS)
        for k in range(TINY_TRAIN_PER_CLASS)
    ]


def test_the_labelled_val_folder_is_the_test_split_and_validation_is_carved(
    tiny_root: Path,
) -> None:
    config = config_for(tiny_root, val_fraction=0.25)
    test = read_test_split(config)
    assert [(s.image_id, s.label, s.boxes) for s in test] == [
        (f"val/images/val_{k}.JPEG", TINY_WNIDS.index(wnid), (box,))
        for k, (wnid, box) in enumerate(TINY_VAL)
    ]
    splits = read_training_splits(config)
    assert [sum(s.label == c for s in splits.val) for c in range(3)] == [1, 1, 1]
    assert all(s.image_id.startswith("train/") for s in splits.train + splits.val)


def test_the_check_of_a_good_copy_is_ok(tiny_root: Path) -> None:
    report = check_dataset(tiny_root, "tinyimagenet")
    assert report.ok, report.render()
    assert report.splits["train"].images == 12 and report.splits["test"].images == 6


@pytest.mark.parametrize(
    "relative", ["wnids.txt", "val/val_annotations.txt", "train/n01629819/n01629819_boxes.txt"]
)
def test_a_missing_annotation_file_is_named(tiny_root: Path, relative: str) -> None:
    (tiny_root / relative).unlink()
    with pytest.raises(DatasetError, match=rf"{relative}: missing; expected"):
        read_tinyimagenet_split(tiny_root, "test" if relative.startswith("val") else "train")


def test_malformed_lines_and_unknown_wnids_are_named_by_file_and_line(tiny_root: Path) -> None:
    val = tiny_root / "val" / "val_annotations.txt"
    replace_line(val, 2, "val_1.JPEG\tn99999999\t0\t0\t3\t3")
    replace_line(val, 4, "val_3.JPEG\tn01443537\t0\t0\tthree\t3")
    problems = [str(p) for p in check_dataset(tiny_root, "tinyimagenet", ["test"]).problems]
    assert problems[0] == f"{val}:2: WordNet id n99999999 is not a class of wnids.txt"
    assert problems[1].startswith(f"{val}:4: malformed line 'val_3.JPEG\\tn01443537")
    assert len(problems) == 2


def test_a_missing_image_is_named(tiny_root: Path) -> None:
    (tiny_root / "train" / "n01641577" / "images" / "n01641577_2.JPEG").unlink()
    with pytest.raises(DatasetError, match=r"n01641577_2\.JPEG \(.*n01641577_boxes\.txt:3\)"):
        read_training_splits(config_for(tiny_root))


def test_a_box_outside_its_image_is_reported_with_its_line(tiny_root: Path) -> None:
    boxes = tiny_root / "train" / "n01443537" / "n01443537_boxes.txt"
    replace_line(boxes, 2, "n01443537_1.JPEG\t0\t0\t16\t15")  # x1 = 16 in a 16 px image
    (problem,) = check_dataset(tiny_root, "tinyimagenet").problems
    assert str(problem) == (
        f"{boxes}:2: box (0, 0, 16, 15) lies outside its image "
        "train/n01443537/images/n01443537_1.JPEG (16x16 px: x in 0..15, y in 0..15)"
    )
