"""``wsol data check`` on every format, the study pre-flight that runs it, the truncated-
image guard of the data loader, and the dataset specs in ablations/."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import cv2
import numpy as np
import pytest
from dataset_layouts import (
    write_cars,
    write_flowers,
    write_tinyimagenet,
    write_wsolbench_cub,
    write_wsolbench_openimages,
)

from study.cli import main
from wsol.config import DatasetFormatName
from wsol.data import SPLIT_READERS, DatasetError, WsolDataset, WsolTransform
from wsol.data.check import check_dataset
from wsol.data.dataset import read_image_rgb, read_mask
from wsol.data.formats import FORMATS

ABLATIONS = Path(__file__).resolve().parent.parent / "ablations"


@pytest.fixture
def write_cub(synthetic_root: Path) -> Callable[[Path], Path]:
    return lambda root: Path(shutil.copytree(synthetic_root, root))


WRITERS: dict[str, Callable[[Path], Path]] = {
    "cars": write_cars,
    "flowers": write_flowers,
    "tinyimagenet": write_tinyimagenet,
    "wsolbench_cub": write_wsolbench_cub,
    "wsolbench_openimages": write_wsolbench_openimages,
}
FORMAT_NAMES = ["cub", *WRITERS]


@pytest.fixture(params=FORMAT_NAMES)
def dataset(request, tmp_path: Path, write_cub) -> tuple[str, Path]:
    """(format name, a good miniature copy of a dataset in that format)."""
    writer = write_cub if request.param == "cub" else WRITERS[request.param]
    return request.param, writer(tmp_path / request.param)


def a_training_image(format_name: str, root: Path) -> tuple[Path, str]:
    """The image path of the format's 2nd training sample and where it is listed."""
    entry = FORMATS[format_name].index(root, ("train",)).splits["train"][1]
    return entry.sample.image_path, entry.listed_at


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_the_formats_are_the_same_in_the_config_the_readers_and_the_checker() -> None:
    assert set(get_args(DatasetFormatName)) == set(FORMATS) == set(SPLIT_READERS)
    assert {name for name, f in FORMATS.items() if f.has_official_validation} == {
        "flowers",
        "wsolbench_cub",
        "wsolbench_ilsvrc",
        "wsolbench_openimages",
    }


def test_a_good_copy_of_every_format_passes_with_exit_status_0(
    dataset: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    format_name, root = dataset
    assert main(["data", "check", str(root), "--format", format_name]) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"{format_name} dataset at {root}: ")
    assert output.rstrip().endswith("OK: no problem found")
    assert "  train  " in output


def test_a_subset_whose_class_list_has_classes_without_images_warns_unless_strict(
    tmp_path: Path, write_cub, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_cub(tmp_path / "subset")
    classes = root / "classes.txt"
    listed = classes.read_text().splitlines()
    extra = [f"{len(listed) + k} 0{len(listed) + k}.Unused_class_{k}" for k in (1, 2)]
    classes.write_text("\n".join([*listed, *extra]) + "\n")

    assert main(["data", "check", str(root), "--format", "cub"]) == 0
    output = capsys.readouterr().out
    assert "warning: 2 of 5 listed classes have no image" in output
    assert "Unused_class_1" in output and output.rstrip().endswith("OK: no problem found")

    assert main(["data", "check", str(root), "--format", "cub", "--strict"]) == 2
    assert "2 of 5 listed classes have no image" in capsys.readouterr().out


def test_a_class_with_test_images_but_no_training_image_is_still_an_error(
    tmp_path: Path, write_cub, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_cub(tmp_path / "untrainable")
    labels = dict(
        line.split() for line in (root / "image_class_labels.txt").read_text().splitlines()
    )
    split = dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines())
    rows = [
        f"{image_id} {'0' if labels[image_id] == '1' else flag}" for image_id, flag in split.items()
    ]
    (root / "train_test_split.txt").write_text("\n".join(rows) + "\n")
    assert main(["data", "check", str(root), "--format", "cub"]) == 2
    assert "has no training image" in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["missing", "garbage", "truncated"])
