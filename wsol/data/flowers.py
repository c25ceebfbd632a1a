"""Reader of Oxford Flowers 102 (Nilsback & Zisserman, ICVGIP 2008) in its official layout.

Layout under ``root`` (``102flowers.tgz``, ``102segmentations.tgz``, ``imagelabels.mat``
and ``setid.mat`` of the VGG release)::

    jpg/image_00001.jpg ... jpg/image_08189.jpg
    imagelabels.mat          labels: 1 x 8189, the class (1..102) of image k at entry k
    setid.mat                trnid, valid, tstid: the 1-based image numbers k of each split
    segmim/segmim_00001.jpg  the segmentation of image k: the image with its background
                             painted blue (optional folder)

Splits: ``train`` is trnid (1020 images), ``val`` is valid (1020, the official validation
split, used as such), ``test`` is tstid (6149). Labels: classes 1..102 become 0..101; the
release names no class, so class k is named ``class_<k>`` (``class_001``).

Masks: the foreground is every pixel that is not the background blue. The release paints
the background pure blue (0, 0, 255); JPEG stores it as about (0, 0, 254) and blurs it
near the flower's outline, so a pixel is background when every channel is within
:data:`wsol.data.dataset.BLUE_TOLERANCE` of pure blue (mask encoding ``not_blue``).
Boxes: the release has none; :class:`wsol.data.WsolDataset` derives each image's box from
its mask (the bounding box of the foreground) when it loads the image. Image ids are paths
relative to ``root`` (``jpg/image_00001.jpg``). Problems name the file and the entry as
MATLAB numbers it (``setid.mat:tstid(12)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsol.data.dataset import Sample
from wsol.data.index import DatasetIndex, IndexedSample, SplitName, load_mat, read_indexed_split

FORMAT = "flowers"
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
LABELS_FILE = "imagelabels.mat"
SETID_FILE = "setid.mat"
SPLIT_VARIABLES: dict[str, str] = {"train": "trnid", "val": "valid", "test": "tstid"}
IMAGES_DIR = "jpg"
SEGMENTATIONS_DIR = "segmim"


def image_name(number: int) -> str:
    return f"image_{number:05d}.jpg"


def segmentation_name(number: int) -> str:
    return f"segmim_{number:05d}.jpg"


def _integers(values: np.ndarray) -> list[int] | None:
    array = np.atleast_1d(np.asarray(values))
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        return None
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
        return None
    return [int(value) for value in array]


def _read_labels(index: DatasetIndex, root: Path) -> list[int] | None:
    path = root / LABELS_FILE
    contents = load_mat(
        index, path, ["labels"], "a variable 'labels': 1 x N class ids 1..102, one per image"
    )
    if contents is None:
        return None
    labels = _integers(contents["labels"])
    if not labels:
        index.problem(path, "labels must be a non-empty vector of integer class ids")
        return None
    bad = [(k, label) for k, label in enumerate(labels, start=1) if label < 1]
    for k, label in bad[:20]:
        index.problem(f"{path}:labels({k})", f"class id {label} is not >= 1")
    if bad:
        return None
    num_classes = max(labels)
    index.class_names = [f"class_{k:03d}" for k in range(1, num_classes + 1)]
    return labels


def _read_split_ids(
    index: DatasetIndex, root: Path, splits: Sequence[SplitName]
) -> dict[str, list[int]] | None:
    path = root / SETID_FILE
    variables = [SPLIT_VARIABLES[split] for split in SPLITS if split in splits]
    contents = load_mat(
        index, path, variables, "variables trnid, valid, tstid: vectors of 1-based image numbers"
    )
    if contents is None:
        return None
    ids: dict[str, list[int]] = {}
    for split in SPLITS:
        if split not in splits:
            continue
        variable = SPLIT_VARIABLES[split]
        numbers = _integers(contents[variable])
        if numbers is None:
            index.problem(path, f"{variable} must be a vector of integer image numbers")
            continue
        ids[split] = numbers
    return ids


def index_flowers(root: Path, splits: Sequence[SplitName] = SPLITS) -> DatasetIndex:
    """The annotations of the requested splits of an Oxford Flowers 102 folder (see the
    module docstring). Image numbers missing from imagelabels.mat, repeated within or
    across the requested splits are problems."""
    root = Path(root)
    index = DatasetIndex(FORMAT, root)
    if not root.is_dir():
        index.problem(root, "does not exist or is not a folder; expected an Oxford Flowers folder")
        return index
    labels = _read_labels(index, root)
    split_ids = _read_split_ids(index, root, splits)
    if labels is None or split_ids is None:
        return index
    segmentations = root / SEGMENTATIONS_DIR
    has_segmentations = segmentations.is_dir()
    if not has_segmentations:
        index.notes.append(
            f"no {SEGMENTATIONS_DIR}/ folder (102segmentations.tgz): no masks, hence no boxes"
        )
    setid = root / SETID_FILE
    first_seen: dict[int, str] = {}
    for split, numbers in split_ids.items():
        variable = SPLIT_VARIABLES[split]
        entries: list[IndexedSample] = []
        for position, number in enumerate(numbers, start=1):
            where = f"{setid}:{variable}({position})"
            if not 1 <= number <= len(labels):
                index.problem(
                    where, f"image number {number} is not in 1..{len(labels)} of {LABELS_FILE}"
                )
                continue
            if number in first_seen:
                index.problem(where, f"image number {number} is already {first_seen[number]}")
                continue
            first_seen[number] = f"{variable}({position})"
            mask_path = None
            if has_segmentations:
                candidate = segmentations / segmentation_name(number)
                mask_path = candidate if candidate.is_file() else None
            sample = Sample(
                image_id=f"{IMAGES_DIR}/{image_name(number)}",
                image_path=root / IMAGES_DIR / image_name(number),
                label=labels[number - 1] - 1,
                boxes=(),
                mask_path=mask_path,
                mask_encoding="not_blue",
            )
            entries.append(IndexedSample(split, sample, where))
        index.splits[split] = entries
    return index


def read_flowers_split(root: Path, split: SplitName) -> tuple[list[str], list[Sample]]:
    """(class names, samples of ``split``) of an Oxford Flowers 102 folder; DatasetError on
    any problem, naming the file and entry."""
    return read_indexed_split(index_flowers, root, split)
