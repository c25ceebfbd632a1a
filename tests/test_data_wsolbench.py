"""The wsolevaluation metadata reader (Choe et al., CVPR 2020): CUB and ILSVRC with boxes,
OpenImages with instance and ignore masks; its val (train-fullsup) split validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_layouts import (
    HEIGHT,
    OPENIMAGES_CLASSES,
    OPENIMAGES_MASKS,
    OPENIMAGES_TRAIN,
    WIDTH,
    WSOL_CUB,
    WSOL_CUB_CLASSES,
    replace_line,
    write_image,
    write_metadata,
    write_wsolbench_cub,
    write_wsolbench_openimages,
)

from wsol.config import DataConfig
from wsol.data import (
    DatasetError,
    WsolDataset,
    WsolTransform,
    read_test_split,
    read_training_splits,
)
from wsol.data.check import check_dataset


@pytest.fixture
def cub_root(tmp_path: Path) -> Path:
    return write_wsolbench_cub(tmp_path / "wsolevaluation")


@pytest.fixture
def openimages_root(tmp_path: Path) -> Path:
    return write_wsolbench_openimages(tmp_path / "wsolevaluation")


def config_for(root: Path, name: str = "wsolbench_cub", **fields: object) -> DataConfig:
    return DataConfig(root=root, format=name, resize=32, crop=32, **fields)


def rows(samples) -> list[tuple]:
    return [(s.image_id, s.label, list(s.boxes)) for s in samples]


def test_cub_splits_labels_boxes_and_the_val_split_as_validation(cub_root: Path) -> None:
    config = config_for(cub_root, val_fraction=0.5)  # not used: val is the validation split
    splits = read_training_splits(config)
    assert splits.class_names == list(WSOL_CUB_CLASSES)
    assert rows(splits.train) == WSOL_CUB["train"]
    assert rows(splits.val) == WSOL_CUB["val"]
    assert rows(read_test_split(config)) == WSOL_CUB["test"]
    sample = splits.val[0]
    assert sample.image_path == cub_root / "dataset" / "CUB" / sample.image_id
    assert sample.mask_path is None


def test_the_check_of_a_good_copy_is_ok(cub_root: Path, openimages_root: Path) -> None:
    report = check_dataset(cub_root, "wsolbench_cub")
    assert report.ok, report.render()
    assert {n: c.images for n, c in report.splits.items()} == {"train": 6, "val": 4, "test": 4}
    assert report.splits["test"].boxes == 8
    report = check_dataset(openimages_root, "wsolbench_openimages")
    assert report.ok, report.render()
    assert report.splits["val"].with_masks == 2 and report.splits["train"].with_masks == 0


def test_openimages_masks_ignore_masks_and_boxes_of_each_instance(openimages_root: Path) -> None:
    config = config_for(openimages_root, "wsolbench_openimages")
    splits = read_training_splits(config)
    assert splits.class_names == list(OPENIMAGES_CLASSES)
    assert [(s.image_id, s.label, s.boxes, s.mask_path) for s in splits.train] == [
        (image_id, label, (), None) for image_id, label in OPENIMAGES_TRAIN
    ]
    images = openimages_root / "dataset" / "OpenImages"
    two = next(s for s in splits.val if s.image_id == "val/0by6g/3a29f0b33894d4a6.jpg")
    assert two.mask_paths == (
        images / "val/0by6g/3a29f0b33894d4a6_m0.png",
        images / "val/0by6g/3a29f0b33894d4a6_m1.png",
    )
    assert two.ignore_mask_path == images / "val/0by6g/3a29f0b33894d4a6_ignore.png"
    assert two.mask_encoding == "nonzero" and two.boxes == ()
    dataset = WsolDataset(splits.val, WsolTransform(resize=WIDTH, crop=WIDTH, train=False))
    for index, sample in enumerate(splits.val):
        item = dataset[index]
        rectangles = OPENIMAGES_MASKS["val"][sample.image_id]
        # 32 x 24 -> 32 x 32: x unchanged; y0' = ceil(4 y0 / 3 - 1/2), y1' likewise on y1 + 1
        expected = [
            [x0, -(-(8 * y0 - 3) // 6), x1, -(-(8 * (y1 + 1) - 3) // 6) - 1]
            for x0, y0, x1, y1 in rectangles
        ]
        assert item["boxes"].tolist() == expected
        union = item["mask"][0].bool()
        for x0, y0, x1, y1 in expected:
            assert union[y0 : y1 + 1, x0 : x1 + 1].all()
        assert int(union.sum()) == sum((x1 - x0 + 1) * (y1 - y0 + 1) for x0, y0, x1, y1 in expected)


def test_ilsvrc_classes_are_named_by_their_training_folders(tmp_path: Path) -> None:
    root = tmp_path / "wsolevaluation"
    train = [(f"train/{w}/{w}_1.JPEG", k) for k, w in enumerate(["n01440764", "n01443537"])]
    val = [("val2/0/0.jpeg", 0), ("val2/1/0.jpeg", 1)]
    test = [("val/ILSVRC2012_val_00000001.JPEG", 1), ("val/ILSVRC2012_val_00000002.JPEG", 0)]
    for split, split_rows in (("train", train), ("val", val), ("test", test)):
        boxes = [f"{image_id},1,2,30,20" for image_id, _ in split_rows]
        write_metadata(root / "metadata" / "ILSVRC" / split, split_rows, boxes, True)
        for seed, (image_id, _) in enumerate(split_rows):
            write_image(root / "dataset" / "ILSVRC" / image_id, seed)
    assert check_dataset(root, "wsolbench_ilsvrc").class_names == ["n01440764", "n01443537"]
    splits = read_training_splits(config_for(root, "wsolbench_ilsvrc"))
    assert splits.class_names == ["n01440764", "n01443537"]
    assert [s.label for s in splits.val] == [0, 1]
    assert [s.boxes for s in read_test_split(config_for(root, "wsolbench_ilsvrc"))] == [
        ((1, 2, 30, 20),)
    ] * 2
    # the test split alone names no class by folder: val/ holds every class
    assert check_dataset(root, "wsolbench_ilsvrc", ["test"]).class_names == ["class_0", "class_1"]


def test_a_missing_annotation_file_is_named(cub_root: Path) -> None:
    (cub_root / "metadata" / "CUB" / "val" / "class_labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"CUB/val/class_labels\.txt: missing; expected"):
        read_training_splits(config_for(cub_root))
    (cub_root / "metadata" / "CUB" / "test" / "localization.txt").unlink()
    with pytest.raises(DatasetError, match=r"CUB/test/localization\.txt: missing; expected"):
        read_test_split(config_for(cub_root))


def test_bad_lines_are_named_by_file_and_line(cub_root: Path) -> None:
    folder = cub_root / "metadata" / "CUB" / "train"
    replace_line(folder / "class_labels.txt", 2, f"{WSOL_CUB['train'][1][0]},-1")
    replace_line(folder / "localization.txt", 3, "nowhere/x.jpg,1,1,2,2")
    problems = [str(p) for p in check_dataset(cub_root, "wsolbench_cub", ["train"]).problems]
    assert problems == [
        f"{folder / 'class_labels.txt'}:2: malformed line '{WSOL_CUB['train'][1][0]},-1'; "
        "expected '<image id>,<class index >= 0>'",
        f"{folder / 'image_ids.txt'}:2: '{WSOL_CUB['train'][1][0]}' has no line in "
        f"{folder / 'class_labels.txt'}",
        f"{folder / 'localization.txt'}:3: image id 'nowhere/x.jpg' is not listed in image_ids.txt",
    ]


def test_a_missing_image_is_named(cub_root: Path) -> None:
    image_id = WSOL_CUB["val"][2][0]
    (cub_root / "dataset" / "CUB" / image_id).unlink()
    with pytest.raises(DatasetError, match=rf"{image_id} \(.*CUB/val/image_ids\.txt:3\)"):
        read_training_splits(config_for(cub_root))


def test_a_box_outside_its_image_and_a_wrong_stated_size_are_reported(cub_root: Path) -> None:
    folder = cub_root / "metadata" / "CUB" / "test"
    image_id = WSOL_CUB["test"][0][0]
    replace_line(folder / "localization.txt", 2, f"{image_id},4,4,8,24")
    replace_line(folder / "image_sizes.txt", 4, f"{WSOL_CUB['test'][3][0]},{WIDTH},{HEIGHT + 1}")
    problems = [str(p) for p in check_dataset(cub_root, "wsolbench_cub").problems]
    assert problems == [
        f"{folder / 'localization.txt'}:2: box (4, 4, 8, 24) lies outside its image {image_id} "
        f"({WIDTH}x{HEIGHT} px: x in 0..{WIDTH - 1}, y in 0..{HEIGHT - 1})",
        f"{cub_root / 'dataset' / 'CUB' / WSOL_CUB['test'][3][0]}: is {WIDTH}x{HEIGHT} px but "
        f"the annotations state {WIDTH}x{HEIGHT + 1} (listed at {folder / 'image_ids.txt'}:4)",
    ]


def test_a_missing_instance_mask_is_reported(openimages_root: Path) -> None:
    mask = openimages_root / "dataset" / "OpenImages" / "test/0by6g/0a51958fcd523ae5_m0.png"
    mask.unlink()
    (problem,) = check_dataset(openimages_root, "wsolbench_openimages").problems
    assert str(problem) == f"{mask}: mask file not found (image test/0by6g/0a51958fcd523ae5.jpg)"