def test_a_missing_garbage_or_truncated_image_is_named_with_exit_status_2(
    dataset: tuple[str, Path], fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    format_name, root = dataset
    image, listed_at = a_training_image(format_name, root)
    if fault == "missing":
        image.unlink()
    elif fault == "garbage":
        image.write_bytes(b"<html>404 Not Found</html>")
    else:
        truncate(image)
    assert main(["data", "check", str(root), "--format", format_name, "--no-progress"]) == 2
    output = capsys.readouterr().out
    expected = {
        "missing": "file not found",
        "garbage": "not an image (starts with 3c 68 74 6d 6c 3e 34 30); expected a JPEG or PNG",
        "truncated": "truncated JPEG: no end-of-image marker (FF D9)",
    }[fault]
    assert f"\n  {image}: {expected}" in output
    assert f"(listed at {listed_at})" in output
    assert output.rstrip().endswith("FAILED: 1 problem(s)")


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    root = write_cars(tmp_path / "cars")
    broken = sorted((root / "cars_train").iterdir())[:4]
    for path in broken:
        path.unlink()
    report = check_dataset(root, "cars")
    assert [p.where for p in report.problems] == [str(path) for path in broken]


def test_a_split_the_format_lacks_is_refused(tmp_path: Path, capsys) -> None:
    root = write_cars(tmp_path / "cars")
    assert main(["data", "check", str(root), "--format", "cars", "--split", "val"]) == 2
    assert "has no val split (it has train, test); its validation split is carved from train" in (
        capsys.readouterr().err
    )


def test_per_class_counts_and_the_same_report_twice(tmp_path: Path) -> None:
    root = write_tinyimagenet(tmp_path / "tiny")
    first = check_dataset(root, "tinyimagenet").render(per_class=True)
    second = check_dataset(root, "tinyimagenet").render(per_class=True)

    def without_timing(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("checked")]

    assert without_timing(first) == without_timing(second)
    assert "    4     2  0 goldfish, Carassius auratus" in first


def test_an_image_in_two_splits_is_reported(tmp_path: Path) -> None:
    root = write_wsolbench_cub(tmp_path / "wsol")
    test = root / "metadata" / "CUB" / "test"
    train_id = (root / "metadata" / "CUB" / "train" / "image_ids.txt").read_text().split()[0]
    for name, line in (
        ("image_ids.txt", train_id),
        ("class_labels.txt", f"{train_id},0"),
        ("image_sizes.txt", f"{train_id},32,24"),
        ("localization.txt", f"{train_id},0,0,5,5"),
    ):
        with (test / name).open("a") as handle:
            handle.write(line + "\n")
    (problem,) = check_dataset(root, "wsolbench_cub").problems
    assert str(problem) == f"{test / 'image_ids.txt'}:5: {train_id} is also in the train split"


def test_decode_finds_an_empty_mask_that_the_quick_check_cannot(tmp_path: Path) -> None:
    root = write_flowers(tmp_path / "flowers")
    segmentation = root / "segmim" / "segmim_00004.jpg"
    cv2.imwrite(str(segmentation), np.full((32, 48, 3), (255, 0, 0), np.uint8))
    assert check_dataset(root, "flowers").ok
    (problem,) = check_dataset(root, "flowers", decode=True).problems
    assert str(problem) == f"{segmentation}: mask of jpg/image_00004.jpg is empty"


def test_a_truncated_image_or_mask_raises_naming_the_file_when_loaded(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    mask = tmp_path / "a.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    cv2.imwrite(str(mask), np.eye(40, dtype=np.uint8) * 255)
    assert read_image_rgb(image).shape == (40, 40, 3) and read_mask(mask).sum() == 40
    truncate(image)
    truncate(mask)
    # OpenCV alone would decode the cut-off JPEG with a warning, grey rows filling the rest
    assert cv2.imread(str(image)) is not None
    with pytest.raises(DatasetError, match=rf"cannot decode image file {image}: truncated JPEG"):
        read_image_rgb(image)
    with pytest.raises(DatasetError, match=rf"cannot decode mask file {mask}: truncated PNG"):
        read_mask(mask)


def test_a_truncated_training_image_stops_the_data_loader(tmp_path: Path) -> None:
    root = write_cars(tmp_path / "cars")
    samples = FORMATS["cars"].read_split(root, "train")[1]
    truncate(samples[2].image_path)
    dataset = WsolDataset(samples, WsolTransform(resize=32, crop=32, train=True))
    with pytest.raises(DatasetError, match=str(samples[2].image_path)):
        [dataset[index] for index in range(len(dataset))]


def test_the_study_preflight_runs_the_check_on_training_splits_only(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from studies import tiny_study

    from study.errors import StudyError
    from study.preflight import check_datasets

    root = Path(shutil.copytree(synthetic_root, tmp_path / "cub"))
    study = tiny_study(root, tmp_path / "studies")
    test_image, train_image = None, None
    for line in (root / "train_test_split.txt").read_text().splitlines():
        image_id, is_train = line.split()
        relative = (root / "images.txt").read_text().splitlines()[int(image_id) - 1].split()[1]
        if is_train == "0" and test_image is None:
            test_image = root / "images" / relative
        if is_train == "1" and train_image is None:
            train_image = root / "images" / relative
    truncate(test_image)
    check_datasets(study, tmp_path)  # the test split is never opened by a study
    truncate(train_image)
    with pytest.raises(StudyError) as error:
        check_datasets(study, tmp_path)
    message = str(error.value)
    assert message.startswith(f"pre-flight: dataset of tiny/full (cub at {root}) has 1 problem")
    assert f"{train_image}: truncated JPEG" in message
    assert f"wsol data check {root} --format cub" in message


# --------------------------------------------------------------------------- specs

DATASET_SPECS = {
    "cub": ("cub", "resnet18", 100, 0.0, True),
    "cub_wsolbench": ("wsolbench_cub", "resnet18", 100, 0.0, False),
    "cars": ("cars", "resnet18", 100, 0.0, False),
    "flowers": ("flowers", "resnet18", 100, 0.0, True),
    "tinyimagenet": ("tinyimagenet", "resnet50", 1000, 5e-5, False),
}


@pytest.mark.parametrize("name", sorted(DATASET_SPECS))
def test_each_dataset_spec_has_the_papers_settings(name: str) -> None:
    from study.spec import load_spec

    data_format, backbone, mask_epochs, mask_decay, masks = DATASET_SPECS[name]
    study = load_spec(ABLATIONS / f"{name}.yaml")
    assert study.name == name
    for config in study.classifier_configs():
        data, f, g = config.data, config.classifier, config.mask
        assert (data.format, data.resize, data.crop, data.require_masks) == (
            data_format,
            256,
            224,
            masks,
        )
        assert (f.backbone, f.pretrained, f.optimizer, f.batch_size, f.lr) == (
            backbone,
            True,
            "sgd",
            16,
            1e-3,
        )
        assert (f.weight_decay, f.lr_step, f.lr_gamma, f.epochs) == (1e-4, 80, 0.1, 200)
        assert (g.optimizer, g.batch_size, g.lr, g.epochs, g.weight_decay) == (
            "sgd",
            128,
            1e-4,
            mask_epochs,
            mask_decay,
        )
    assert study.trial_selection.metric == "val_s_score"


def test_require_masks_checks_data_without_changing_which_f_is_trained() -> None:
    from study.spec import classifier_key
    from wsol.config import RunConfig

    assert classifier_key(RunConfig(data={"require_masks": True})) == classifier_key(RunConfig())
    assert classifier_key(RunConfig(data={"format": "cars"})) != classifier_key(RunConfig())
