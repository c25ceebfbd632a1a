"""Datasets: directory-format readers, the train/validation carve, transforms, the Dataset.

Training code gets data only through :func:`read_training_splits` (train and a
validation split carved from the training split). The test split is returned only by
:func:`read_test_split`, which a final evaluation calls explicitly.

Formats are dispatched on ``DataConfig.format`` through :data:`SPLIT_READERS`; a new
format adds one reader ``(root, 'train' | 'test') -> (class names, samples)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wsol.data.cub import Split, read_cub_split
from wsol.data.dataset import (
    DatasetError,
    Sample,
    TrainingSplits,
    WsolDataset,
    carve_validation,
    collate_samples,
)
from wsol.data.transforms import WsolTransform, build_transform, normalization_stats, normalize

if TYPE_CHECKING:
    from wsol.config import DataConfig

SplitReader = Callable[[Path, Split], tuple[list[str], list[Sample]]]

SPLIT_READERS: dict[str, SplitReader] = {"cub": read_cub_split}

__all__ = [
    "SPLIT_READERS",
    "DatasetError",
    "Sample",
    "TrainingSplits",
    "WsolDataset",
    "WsolTransform",
    "build_transform",
    "carve_validation",
    "collate_samples",
    "normalization_stats",
    "normalize",
    "read_test_split",
    "read_training_splits",
]


def _reader(format_name: str) -> SplitReader:
    try:
        return SPLIT_READERS[format_name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset format {format_name!r}; expected one of {sorted(SPLIT_READERS)}"
        ) from None


def read_training_splits(config: DataConfig) -> TrainingSplits:
    """The training split of ``config.root``, carved into train and validation.

    The carve is stratified per class and seeded by ``config.split_seed`` (see
    :func:`carve_validation`, ``config.val_fraction``). Test image files are never
    opened or checked; a dataset without them works.
    """
    class_names, samples = _reader(config.format)(Path(config.root), "train")
    train, val = carve_validation(samples, config.val_fraction, config.split_seed)
    return TrainingSplits(train=train, val=val, class_names=class_names)


def read_test_split(config: DataConfig) -> list[Sample]:
    """The test split of ``config.root``: for the final evaluation only, never for a study."""
    _, samples = _reader(config.format)(Path(config.root), "test")
    return samples
