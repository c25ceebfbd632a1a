"""Reader of the CUB-200-2011 directory format.

Layout under ``root`` (ids are integers; all text files are whitespace separated):

    images.txt              <image id> <relative path>           e.g. 1 001.Albatross/a_1.jpg
    classes.txt             <class id> <class name>              class ids are 1..K
    image_class_labels.txt  <image id> <class id>
    train_test_split.txt    <image id> <1 = train | 0 = test>
    bounding_boxes.txt      <image id> <x> <y> <width> <height>  floats, pixels; one or more
                                                                 lines per image
    images/<relative path>
    segmentations/<relative path with .png>   optional grey-level masks (see read_mask)

Masks: the separate segmentation release (``segmentations.tgz``) holds one grey-level PNG
per image, ``segmentations/<class folder>/<name>.png``, whose grey level is the share of
annotators who marked the pixel: foreground is > 0.5 of the maximum (255), as in the
paper's PxAP on CUB. Its folder is looked for inside ``root`` and, as the two official
archives extract side by side, next to it (``root/../segmentations``).

Box conversion: a CUB box covers the continuous extent [x, x + width) x [y, y + height).
It becomes the inclusive box x0 = round(x), y0 = round(y), x1 = round(x + width) - 1,
y1 = round(y + height) - 1 (round half up), i.e. the pixels whose extent the box covers;
a box of width w spans exactly w pixels. wsolevaluation's CUB metadata instead stores
x + width as the inclusive x1, one pixel wider. Boxes are not clipped to the image here
(that would need every image's size up front); the transform clips them at load time.

Only the text files are parsed for every image; image (and mask) files are looked at
only for the split that was asked for, so a dataset whose test images are absent still
serves its training split.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from wsol.data.dataset import Box, DatasetError, Sample
from wsol.data.index import DatasetIndex, IndexedSample

Split = Literal["train", "test"]

IMAGES_FILE = "images.txt"
CLASSES_FILE = "classes.txt"
LABELS_FILE = "image_class_labels.txt"
SPLIT_FILE = "train_test_split.txt"
BOXES_FILE = "bounding_boxes.txt"
REQUIRED_FILES = (IMAGES_FILE, CLASSES_FILE, LABELS_FILE, SPLIT_FILE, BOXES_FILE)
IMAGES_DIR = "images"
SEGMENTATIONS_DIR = "segmentations"

_FORMS = {
    IMAGES_FILE: "'<image id> <relative image path>'",
    CLASSES_FILE: "'<class id> <class name>'",
    LABELS_FILE: "'<image id> <class id>'",
    SPLIT_FILE: "'<image id> <1 for train | 0 for test>'",
    BOXES_FILE: "'<image id> <x> <y> <width> <height>' (numbers, width and height > 0)",
}
_MAX_LISTED = 5


@dataclass(frozen=True)
class _CubText:
    """Everything in the text files; no image file has been touched."""

    class_names: list[str]
    image_paths: dict[int, str]  # in images.txt order
    labels: dict[int, int]  # 0-based
    is_train: dict[int, bool]
    boxes: dict[int, list[Box]]


def _lines(path: Path) -> Iterator[tuple[int, list[str], str]]:
    """(1-based line number, whitespace fields, stripped line) of each non-blank line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped.split(), stripped


def _malformed(path: Path, number: int, line: str, detail: str = "") -> DatasetError:
    extra = f" ({detail})" if detail else ""
    return DatasetError(
        f"{path}:{number}: malformed line {line!r}{extra}; expected {_FORMS[path.name]}"
    )


