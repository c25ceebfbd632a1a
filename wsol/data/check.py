"""Check a dataset folder in seconds and list every problem: ``wsol data check`` and the
study pre-flight.

For the requested splits of a format (:data:`wsol.data.formats.FORMATS`):

- the annotation files parse: every problem of the format's index, naming file and line;
- every listed image exists and is readable, without decoding it: its header parses
  (Pillow reads the header only) and the file ends (a JPEG's end marker, a PNG's IEND),
  so a garbage or truncated file is caught (see :mod:`wsol.data.imagefile`);
- every box lies inside its image; a size the annotations state is the image's;
- every mask file (and ignore mask) is readable and has its image's size;
- no image is in two splits; every class with images has a training image; a class
  listed without any image (a subset of a dataset) is a warning, an error with ``strict``;
- images that are scored (val and test; train too where validation is carved from it)
  have a box or a mask; with ``require_masks``, every image has a mask;
- with ``decode``, every image and mask is decoded in full (slow) and every mask must have
  foreground.

Files are inspected by a thread pool (I/O bound); the problems come out in a fixed order
(index problems, then per image in file order, then the cross-split checks), so two
checks of the same folder print the same report.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from wsol.data.dataset import DatasetError, read_image_rgb, read_sample_mask
from wsol.data.formats import FORMATS, DatasetFormat
from wsol.data.imagefile import ImageFileError, read_image_header
from wsol.data.index import SPLIT_NAMES, IndexedSample, Problem, SplitName

CHUNK = 256
DEFAULT_WORKERS = 8
_UNLOCALIZED = (
    "has neither a box nor a mask, so it cannot be scored",
    "have neither a box nor a mask, so they cannot be scored",
)
_UNMASKED = ("has no mask (require_masks)", "have no mask (require_masks)")


@dataclass
class SplitCounts:
    """What one split holds: images, images per label, boxes and masks."""

    images: int = 0
    per_class: Counter[int] = field(default_factory=Counter)
    with_boxes: int = 0
    boxes: int = 0
    with_masks: int = 0


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`; ``ok`` when no problem was found."""

    format: str
    root: Path
    class_names: list[str]
    official_validation: bool
    splits: dict[str, SplitCounts]
    problems: list[Problem]
    notes: list[str]
    files_checked: int
    seconds: float
    layout: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _class(self, label: int) -> str:
        name = self.class_names[label] if 0 <= label < len(self.class_names) else "?"
        return f"{label} {name}"

    def summary(self, per_class: bool = False) -> str:
        """Counts per split (per class: the range, or every class with ``per_class``)."""
        lines = [f"{self.format} dataset at {self.root}: {len(self.class_names)} classes"]
        width = max((len(name) for name in self.splits), default=5)
        for name, counts in self.splits.items():
            if counts.images:
                low = min(range(len(self.class_names)), key=lambda k: (counts.per_class[k], k))
                high = max(range(len(self.class_names)), key=lambda k: (counts.per_class[k], -k))
                fewest, most = counts.per_class[low], counts.per_class[high]
                spread = (
                    f"{len(+counts.per_class)} classes, {fewest} to {most} images per class"
                    + (f" (fewest: {self._class(low)})" if fewest < most else "")
                    if self.class_names
                    else "no class"
                )
            else:
                spread = "empty"
            lines.append(
                f"  {name:<{width}}  {counts.images} images, {spread}; "
                f"{counts.with_boxes} with boxes ({counts.boxes} boxes), "
                f"{counts.with_masks} with masks"
            )
        if not self.official_validation:
            lines.append("  validation: carved from train (data.val_fraction, data.split_seed)")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.extend(f"  warning: {warning}" for warning in self.warnings)
        if per_class and self.class_names:
            names = list(self.splits)
            lines.append("  per class: " + "  ".join(names))
            for label, class_name in enumerate(self.class_names):
                counts_text = "  ".join(
                    f"{self.splits[name].per_class[label]:>{len(name)}}" for name in names
                )
                lines.append(f"    {counts_text}  {label} {class_name}")
        lines.append(f"checked {self.files_checked} files in {self.seconds:.1f} s")
        return "\n".join(lines)

    def render(self, per_class: bool = False) -> str:
        """The summary, then every problem (one per line) or OK."""
        text = self.summary(per_class)
        if self.ok:
            return text + "\nOK: no problem found"
        listed = "\n".join(f"  {problem}" for problem in self.problems)
        count = len(self.problems)
        layout = f"the {self.format} layout: {self.layout}\n" if self.layout else ""
        return f"{text}\n{layout}{count} problem(s):\n{listed}\nFAILED: {count} problem(s)"


