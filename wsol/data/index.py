"""What a dataset folder holds, before any image is opened: the core shared by the readers
and by ``wsol data check``.

A format's *index function* ``(root, splits) -> DatasetIndex`` parses the annotation files
that the requested splits need and records every problem it meets as a :class:`Problem`
naming the file and line, instead of stopping at the first. Then

- a reader (:func:`read_indexed_split`) refuses an index with problems (DatasetError
  listing them) and checks that the split's image files exist, as the CUB reader does;
- the checker (:mod:`wsol.data.check`) lists them all, with what it finds in the files.

Split names are ours: ``train``, ``val`` (only for formats with an official validation
split) and ``test``; each format module says which of its files each one is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsol.data.dataset import DatasetError, Sample

SplitName = Literal["train", "val", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "val", "test")
MAX_LISTED = 10


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset. ``where``: the file, ``file:line`` or
    ``file:variable(entry)``; empty when ``message`` already names it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(frozen=True)
class IndexedSample:
    """A sample and where it came from.

    listed_at: where the image is listed (``file:line``); box_sources: where each of
    ``sample.boxes`` is written, in the same order; declared_size: the (width, height) the
    annotations state for the image, when they state one.
    """

    split: SplitName
    sample: Sample
    listed_at: str
    box_sources: tuple[str, ...] = ()
    declared_size: tuple[int, int] | None = None


@dataclass
class DatasetIndex:
    """The annotations of some splits of a dataset folder; no image file opened yet.

    ``splits`` holds only the splits that were asked for and that the format has, each
    in the order of the dataset's files. ``notes`` are facts worth showing that are not
    problems (e.g. "no segmentations: no masks").
    """

    format: str
    root: Path
    class_names: list[str] = field(default_factory=list)
    splits: dict[str, list[IndexedSample]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, where: str | Path, message: str) -> None:
        self.problems.append(Problem(str(where), message))


IndexFunction = Callable[[Path, Sequence[SplitName]], DatasetIndex]


def describe_problems(problems: Sequence[Problem], limit: int = MAX_LISTED) -> str:
    """The first ``limit`` problems, one per line, and how many more there are."""
    lines = [f"  {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def read_indexed_split(
    index_function: IndexFunction, root: Path, split: SplitName
) -> tuple[list[str], list[Sample]]:
    """(class names, samples of ``split``) from an index function, strictly.

    Raises DatasetError listing the index's problems (each naming file and line), or the
    image files of ``split`` that are missing. Other splits' images are never looked at.
    """
    root = Path(root)
    index = index_function(root, (split,))
    if index.problems:
        raise DatasetError(
            f"{len(index.problems)} problem(s) in the {index.format} dataset at {root}:\n"
            f"{describe_problems(index.problems)}\n"
            f"(`wsol data check {root} --format {index.format}` lists every problem)"
        )
    if split not in index.splits:
        raise DatasetError(f"the {index.format} format has no {split!r} split")
    entries = index.splits[split]
    missing = [entry for entry in entries if not entry.sample.image_path.is_file()]
    if missing:
        shown = ", ".join(f"{entry.sample.image_path} ({entry.listed_at})" for entry in missing[:5])
        more = f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        raise DatasetError(
            f"{len(missing)} image file(s) of the {split} split are missing: {shown}{more}"
        )
    return index.class_names, [entry.sample for entry in entries]


# --------------------------------------------------------------------------- parsing helpers


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break and surrounding blanks) of each
    non-blank line. Raises OSError / UnicodeDecodeError as ``open`` does."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            stripped = line.strip()
            if stripped:
                yield number, stripped


def read_text_file(index: DatasetIndex, path: Path, what: str) -> list[tuple[int, str]] | None:
    """All (line number, line) of a text file, or None after recording why it can't be read."""
    if not path.is_file():
        index.problem(path, f"missing; expected {what}")
        return None
    try:
        return list(text_lines(path))
    except (OSError, UnicodeDecodeError) as error:
        index.problem(path, f"cannot be read as UTF-8 text ({error}); expected {what}")
        return None


def is_safe_relative(text: str) -> bool:
    """Whether ``text`` is a relative POSIX path that stays inside its folder (string
    tests only: it runs once per image of datasets of a million images)."""
    return (
        bool(text) and not text.startswith("/") and "\\" not in text and ".." not in text.split("/")
    )


def parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def load_mat(
    index: DatasetIndex, path: Path, variables: Sequence[str], what: str
) -> dict[str, Any] | None:
    """The named variables of a MATLAB .mat file (scipy, ``squeeze_me=True``), or None after
    recording a problem (missing file, unreadable file, absent variable)."""
    if not path.is_file():
        index.problem(path, f"missing; expected {what}")
        return None
    from scipy.io import loadmat

    try:
        contents = loadmat(str(path), squeeze_me=True)
    except Exception as error:  # scipy raises ValueError, TypeError, OSError, ... on bad files
        index.problem(path, f"cannot be read as a MATLAB .mat file ({error}); expected {what}")
        return None
    absent = [name for name in variables if name not in contents]
    if absent:
        present = sorted(name for name in contents if not name.startswith("__"))
        index.problem(
            path,
            f"has no variable {', '.join(absent)} (it holds {', '.join(present) or 'none'}); "
            f"expected {what}",
        )
        return None
    return {name: contents[name] for name in variables}
