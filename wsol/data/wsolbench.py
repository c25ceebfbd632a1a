"""Reader of the metadata format of the WSOL evaluation benchmark (Choe et al., CVPR 2020,
github.com/clovaai/wsolevaluation): its CUB, ILSVRC (ImageNet) and OpenImages protocols.

One format per dataset: ``wsolbench_cub``, ``wsolbench_ilsvrc``, ``wsolbench_openimages``
(``<NAME>`` below is CUB, ILSVRC or OpenImages). ``root`` is a wsolevaluation checkout
whose data its ``dataset/prepare_*.sh`` scripts have prepared::

    metadata/<NAME>/<split>/image_ids.txt     <image id>, one a line: a path relative to
                                              dataset/<NAME>/
    metadata/<NAME>/<split>/class_labels.txt  <image id>,<class index 0..K-1>
    metadata/<NAME>/<split>/image_sizes.txt   <image id>,<width>,<height> (optional: none
                                              for OpenImages)
    metadata/<NAME>/<split>/localization.txt  CUB, ILSVRC: <image id>,<x0>,<y0>,<x1>,<y1>,
                                              one line per box; OpenImages: <image id>,
                                              <mask path>,<ignore mask path or nothing>, one
                                              line per instance mask, paths relative to
                                              dataset/OpenImages/
    dataset/<NAME>/<image id>

Splits: ``train`` (train-weaksup), ``val`` (train-fullsup: CUBV2, ImageNetV2, OpenImages
val), ``test``; ``val`` is the validation split (nothing is carved). localization.txt is
optional for train (OpenImages train has none) and required for val and test.

Box convention: (x0, y0, x1, y1) inclusive pixel indices (wsolevaluation's tests assert
0 <= x0 <= x1 <= width - 1): ours, taken as they are. Its CUB boxes store CUB's x + width
as x1, one pixel wider than the ``cub`` reader's (see :mod:`wsol.data.cub`).

Masks (OpenImages): as wsolevaluation reads them, a pixel is foreground when its grey
level in any instance mask is > 0.5, i.e. nonzero (mask encoding ``nonzero``); the first
mask path is ``Sample.mask_path``, the others ``extra_mask_paths``, and the ignore mask
(the ignore-box region) is ``Sample.ignore_mask_path``. The boxes are those of the
instance masks, which :class:`wsol.data.WsolDataset` derives when it loads the image.

Class names: the metadata names no class, so class k is named after the folder its
training images lie in (``001.Black_footed_Albatross``, ``n01440764``, ``0bt_c3``) when
that folder is the same for all of them and differs from every other class's; otherwise
``class_<k>``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from wsol.data.dataset import Box, Sample
from wsol.data.index import (
    DatasetIndex,
    IndexedSample,
    SplitName,
    is_safe_relative,
    parse_int,
    read_indexed_split,
    read_text_file,
)

SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
DATASET_NAMES = {
    "wsolbench_cub": "CUB",
    "wsolbench_ilsvrc": "ILSVRC",
    "wsolbench_openimages": "OpenImages",
}
MASK_DATASETS = frozenset({"OpenImages"})
METADATA_DIR = "metadata"
IMAGES_DIR = "dataset"
IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"
_BOX_FORM = "'<image id>,<x0>,<y0>,<x1>,<y1>' (inclusive pixels, x0 <= x1, y0 <= y1)"
_MASK_FORM = "'<image id>,<mask path>,<ignore mask path or nothing>'"


def _check_listed(index: DatasetIndex, where: str, image_id: str, known: dict[str, int]) -> bool:
    if image_id not in known:
        index.problem(where, f"image id {image_id!r} is not listed in {IMAGE_IDS}")
        return False
    return True


def _read_image_ids(index: DatasetIndex, folder: Path) -> dict[str, int] | None:
    """image id -> its line number in image_ids.txt (in file order)."""
    path = folder / IMAGE_IDS
    lines = read_text_file(index, path, "one image id (a relative image path) a line")
    if lines is None:
        return None
    ids: dict[str, int] = {}
    for number, line in lines:
        if not is_safe_relative(line):
            index.problem(f"{path}:{number}", f"image id {line!r} must be a relative path")
        elif line in ids:
            index.problem(f"{path}:{number}", f"image id {line!r} is already line {ids[line]}")
        else:
            ids[line] = number
    if not lines:
        index.problem(path, "lists no image")
    return ids


def _read_labels(index: DatasetIndex, folder: Path, ids: dict[str, int]) -> dict[str, int]:
    path = folder / CLASS_LABELS
    lines = read_text_file(index, path, "'<image id>,<class index>' lines")
    labels: dict[str, int] = {}
    for number, line in lines or []:
        where = f"{path}:{number}"
        parts = line.rsplit(",", 1)
        label = parse_int(parts[1]) if len(parts) == 2 else None
        if label is None or label < 0:
            index.problem(
                where, f"malformed line {line!r}; expected '<image id>,<class index >= 0>'"
            )
        elif _check_listed(index, where, parts[0], ids):
            if parts[0] in labels:
                index.problem(where, f"image id {parts[0]!r} has a second label")
            else:
                labels[parts[0]] = label
    if lines is not None:
        absent = [image_id for image_id in ids if image_id not in labels]
        for image_id in absent[:20]:
            index.problem(
                f"{folder / IMAGE_IDS}:{ids[image_id]}", f"{image_id!r} has no line in {path}"
            )
        if len(absent) > 20:
            index.problem(path, f"... and {len(absent) - 20} more image ids have no label")
    return labels


def _read_sizes(
    index: DatasetIndex, folder: Path, ids: dict[str, int]
) -> dict[str, tuple[int, int]]:
    path = folder / IMAGE_SIZES
    if not path.is_file():
        return {}
    sizes: dict[str, tuple[int, int]] = {}
    for number, line in read_text_file(index, path, "'<image id>,<width>,<height>' lines") or []:
        where = f"{path}:{number}"
        parts = line.rsplit(",", 2)
        values = [parse_int(part) for part in parts[1:]] if len(parts) == 3 else []
        if len(values) != 2 or any(value is None or value < 1 for value in values):
            index.problem(where, f"malformed line {line!r}; expected '<image id>,<width>,<height>'")
        elif _check_listed(index, where, parts[0], ids):
            sizes[parts[0]] = (values[0], values[1])  # type: ignore[assignment]
    return sizes


def _read_boxes(
    index: DatasetIndex, path: Path, ids: dict[str, int]
) -> dict[str, list[tuple[Box, str]]]:
    boxes: dict[str, list[tuple[Box, str]]] = defaultdict(list)
    for number, line in read_text_file(index, path, f"{_BOX_FORM} lines") or []:
        where = f"{path}:{number}"
        parts = line.rsplit(",", 4)
        values = [parse_int(part) for part in parts[1:]] if len(parts) == 5 else []
        if len(values) != 4 or any(value is None or value < 0 for value in values):
            index.problem(where, f"malformed line {line!r}; expected {_BOX_FORM}")
            continue
        x0, y0, x1, y1 = values  # type: ignore[misc]
        if x1 < x0 or y1 < y0:  # type: ignore[operator]
            index.problem(where, f"box {tuple(values)} has x1 < x0 or y1 < y0")
        elif _check_listed(index, where, parts[0], ids):
            boxes[parts[0]].append(((x0, y0, x1, y1), where))  # type: ignore[arg-type]
    return boxes


def _read_masks(
    index: DatasetIndex, path: Path, ids: dict[str, int]
) -> dict[str, tuple[list[str], str]]:
    """image id -> (instance mask paths, ignore mask path or '')."""
    masks: dict[str, tuple[list[str], str]] = {}
    for number, line in read_text_file(index, path, f"{_MASK_FORM} lines") or []:
        where = f"{path}:{number}"
        parts = line.rsplit(",", 2)
        if len(parts) != 3 or not is_safe_relative(parts[1]):
            index.problem(where, f"malformed line {line!r}; expected {_MASK_FORM}")
            continue
        image_id, mask, ignore = parts[0], parts[1], parts[2].strip()
        if ignore and not is_safe_relative(ignore):
            index.problem(where, f"ignore mask path {ignore!r} must be a relative path")
            continue
        if not _check_listed(index, where, image_id, ids):
            continue
        if image_id not in masks:
            masks[image_id] = ([mask], ignore)
            continue
        paths, first_ignore = masks[image_id]
        if ignore and ignore != first_ignore:
            index.problem(where, f"a second ignore mask {ignore!r} for {image_id!r}")
            continue
        paths.append(mask)
    return masks


def _class_names(entries: list[IndexedSample]) -> list[str]:
    num_classes = 1 + max((entry.sample.label for entry in entries), default=-1)
    folders: dict[int, set[str]] = defaultdict(set)
    for entry in entries:
        folders[entry.sample.label].add(PurePosixPath(entry.sample.image_id).parent.name)
    width = len(str(max(num_classes - 1, 0)))
    names = [f"class_{k:0{width}d}" for k in range(num_classes)]
    unique = {k: next(iter(found)) for k, found in folders.items() if len(found) == 1}
    chosen = [unique.get(k, "") for k in range(num_classes)]
    if all(chosen) and len(set(chosen)) == num_classes:
        return chosen
    return names


def _read_split(index: DatasetIndex, root: Path, name: str, split: SplitName) -> None:
    folder = root / METADATA_DIR / name / split
    if not folder.is_dir():
        index.problem(folder, f"missing; expected the {split} split's metadata: {IMAGE_IDS}, ...")
        return
    ids = _read_image_ids(index, folder)
    if ids is None:
        return
    labels = _read_labels(index, folder, ids)
    sizes = _read_sizes(index, folder, ids)
    localization = folder / LOCALIZATION
    with_masks = name in MASK_DATASETS
    boxes: dict[str, list[tuple[Box, str]]] = {}
    masks: dict[str, tuple[list[str], str]] = {}
    if localization.is_file() or split != "train":
        if with_masks:
            masks = _read_masks(index, localization, ids)
        else:
            boxes = _read_boxes(index, localization, ids)
    images = root / IMAGES_DIR / name
    entries: list[IndexedSample] = []
    for image_id, number in ids.items():
        if image_id not in labels:
            continue
        listed_at = f"{folder / IMAGE_IDS}:{number}"
        image_boxes = boxes.get(image_id, [])
        mask_paths, ignore = masks.get(image_id, ([], ""))
        if split != "train" and localization.is_file() and not image_boxes and not mask_paths:
            index.problem(listed_at, f"{image_id!r} has no line in {localization}")
            continue
        sample = Sample(
            image_id=image_id,
            image_path=images / image_id,
            label=labels[image_id],
            boxes=tuple(box for box, _ in image_boxes),
            mask_path=images / mask_paths[0] if mask_paths else None,
            mask_encoding="nonzero",
            extra_mask_paths=tuple(images / path for path in mask_paths[1:]),
            ignore_mask_path=images / ignore if ignore else None,
        )
        sources = tuple(where for _, where in image_boxes)
        entries.append(IndexedSample(split, sample, listed_at, sources, sizes.get(image_id)))
    index.splits[split] = entries


def index_wsolbench(
    root: Path, splits: Sequence[SplitName] = SPLITS, format_name: str = "wsolbench_cub"
) -> DatasetIndex:
    """The metadata of the requested splits of one wsolevaluation dataset (see the module
    docstring); ``format_name`` picks the dataset."""
    root = Path(root)
    name = DATASET_NAMES[format_name]
    index = DatasetIndex(format_name, root)
    metadata = root / METADATA_DIR / name
    if not metadata.is_dir():
        index.problem(
            root,
            f"lacks {METADATA_DIR}/{name}/; expected a wsolevaluation checkout: "
            f"{METADATA_DIR}/{name}/{{train,val,test}}/ and {IMAGES_DIR}/{name}/",
        )
        return index
    for split in SPLITS:
        if split in splits:
            _read_split(index, root, name, split)
    named_by = index.splits.get("train") or [
        entry for entries in index.splits.values() for entry in entries
    ]
    index.class_names = _class_names(named_by)
    num_classes = len(index.class_names)
    for entries in index.splits.values():
        for entry in entries:
            if entry.sample.label >= num_classes:
                index.problem(
                    entry.listed_at,
                    f"class index {entry.sample.label} is beyond the {num_classes} classes of "
                    "the train split",
                )
    return index


def _index_function(format_name: str):
    def index(root: Path, splits: Sequence[SplitName] = SPLITS) -> DatasetIndex:
        return index_wsolbench(root, splits, format_name)

    index.__name__ = f"index_{format_name}"
    dataset = DATASET_NAMES[format_name]
    index.__doc__ = f"The metadata of the requested splits of wsolevaluation's {dataset}."
    return index


INDEX_FUNCTIONS = {name: _index_function(name) for name in DATASET_NAMES}


def split_reader(format_name: str):
    """The strict ``(root, split) -> (class names, samples)`` reader of one dataset."""
    index_function = INDEX_FUNCTIONS[format_name]

    def read(root: Path, split: SplitName) -> tuple[list[str], list[Sample]]:
        return read_indexed_split(index_function, root, split)

    read.__name__ = f"read_{format_name}_split"
    return read