def training_split_names(format_name: str) -> tuple[SplitName, ...]:
    """The splits a study reads: train, and val where the format has an official one."""
    return ("train", "val") if _format(format_name).has_official_validation else ("train",)


def _format(format_name: str) -> DatasetFormat:
    try:
        return FORMATS[format_name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset format {format_name!r}; expected one of {sorted(FORMATS)}"
        ) from None


def _inspect(entry: IndexedSample, decode: bool) -> tuple[list[Problem], int]:
    """Problems of one image's files (and how many files were looked at)."""
    sample = entry.sample
    problems: list[Problem] = []
    try:
        header = read_image_header(sample.image_path)
    except ImageFileError as error:
        problems.append(Problem(str(sample.image_path), f"{error} (listed at {entry.listed_at})"))
        header = None
    files = 1
    size = (header.width, header.height) if header else None
    if size and entry.declared_size and entry.declared_size != size:
        problems.append(
            Problem(
                str(sample.image_path),
                f"is {size[0]}x{size[1]} px but the annotations state "
                f"{entry.declared_size[0]}x{entry.declared_size[1]} (listed at {entry.listed_at})",
            )
        )
    if size:
        width, height = size
        sources = entry.box_sources or (entry.listed_at,) * len(sample.boxes)
        for box, source in zip(sample.boxes, sources, strict=False):
            x0, y0, x1, y1 = box
            if x0 < 0 or y0 < 0 or x1 > width - 1 or y1 > height - 1:
                problems.append(
                    Problem(
                        source,
                        f"box {box} lies outside its image {sample.image_id} ({width}x{height} "
                        f"px: x in 0..{width - 1}, y in 0..{height - 1})",
                    )
                )
    mask_files = list(sample.mask_paths)
    if sample.ignore_mask_path is not None:
        mask_files.append(sample.ignore_mask_path)
    masks_readable = True
    for path in mask_files:
        files += 1
        try:
            mask_header = read_image_header(path)
        except ImageFileError as error:
            masks_readable = False
            problems.append(Problem(str(path), f"mask {error} (image {sample.image_id})"))
            continue
        mask_size = (mask_header.width, mask_header.height)
        if size and mask_size != size:
            masks_readable = False
            problems.append(
                Problem(
                    str(path),
                    f"mask is {mask_size[0]}x{mask_size[1]} px but its image "
                    f"{sample.image_path} is {size[0]}x{size[1]} px; expected the same size",
                )
            )
    if decode and size:
        try:
            image = read_image_rgb(sample.image_path)
            if sample.mask_path is not None and masks_readable:
                mask, _ = read_sample_mask(sample, image.shape[:2])
                if not mask.any():
                    problems.append(
                        Problem(str(sample.mask_path), f"mask of {sample.image_id} is empty")
                    )
        except DatasetError as error:
            problems.append(Problem("", str(error)))
    return problems, files


def _inspect_chunk(chunk: Sequence[IndexedSample], decode: bool) -> tuple[list[Problem], int]:
    problems: list[Problem] = []
    files = 0
    for entry in chunk:
        found, count = _inspect(entry, decode)
        problems.extend(found)
        files += count
    return problems, files


def _inspect_all(
    entries: list[IndexedSample], decode: bool, workers: int, progress: bool, label: str
) -> tuple[list[Problem], int]:
    from tqdm import tqdm

    chunks = [entries[start : start + CHUNK] for start in range(0, len(entries), CHUNK)]
    problems: list[Problem] = []
    files = 0
    bar = tqdm(
        total=len(entries),
        desc=label,
        unit="img",
        file=sys.stderr,
        disable=not progress or len(entries) < CHUNK,
        mininterval=0.5,
        leave=False,
    )
    with bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_inspect_chunk, chunk, decode) for chunk in chunks]
        for chunk, future in zip(chunks, futures, strict=True):
            found, count = future.result()
            problems.extend(found)
            files += count
            bar.update(len(chunk))
    return problems, files


def _needs_localization(dataset_format: DatasetFormat, split: str) -> bool:
    return split != "train" or not dataset_format.has_official_validation


