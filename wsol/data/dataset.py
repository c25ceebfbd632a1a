"""Format-agnostic samples, the train/validation carve, and the torch Dataset.

Every directory format (see :mod:`wsol.data.cub`) turns its files into
:class:`Sample` records; :class:`WsolDataset` reads and transforms them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wsol.data.transforms import WsolTransform

Box = tuple[int, int, int, int]

# A mask pixel is foreground when its grey level exceeds half of the 8-bit maximum.
MASK_THRESHOLD = 0.5 * 255


class DatasetError(ValueError):
    """A dataset file is missing, malformed or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One image and its annotations, before any file is opened.

    image_id: the image's path relative to the dataset's ``images/`` folder (unique).
    label: 0-based class index. boxes: one or more (x0, y0, x1, y1) inclusive boxes in
    the original image's pixels, not yet clipped to the image (the transform clips, as
    it knows the image size). mask_path: a grey-level PNG segmentation of the whole
    image, or None when the dataset has none for this image.
    """

    image_id: str
    image_path: Path
    label: int
    boxes: tuple[Box, ...]
    mask_path: Path | None = None


@dataclass(frozen=True)
class TrainingSplits:
    """The training split of a dataset, carved into train and validation samples.

    ``class_names[label]`` names a label. The test split is not here: only
    :func:`wsol.data.read_test_split` returns it.
    """

    train: list[Sample]
    val: list[Sample]
    class_names: list[str]


def carve_validation(
    samples: Sequence[Sample], val_fraction: float, split_seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (train, val), stratified by label and deterministic.

    Per class with n samples, round(val_fraction * n) of them go to validation, but at
    least 1 and at most n - 1 when n >= 2 (a class with one sample keeps it in train).
    Which ones is drawn by ``np.random.default_rng([split_seed, label])`` from the
    class's samples sorted by image_id, so the carve does not depend on file order or
    on the other classes. Both outputs keep the input order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_label[sample.label].append(sample)
    val_ids: set[str] = set()
    for label, members in by_label.items():
        count = len(members)
        if count < 2:
            continue
        take = min(max(1, round(val_fraction * count)), count - 1)
        ordered = sorted(members, key=lambda sample: sample.image_id)
        rng = np.random.default_rng([split_seed % 2**64, label])
        chosen = rng.choice(count, size=take, replace=False)
        val_ids.update(ordered[int(i)].image_id for i in chosen)
    train = [sample for sample in samples if sample.image_id not in val_ids]
    val = [sample for sample in samples if sample.image_id in val_ids]
    return train, val


def read_image_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as HxWx3 uint8 RGB (grey images are expanded to 3 channels).

    Raises DatasetError naming the file if it is missing or cannot be decoded.
    """
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image file {path}: expected a readable JPEG/PNG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """The segmentation PNG at ``path`` as an HxW bool array: grey level > 127.5 is foreground.

    Raises DatasetError naming the file if it is missing or cannot be decoded.
    """
    if not path.is_file():
        raise DatasetError(f"mask file not found: {path}")
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"cannot decode mask file {path}: expected a grey-level PNG")
    return mask > MASK_THRESHOLD


class WsolDataset(Dataset[dict[str, Any]]):
    """Reads, transforms and tensorises samples, with seeded, reproducible augmentation.

    Item ``i`` at epoch ``e`` draws its transform's randomness from
    ``np.random.default_rng([seed, e, i])``: the same (seed, epoch, index) gives the
    same tensors whatever the number of DataLoader workers and across a resume.
    ``seed`` may be any int (it is taken modulo 2**64). Call :meth:`set_epoch` before
    each epoch (before the DataLoader starts its workers).

    An item is a dict:
      image     float32 (3, C, C) in [0, 1], RGB
      label     int64 scalar tensor, 0-based
      boxes     int64 (N, 4), inclusive (x0, y0, x1, y1) in crop pixels, in [0, C - 1]
      mask      float32 (1, C, C) in {0, 1}; all zeros when the sample has no mask
      has_mask  bool scalar tensor
      image_id  str
      index     int (i)
    A missing, unreadable or corrupt image or mask raises DatasetError naming the file.
    """

    def __init__(self, samples: Sequence[Sample], transform: WsolTransform, seed: int = 0) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed % 2**64
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s augmentation from now on (a non-negative int)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:  # the seed must not depend on how the item was addressed
            index += len(self.samples)
        sample = self.samples[index]
        image = read_image_rgb(sample.image_path)
        mask = None
        if sample.mask_path is not None:
            mask = read_mask(sample.mask_path)
            if mask.shape != image.shape[:2]:
                raise DatasetError(
                    f"mask {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} px but its "
                    f"image {sample.image_path} is {image.shape[1]}x{image.shape[0]} px; "
                    "expected the same size"
                )
        boxes = np.asarray(sample.boxes, dtype=np.int64).reshape(-1, 4)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, boxes, mask = self.transform(image, boxes, mask, rng)
        crop = image.shape[0]
        image_tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        if mask is None:
            mask_tensor = torch.zeros(1, crop, crop, dtype=torch.float32)
        else:
            mask_tensor = torch.from_numpy(mask).to(torch.float32).unsqueeze(0)
        return {
            "image": image_tensor.contiguous(),
            "label": torch.tensor(sample.label, dtype=torch.int64),
            "boxes": torch.from_numpy(boxes.astype(np.int64)),
            "mask": mask_tensor,
            "has_mask": torch.tensor(mask is not None),
            "image_id": sample.image_id,
            "index": index,
        }


def collate_samples(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: image (B,3,C,C), label (B,), mask (B,1,C,C), has_mask (B,) bool,
    index (B,) int64 are stacked; ``boxes`` (list of (N_i,4)) and ``image_id`` (list of
    str) stay lists, as images may have different numbers of boxes.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {
        "image": torch.stack([item["image"] for item in batch]),
        "label": torch.stack([item["label"] for item in batch]),
        "mask": torch.stack([item["mask"] for item in batch]),
        "has_mask": torch.stack([item["has_mask"] for item in batch]),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.int64),
        "boxes": [item["boxes"] for item in batch],
        "image_id": [item["image_id"] for item in batch],
    }
