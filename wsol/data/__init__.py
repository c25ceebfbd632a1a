"""Datasets: directory-format readers, the train/validation carve, transforms, the Dataset.

Training code gets data only through :func:`read_training_splits` (train, and the
dataset's official validation split or, where it has none, a validation split carved from
the training split). The test split is returned only by :func:`read_test_split`, which a
final evaluation calls explicitly.

Formats are dispatched on ``DataConfig.format`` through :data:`SPLIT_READERS`, built from
:data:`wsol.data.formats.FORMATS` (cub, cars, flowers, tinyimagenet, wsolbench_cub,
wsolbench_ilsvrc, wsolbench_openimages; each module documents its official layout). A new
format adds one reader ``(root, 'train' | 'val' | 'test') -> (class names, samples)``
(``'val'`` only if it has an official validation split, declared in FORMATS) and, for
``wsol data check``, an index function (see :mod:`wsol.data.index`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wsol.data.cub import Split
from wsol.data.dataset import (
    DatasetError,
    Sample,
    TrainingSplits,
    WsolDataset,
    carve_validation,
    collate_samples,
)
from wsol.data.formats import FORMATS
from wsol.data.transforms import WsolTransform, build_transform, normalization_stats, normalize

if TYPE_CHECKING:
    from wsol.config import DataConfig

SplitReader = Callable[[Path, Split | Literal["val"]], tuple[list[str], list[Sample]]]

SPLIT_READERS: dict[str, SplitReader] = {
    name: dataset_format.read_split for name, dataset_format in FORMATS.items()
}

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
    "has_official_validation",
    "make_dataset",
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


def has_official_validation(format_name: str) -> bool:
    """Whether the format has its own validation split (else validation is carved)."""
    dataset_format = FORMATS.get(format_name)
    return dataset_format is not None and dataset_format.has_official_validation


def _require_masks(config: DataConfig, split: str, samples: list[Sample]) -> None:
    if not config.require_masks:
        return
    missing = [sample.image_id for sample in samples if sample.mask_path is None]
    if missing:
        more = f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise DatasetError(
            f"data.require_masks is set but {len(missing)} image(s) of the {split} split of "
            f"{config.root} have no mask: {shown}; install the dataset's segmentations "
            "(CUB: segmentations/, Flowers: segmim/) or set data.require_masks=false"
        )


def read_training_splits(config: DataConfig) -> TrainingSplits:
    """The training and validation splits of ``config.root``.

    A format with an official validation split (flowers, wsolbench_*) gives it as is.
    Otherwise validation is carved from the training split, stratified per class and
    seeded by ``config.split_seed`` (see :func:`carve_validation`,
    ``config.val_fraction``). Test image files are never opened or checked; a dataset
    without them works. With ``config.require_masks``, an image without a mask raises.
    """
    reader = _reader(config.format)
    root = Path(config.root)
    class_names, samples = reader(root, "train")
    if has_official_validation(config.format):
        train, (_, val) = samples, reader(root, "val")
    else:
        train, val = carve_validation(samples, config.val_fraction, config.split_seed)
    _require_masks(config, "train", train)
    _require_masks(config, "validation", val)
    return TrainingSplits(train=train, val=val, class_names=class_names)


def read_test_split(config: DataConfig) -> list[Sample]:
    """The test split of ``config.root``: for the final evaluation only, never for a study."""
    _, samples = _reader(config.format)(Path(config.root), "test")
    _require_masks(config, "test", samples)
    return samples


def make_dataset(
    samples: Sequence[Sample],
    config: DataConfig,
    *,
    train: bool,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> WsolDataset:
    """A :class:`WsolDataset` of ``samples`` with ``config``'s training (``train=True``)
    or evaluation transform; with ``config.cache``, served from the node's decoded-image
    cache (:mod:`wsol.data.cache`; built on first use), which gives identical items."""
    from wsol.data.cache import open_decoded_cache

    cache = None
    if config.cache:
        cache = open_decoded_cache(samples, config.resize, config.cache_dir, log=log)
    return WsolDataset(samples, build_transform(config, train), seed, cache=cache)
