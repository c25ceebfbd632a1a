"""Reader of Stanford Cars (Krause et al., 3dRR 2013) in its official devkit layout.

Layout under ``root`` (``car_devkit.tgz``, ``cars_train.tgz``, ``cars_test.tgz`` and the
separately released ``cars_test_annos_withlabels.mat``; torchvision's StanfordCars expects
the same)::

    devkit/cars_meta.mat            class_names: 1 x 196 cell of class names (class id k is
                                    entry k)
    devkit/cars_train_annos.mat     annotations: 1 x 8144 struct array with the fields
                                    bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname
    cars_test_annos_withlabels.mat  annotations: 1 x 8041 struct array, the same fields
                                    (the devkit's cars_test_annos.mat lacks ``class``)
    cars_train/<fname>
    cars_test/<fname>

Each .mat file is looked for in ``root/`` first, then in ``root/devkit/``.

Box convention: the devkit README defines bbox_x1 / bbox_x2 as the "Min / Max x-value of
the bounding box, in pixels" (likewise y), in MATLAB's 1-based pixel indices, both ends
inside the box. They become our inclusive 0-based box (x1 - 1, y1 - 1, x2 - 1, y2 - 1).
Labels: class ids 1..196 become 0..195.

Splits: ``train`` is cars_train_annos.mat, ``test`` is cars_test_annos_withlabels.mat.
There is no official validation split: it is carved from train. Image ids are paths
relative to ``root`` (``cars_train/00001.jpg``). No masks. Problems name the file and
the struct entry as MATLAB numbers it: ``cars_train_annos.mat:annotations(17)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsol.data.dataset import Sample
from wsol.data.index import (
    DatasetIndex,
    IndexedSample,
    SplitName,
    is_safe_relative,
    load_mat,
    read_indexed_split,
)

FORMAT = "cars"
SPLITS: tuple[SplitName, ...] = ("train", "test")
META_FILE = "cars_meta.mat"
DEVKIT_DIR = "devkit"
ANNOTATION_FILES = {"train": "cars_train_annos.mat", "test": "cars_test_annos_withlabels.mat"}
IMAGE_DIRS = {"train": "cars_train", "test": "cars_test"}
BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
FIELDS = (*BOX_FIELDS, "class", "fname")
_ANNOTATIONS_FORM = (
    "a variable 'annotations': a struct array with fields " + ", ".join(FIELDS) + " (boxes in "
    "1-based pixels, class ids 1..K)"
)


def find_mat_file(root: Path, name: str) -> Path:
    """``root/name`` or ``root/devkit/name``, whichever exists (``root/name`` if neither)."""
    for candidate in (root / name, root / DEVKIT_DIR / name):
        if candidate.is_file():
            return candidate
    return root / name


def _scalar(value: Any) -> float | None:
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iuf":
        return None
    number = float(array.reshape(()))
    return number if np.isfinite(number) and number.is_integer() else None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    array = np.asarray(value)
    if array.size == 1 and array.dtype.kind == "U":
        return str(array.reshape(())).strip()
    return None


def _read_class_names(index: DatasetIndex, root: Path) -> None:
    path = find_mat_file(root, META_FILE)
    contents = load_mat(
        index, path, ["class_names"], "a variable 'class_names': a cell array of class names"
    )
    if contents is None:
        return
    names = [_text(name) for name in np.atleast_1d(contents["class_names"])]
    if not names or any(not name for name in names):
        index.problem(path, "class_names must be a non-empty cell array of non-empty names")
        return
    index.class_names = [str(name) for name in names]


def _read_annotations(index: DatasetIndex, root: Path, split: SplitName) -> None:
    path = find_mat_file(root, ANNOTATION_FILES[split])
    what = _ANNOTATIONS_FORM
    if split == "test":
        what += "; the devkit's cars_test_annos.mat has no class: use the released " + (
            "cars_test_annos_withlabels.mat"
        )
    contents = load_mat(index, path, ["annotations"], what)
    if contents is None:
        return
    annotations = np.atleast_1d(contents["annotations"])
    names = annotations.dtype.names or ()
    absent = [name for name in FIELDS if name not in names]
    if absent:
        index.problem(path, f"annotations lacks the field(s) {', '.join(absent)}; expected {what}")
        return
    num_classes = len(index.class_names)
    entries: list[IndexedSample] = []
    seen: dict[str, str] = {}
    for number, entry in enumerate(annotations, start=1):
        where = f"{path}:annotations({number})"
        coordinates = [_scalar(entry[name]) for name in BOX_FIELDS]
        class_id = _scalar(entry["class"])
        fname = _text(entry["fname"])
        if any(value is None for value in coordinates):
            index.problem(where, f"{', '.join(BOX_FIELDS)} must be integer pixel coordinates")
            continue
        x1, y1, x2, y2 = (int(value) for value in coordinates)  # type: ignore[arg-type]
        if x2 < x1 or y2 < y1:
            box = (x1, y1, x2, y2)
            index.problem(where, f"box {box} has bbox_x2 < bbox_x1 or bbox_y2 < bbox_y1")
            continue
        if class_id is None or class_id < 1 or (num_classes and class_id > num_classes):
            shown = entry["class"] if class_id is None else int(class_id)
            index.problem(
                where, f"class {shown!r} is not a class id 1..{num_classes} of {META_FILE}"
            )
            continue
        if fname is None or not is_safe_relative(fname):
            folder = IMAGE_DIRS[split]
            index.problem(where, f"fname {entry['fname']!r} must be a file name in {folder}/")
            continue
        if fname in seen:
            index.problem(where, f"fname {fname!r} is already {seen[fname]}")
            continue
        seen[fname] = f"annotations({number})"
        image_id = f"{IMAGE_DIRS[split]}/{fname}"
        sample = Sample(
            image_id=image_id,
            image_path=root / IMAGE_DIRS[split] / fname,
            label=int(class_id) - 1,
            boxes=((x1 - 1, y1 - 1, x2 - 1, y2 - 1),),
        )
        entries.append(IndexedSample(split, sample, where, (where,)))
    if not entries and not index.problems:
        index.problem(path, f"annotations is empty; expected {what}")
    index.splits[split] = entries


def index_cars(root: Path, splits: Sequence[SplitName] = SPLITS) -> DatasetIndex:
    """The annotations of the requested splits of a Stanford Cars folder (see the module
    docstring); splits it does not have (``val``) are left out."""
    root = Path(root)
    index = DatasetIndex(FORMAT, root)
    if not root.is_dir():
        index.problem(root, "does not exist or is not a folder; expected a Stanford Cars folder")
        return index
    _read_class_names(index, root)
    for split in SPLITS:
        if split in splits:
            _read_annotations(index, root, split)
    return index


def read_cars_split(root: Path, split: SplitName) -> tuple[list[str], list[Sample]]:
    """(class names, samples of ``split``) of a Stanford Cars folder; DatasetError on any
    problem, naming the file and annotation entry."""
    return read_indexed_split(index_cars, root, split)
