"""The dataset formats: each one's reader, index function, splits and folder layout.

``DataConfig.format`` names one of :data:`FORMATS`. Every format yields the same
:class:`~wsol.data.Sample` records; they differ in where the files are, how boxes are
written (each module's docstring states its source convention; all become inclusive
(x0, y0, x1, y1) pixel boxes) and whether the dataset has an official validation split
(``val`` in ``splits``: used as the validation split) or not (validation is carved from
train, see :func:`wsol.data.carve_validation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wsol.data import cars, cub, flowers, tinyimagenet, wsolbench
from wsol.data.dataset import Sample
from wsol.data.index import IndexFunction, SplitName

SplitReader = Callable[[Path, SplitName], tuple[list[str], list[Sample]]]


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset layout.

    name: the ``data.format`` value. splits: the splits it has, of train / val / test;
    ``val`` only where the dataset has an official validation split. read_split: the
    strict reader ``(root, split) -> (class names, samples)``. index: the index function
    the checker uses. layout: a one-line description of the expected folder.
    """

    name: str
    splits: tuple[SplitName, ...]
    read_split: SplitReader
    index: IndexFunction
    layout: str

    @property
    def has_official_validation(self) -> bool:
        return "val" in self.splits


def _wsolbench(name: str) -> DatasetFormat:
    dataset = wsolbench.DATASET_NAMES[name]
    return DatasetFormat(
        name,
        wsolbench.SPLITS,
        wsolbench.split_reader(name),
        wsolbench.INDEX_FUNCTIONS[name],
        f"a wsolevaluation checkout: metadata/{dataset}/{{train,val,test}}/ and dataset/{dataset}/",
    )


FORMATS: dict[str, DatasetFormat] = {
    "cub": DatasetFormat(
        "cub",
        ("train", "test"),
        cub.read_cub_split,
        cub.index_cub,
        "CUB_200_2011/: images.txt, classes.txt, image_class_labels.txt, "
        "train_test_split.txt, bounding_boxes.txt, images/ (+ segmentations/)",
    ),
    "cars": DatasetFormat(
        "cars",
        cars.SPLITS,
        cars.read_cars_split,
        cars.index_cars,
        "devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, "
        "cars_train/, cars_test/",
    ),
    "flowers": DatasetFormat(
        "flowers",
        flowers.SPLITS,
        flowers.read_flowers_split,
        flowers.index_flowers,
        "jpg/, imagelabels.mat, setid.mat (+ segmim/)",
    ),
    "tinyimagenet": DatasetFormat(
        "tinyimagenet",
        tinyimagenet.SPLITS,
        tinyimagenet.read_tinyimagenet_split,
        tinyimagenet.index_tinyimagenet,
        "tiny-imagenet-200/: wnids.txt, words.txt, train/<wnid>/, val/val_annotations.txt",
    ),
    **{name: _wsolbench(name) for name in wsolbench.DATASET_NAMES},
}
