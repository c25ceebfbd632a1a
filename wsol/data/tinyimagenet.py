"""Reader of Tiny-ImageNet-200 (Stanford CS231n) in its official layout.

Layout under ``root`` (``tiny-imagenet-200.zip``; text files are tab separated)::

    wnids.txt                       the 200 WordNet ids, one a line: class k is line k + 1
    words.txt                       <wnid> <names>, for all of WordNet: the class names
    train/<wnid>/<wnid>_boxes.txt   <file name> <x0> <y0> <x1> <y1>, one line per image
    train/<wnid>/images/<file name>
    val/val_annotations.txt         <file name> <wnid> <x0> <y0> <x1> <y1>
    val/images/<file name>
    test/images/...                 unlabelled: never read

Box convention: x0 y0 x1 y1 are 0-based pixel indices of the 64 x 64 image, both ends
inside the box (they run from 0 to 63): our inclusive box, taken as it is.

Splits: ``train`` is train/ (500 images per class); ``test`` is the labelled val/ split
(50 per class), which serves as the test split, as in the paper; there is no official
validation split: it is carved from train. Labels follow wnids.txt. Image ids are paths
relative to ``root`` (``train/n01443537/images/n01443537_0.JPEG``, ``val/images/val_0.JPEG``).
No masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wsol.data.dataset import Sample
from wsol.data.index import (
    DatasetIndex,
    IndexedSample,
    SplitName,
    is_safe_relative,
    parse_int,
    read_indexed_split,
    read_text_file,
)

FORMAT = "tinyimagenet"
SPLITS: tuple[SplitName, ...] = ("train", "test")
WNIDS_FILE = "wnids.txt"
WORDS_FILE = "words.txt"
TRAIN_DIR = "train"
VAL_DIR = "val"
VAL_ANNOTATIONS = "val_annotations.txt"
IMAGES_DIR = "images"
_BOXES_FORM = "'<file name> <x0> <y0> <x1> <y1>' (tab separated, 0-based inclusive pixels)"
_VAL_FORM = "'<file name> <wnid> <x0> <y0> <x1> <y1>' (tab separated, 0-based inclusive pixels)"


def boxes_file(root: Path, wnid: str) -> Path:
    return root / TRAIN_DIR / wnid / f"{wnid}_boxes.txt"


def _read_classes(index: DatasetIndex, root: Path) -> list[str] | None:
    path = root / WNIDS_FILE
    lines = read_text_file(index, path, "one WordNet id (e.g. n01443537) a line")
    if lines is None:
        return None
    wnids: list[str] = []
    seen: set[str] = set()
    for number, line in lines:
        if len(line.split()) != 1:
            index.problem(f"{path}:{number}", f"malformed line {line!r}; expected one WordNet id")
        elif line in seen:
            index.problem(f"{path}:{number}", f"WordNet id {line} appears twice")
        else:
            wnids.append(line)
            seen.add(line)
    if not wnids and lines:
        return None
    if not wnids:
        index.problem(path, "lists no class; expected one WordNet id a line")
        return None
    words_path = root / WORDS_FILE
    words_lines = read_text_file(index, words_path, "'<wnid> <names>' lines (tab separated)")
    words: dict[str, str] = {}
    for _, line in words_lines or []:
        parts = line.split("\t", 1) if "\t" in line else line.split(maxsplit=1)
        if len(parts) == 2 and parts[0] in seen:
            words.setdefault(parts[0], parts[1].strip())
    if words_lines is not None:
        for wnid in wnids:
            if wnid not in words:
                index.problem(words_path, f"has no line for {wnid} of {WNIDS_FILE}")
    index.class_names = [words.get(wnid, wnid) for wnid in wnids]
    return wnids


def _box(fields: list[str]) -> tuple[int, int, int, int] | None:
    values = [parse_int(field) for field in fields]
    if any(value is None for value in values):
        return None
    x0, y0, x1, y1 = values  # type: ignore[misc]
    if x1 < x0 or y1 < y0:  # type: ignore[operator]
        return None
    return x0, y0, x1, y1  # type: ignore[return-value]


def _read_train(index: DatasetIndex, root: Path, wnids: list[str]) -> None:
    entries: list[IndexedSample] = []
    for label, wnid in enumerate(wnids):
        path = boxes_file(root, wnid)
        lines = read_text_file(index, path, f"{_BOXES_FORM} lines, one per training image")
        seen: set[str] = set()
        for number, line in lines or []:
            where = f"{path}:{number}"
            fields = line.split()
            box = _box(fields[1:]) if len(fields) == 5 else None
            if box is None or not is_safe_relative(fields[0]):
                index.problem(where, f"malformed line {line!r}; expected {_BOXES_FORM}, x0 <= x1")
                continue
            if fields[0] in seen:
                index.problem(where, f"image {fields[0]} is listed twice")
                continue
            seen.add(fields[0])
            relative = f"{TRAIN_DIR}/{wnid}/{IMAGES_DIR}/{fields[0]}"
            sample = Sample(relative, root / relative, label, (box,))
            entries.append(IndexedSample("train", sample, where, (where,)))
    index.splits["train"] = entries


def _read_val(index: DatasetIndex, root: Path, wnids: list[str]) -> None:
    path = root / VAL_DIR / VAL_ANNOTATIONS
    lines = read_text_file(index, path, f"{_VAL_FORM} lines, one per val image")
    labels = {wnid: label for label, wnid in enumerate(wnids)}
    entries: list[IndexedSample] = []
    seen: set[str] = set()
    for number, line in lines or []:
        where = f"{path}:{number}"
        fields = line.split()
        box = _box(fields[2:]) if len(fields) == 6 else None
        if box is None or not is_safe_relative(fields[0]):
            index.problem(where, f"malformed line {line!r}; expected {_VAL_FORM}, x0 <= x1")
            continue
        if fields[1] not in labels:
            index.problem(where, f"WordNet id {fields[1]} is not a class of {WNIDS_FILE}")
            continue
        if fields[0] in seen:
            index.problem(where, f"image {fields[0]} is listed twice")
            continue
        seen.add(fields[0])
        relative = f"{VAL_DIR}/{IMAGES_DIR}/{fields[0]}"
        sample = Sample(relative, root / relative, labels[fields[1]], (box,))
        entries.append(IndexedSample("test", sample, where, (where,)))
    index.splits["test"] = entries


def index_tinyimagenet(root: Path, splits: Sequence[SplitName] = SPLITS) -> DatasetIndex:
    """The annotations of the requested splits of a Tiny-ImageNet-200 folder (see the
    module docstring); ``test`` is its val/ folder, ``val`` is not a split of it."""
    root = Path(root)
    index = DatasetIndex(FORMAT, root)
    if not root.is_dir():
        index.problem(root, "does not exist or is not a folder; expected tiny-imagenet-200/")
        return index
    wnids = _read_classes(index, root)
    if wnids is None:
        return index
    if "train" in splits:
        _read_train(index, root, wnids)
    if "test" in splits:
        _read_val(index, root, wnids)
    return index


def read_tinyimagenet_split(root: Path, split: SplitName) -> tuple[list[str], list[Sample]]:
    """(class names, samples of ``split``) of a Tiny-ImageNet-200 folder; DatasetError on
    any problem, naming the file and line."""
    return read_indexed_split(index_tinyimagenet, root, split)