def _per_image_rule(
    entries: list[IndexedSample],
    split: str,
    broken: list[IndexedSample],
    what: tuple[str, str],
) -> list[Problem]:
    """One problem per image in ``broken``, or one for the split when it is all of them.
    ``what``: the fault, said of one image and of several ("has ...", "have ...")."""
    if not broken:
        return []
    if len(broken) == len(entries) and len(entries) > 1:
        return [Problem("", f"all {len(entries)} images of the {split} split {what[1]}")]
    return [Problem(entry.listed_at, f"{entry.sample.image_id} {what[0]}") for entry in broken]


def check_dataset(
    root: Path,
    format_name: str,
    splits: Sequence[str] | None = None,
    *,
    require_masks: bool = False,
    decode: bool = False,
    strict: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: bool = False,
) -> CheckReport:
    """Check the dataset at ``root`` in ``format_name``'s layout.

    splits: which of the format's splits (default: all it has); a split the format does
    not have raises DatasetError. require_masks: every image must have a mask. decode:
    also decode every image and mask in full (slow). strict: classes listed without any
    image are problems, not warnings. workers: threads reading files.
    progress: a progress bar on stderr while images are inspected.
    Returns a :class:`CheckReport`; problems are reported, not raised.
    """
    started = time.perf_counter()
    root = Path(root)
    dataset_format = _format(format_name)
    if splits is None:
        wanted = list(dataset_format.splits)
    else:
        unknown = [split for split in splits if split not in dataset_format.splits]
        if unknown:
            extra = (
                "; its validation split is carved from train"
                if "val" in unknown and not dataset_format.has_official_validation
                else ""
            )
            raise DatasetError(
                f"the {format_name} format has no {', '.join(unknown)} split (it has "
                f"{', '.join(dataset_format.splits)}){extra}"
            )
        wanted = [split for split in SPLIT_NAMES if split in splits]
    index = dataset_format.index(root, tuple(wanted))  # type: ignore[arg-type]
    problems = list(index.problems)
    entries = [entry for split in wanted for entry in index.splits.get(split, [])]
    file_problems, files = _inspect_all(
        entries, decode, workers, progress, f"checking {format_name} images"
    )
    problems.extend(file_problems)

    counts: dict[str, SplitCounts] = {}
    first_split: dict[str, str] = {}
    for split in wanted:
        split_entries = index.splits.get(split)
        if split_entries is None:
            continue
        counts[split] = split_counts = SplitCounts()
        for entry in split_entries:
            sample = entry.sample
            split_counts.images += 1
            split_counts.per_class[sample.label] += 1
            split_counts.boxes += len(sample.boxes)
            split_counts.with_boxes += bool(sample.boxes)
            split_counts.with_masks += sample.mask_path is not None
            other = first_split.setdefault(sample.image_id, split)
            if other != split:
                problems.append(
                    Problem(entry.listed_at, f"{sample.image_id} is also in the {other} split")
                )
        if _needs_localization(dataset_format, split):
            unlocalized = [
                e for e in split_entries if not e.sample.boxes and e.sample.mask_path is None
            ]
            problems.extend(_per_image_rule(split_entries, split, unlocalized, _UNLOCALIZED))
        if require_masks:
            unmasked = [e for e in split_entries if e.sample.mask_path is None]
            problems.extend(_per_image_rule(split_entries, split, unmasked, _UNMASKED))
    warnings: list[str] = []
    if "train" in counts and index.class_names:
        imageless = [
            f"{label} ({name})"
            for label, name in enumerate(index.class_names)
            if not any(split_counts.per_class[label] for split_counts in counts.values())
        ]
        if imageless:
            text = (
                f"{len(imageless)} of {len(index.class_names)} listed classes have no image in "
                f"the checked splits (a subset of the dataset?): {', '.join(imageless[:10])}"
                + (f" and {len(imageless) - 10} more" if len(imageless) > 10 else "")
            )
            if strict:
                problems.append(Problem(str(root), text))
            else:
                warnings.append(text + "; --strict makes this an error")
        for label, name in enumerate(index.class_names):
            has_images = any(split_counts.per_class[label] for split_counts in counts.values())
            if has_images and not counts["train"].per_class[label]:
                problems.append(Problem(str(root), f"class {label} ({name}) has no training image"))
    return CheckReport(
        format=format_name,
        root=root,
        class_names=index.class_names,
        official_validation=dataset_format.has_official_validation,
        splits=counts,
        problems=problems,
        notes=index.notes,
        files_checked=files,
        seconds=time.perf_counter() - started,
        layout=dataset_format.layout,
        warnings=warnings,
    )