def _parse_int(path: Path, number: int, line: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _malformed(path, number, line, f"{text!r} is not an integer") from None


def _listed(items: list[int]) -> str:
    shown = ", ".join(str(item) for item in items[:_MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _MAX_LISTED else "")


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def cub_box_to_inclusive(x: float, y: float, width: float, height: float) -> Box:
    """CUB (x, y, width, height) -> inclusive (x0, y0, x1, y1); see the module docstring."""
    x0, y0 = _round_half_up(x), _round_half_up(y)
    x1 = max(_round_half_up(x + width) - 1, x0)
    y1 = max(_round_half_up(y + height) - 1, y0)
    return x0, y0, x1, y1


def _read_images(path: Path) -> dict[int, str]:
    image_paths: dict[int, str] = {}
    seen_paths: dict[str, int] = {}
    for number, _, line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise _malformed(path, number, line)
        image_id = _parse_int(path, number, line, parts[0])
        relative = parts[1].strip()
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts:
            raise _malformed(path, number, line, "the path must be relative to images/")
        if image_id in image_paths:
            raise DatasetError(f"{path}:{number}: image id {image_id} appears twice")
        if relative in seen_paths:
            raise DatasetError(
                f"{path}:{number}: path {relative!r} is already image id {seen_paths[relative]}"
            )
        image_paths[image_id] = relative
        seen_paths[relative] = image_id
    if not image_paths:
        raise DatasetError(f"{path} lists no images; expected lines {_FORMS[IMAGES_FILE]}")
    return image_paths


def _read_classes(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for number, _, line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise _malformed(path, number, line)
        class_id = _parse_int(path, number, line, parts[0])
        if class_id in names:
            raise DatasetError(f"{path}:{number}: class id {class_id} appears twice")
        names[class_id] = parts[1].strip()
    expected = set(range(1, len(names) + 1))
    if set(names) != expected:
        raise DatasetError(
            f"{path}: class ids must be 1..{len(names)} (one line each), got "
            f"{_listed(sorted(names))}"
        )
    if not names:
        raise DatasetError(f"{path} lists no classes; expected lines {_FORMS[CLASSES_FILE]}")
    return [names[class_id] for class_id in sorted(names)]


def _check_image_id(path: Path, number: int, image_id: int, image_paths: dict[int, str]) -> None:
    if image_id not in image_paths:
        raise DatasetError(f"{path}:{number}: image id {image_id} is not listed in {IMAGES_FILE}")


def _read_labels(path: Path, image_paths: dict[int, str], num_classes: int) -> dict[int, int]:
    labels: dict[int, int] = {}
    for number, fields, line in _lines(path):
        if len(fields) != 2:
            raise _malformed(path, number, line)
        image_id = _parse_int(path, number, line, fields[0])
        class_id = _parse_int(path, number, line, fields[1])
        _check_image_id(path, number, image_id, image_paths)
        if not 1 <= class_id <= num_classes:
            raise DatasetError(
                f"{path}:{number}: unknown class id {class_id}; {CLASSES_FILE} defines "
                f"class ids 1..{num_classes}"
            )
        if image_id in labels:
            raise DatasetError(f"{path}:{number}: image id {image_id} has a second label")
        labels[image_id] = class_id - 1
    return labels


def _read_split(path: Path, image_paths: dict[int, str]) -> dict[int, bool]:
    is_train: dict[int, bool] = {}
    for number, fields, line in _lines(path):
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise _malformed(path, number, line)
        image_id = _parse_int(path, number, line, fields[0])
        _check_image_id(path, number, image_id, image_paths)
        if image_id in is_train:
            raise DatasetError(f"{path}:{number}: image id {image_id} appears twice")
        is_train[image_id] = fields[1] == "1"
    return is_train


def _read_boxes(path: Path, image_paths: dict[int, str]) -> dict[int, list[Box]]:
    boxes: dict[int, list[Box]] = {}
    for number, fields, line in _lines(path):
        if len(fields) != 5:
            raise _malformed(path, number, line)
        image_id = _parse_int(path, number, line, fields[0])
        try:
            x, y, width, height = (float(field) for field in fields[1:])
        except ValueError:
            raise _malformed(path, number, line, "coordinates must be numbers") from None
        if not all(math.isfinite(v) for v in (x, y, width, height)) or width <= 0 or height <= 0:
            raise _malformed(path, number, line, "width and height must be finite and > 0")
        _check_image_id(path, number, image_id, image_paths)
        boxes.setdefault(image_id, []).append(cub_box_to_inclusive(x, y, width, height))
    return boxes


def _read_text_files(root: Path) -> _CubText:
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} does not exist or is not a folder; expected a "
            f"CUB-200-2011 folder with {', '.join(REQUIRED_FILES)} and {IMAGES_DIR}/"
        )
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise DatasetError(
            f"{root} lacks {', '.join(missing)}; a CUB-200-2011 folder needs the files "
            f"{', '.join(REQUIRED_FILES)} and the folder {IMAGES_DIR}/"
        )
    image_paths = _read_images(root / IMAGES_FILE)
    class_names = _read_classes(root / CLASSES_FILE)
    labels = _read_labels(root / LABELS_FILE, image_paths, len(class_names))
    is_train = _read_split(root / SPLIT_FILE, image_paths)
    boxes = _read_boxes(root / BOXES_FILE, image_paths)
    for name, table in ((LABELS_FILE, labels), (SPLIT_FILE, is_train), (BOXES_FILE, boxes)):
        absent = [image_id for image_id in image_paths if image_id not in table]
        if absent:
            raise DatasetError(
                f"{root / name} has no line for image id(s) {_listed(absent)} of {IMAGES_FILE}; "
                f"expected {_FORMS[name]} for every image"
            )
    return _CubText(class_names, image_paths, labels, is_train, boxes)


def segmentations_dir(root: Path) -> Path | None:
    """The segmentation release's folder: ``root/segmentations`` or, as the official
    archives extract side by side, ``root/../segmentations``; None when neither exists."""
    for candidate in (root / SEGMENTATIONS_DIR, root.parent / SEGMENTATIONS_DIR):
        if candidate.is_dir():
            return candidate
    return None


def read_cub_split(root: Path, split: Split) -> tuple[list[str], list[Sample]]:
    """(class names, the samples of ``split``) of the CUB-format dataset at ``root``.

    All text files are parsed and cross-checked; only the requested split's image files
    are checked to exist (and its masks looked for). Samples are in images.txt order.
    ``mask_path`` is set when ``segmentations/<relative path>.png`` exists (the folder
    inside ``root`` or next to it, see :func:`segmentations_dir`).
    Raises DatasetError naming the file (and line) for any problem.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    text = _read_text_files(root)
    want_train = split == "train"
    segmentations = segmentations_dir(root)
    samples: list[Sample] = []
    missing: list[str] = []
    for image_id, relative in text.image_paths.items():
        if text.is_train[image_id] != want_train:
            continue
        image_path = root / IMAGES_DIR / relative
        if not image_path.is_file():
            missing.append(str(image_path))
            continue
        mask_path = None
        if segmentations is not None:
            candidate = (segmentations / relative).with_suffix(".png")
            mask_path = candidate if candidate.is_file() else None
        samples.append(
            Sample(
                image_id=relative,
                image_path=image_path,
                label=text.labels[image_id],
                boxes=tuple(text.boxes[image_id]),
                mask_path=mask_path,
            )
        )
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED])
        more = f", ... ({len(missing)} in all)" if len(missing) > _MAX_LISTED else ""
        raise DatasetError(
            f"{len(missing)} image file(s) of the {split} split listed in "
            f"{root / IMAGES_FILE} are missing: {shown}{more}"
        )
    return text.class_names, samples


def index_cub(root: Path, splits: Sequence[str] = ("train", "test")) -> DatasetIndex:
    """The annotations of a CUB-format folder, for ``wsol data check``.

    The text files are parsed as strictly as by :func:`read_cub_split`: the first problem
    in them becomes the index's one problem (naming the file and line). The samples of the
    requested splits (``train``, ``test``; CUB has no ``val``) carry the images.txt line
    that lists them and the bounding_boxes.txt line of each box. No image file is opened.
    """
    root = Path(root)
    index = DatasetIndex("cub", root)
    try:
        text = _read_text_files(root)
    except DatasetError as error:
        index.problem("", str(error))
        return index
    index.class_names = text.class_names
    image_lines = {int(fields[0]): number for number, fields, _ in _lines(root / IMAGES_FILE)}
    box_lines: dict[int, list[int]] = defaultdict(list)
    for number, fields, _ in _lines(root / BOXES_FILE):
        box_lines[int(fields[0])].append(number)
    segmentations = segmentations_dir(root)
    if segmentations is None:
        index.notes.append(
            f"no {SEGMENTATIONS_DIR}/ folder (segmentations.tgz) in or next to {root}: no masks"
        )
    for split in ("train", "test"):
        if split not in splits:
            continue
        entries: list[IndexedSample] = []
        for image_id, relative in text.image_paths.items():
            if text.is_train[image_id] != (split == "train"):
                continue
            mask_path = None
            if segmentations is not None:
                candidate = (segmentations / relative).with_suffix(".png")
                mask_path = candidate if candidate.is_file() else None
            sample = Sample(
                image_id=relative,
                image_path=root / IMAGES_DIR / relative,
                label=text.labels[image_id],
                boxes=tuple(text.boxes[image_id]),
                mask_path=mask_path,
            )
            box_sources = tuple(f"{root / BOXES_FILE}:{n}" for n in box_lines[image_id])
            listed_at = f"{root / IMAGES_FILE}:{image_lines[image_id]}"
            entries.append(IndexedSample(split, sample, listed_at, box_sources))
        index.splits[split] = entries
    return index
