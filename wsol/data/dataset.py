"""Format-agnostic samples, the train/validation carve, and the torch Dataset.

Every directory format (see :mod:`wsol.data.formats`) turns its files into
:class:`Sample` records; :class:`WsolDataset` reads and transforms them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wsol.data.imagefile import file_truncation_problem
from wsol.data.transforms import WsolTransform, mask_bounding_box

if TYPE_CHECKING:
    from wsol.data.cache import DecodedImageCache

Box = tuple[int, int, int, int]

# A mask pixel is foreground when its grey level exceeds half of the 8-bit maximum.
MASK_THRESHOLD = 0.5 * 255
# "not_blue" masks (Oxford Flowers segmim): a pixel is background when every channel is
# within this many grey levels of pure blue (0, 0, 255); JPEG stores the release's blue as
# about (0, 0, 254) and blurs it near the outline.
BLUE_TOLERANCE = 40

MaskEncoding = Literal["grey", "nonzero", "not_blue"]
"""How a mask file's pixels give the foreground (see :func:`read_mask`)."""

# Images and masks are read as stored: the datasets' boxes and masks refer to the stored
# pixel grid (the one Pillow-based loaders such as wsolevaluation's see), not to the
# EXIF-rotated grid OpenCV would otherwise return.
_IMREAD_COLOR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_IMREAD_GRAYSCALE = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION


class DatasetError(ValueError):
    """A dataset file is missing, malformed or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One image and its annotations, before any file is opened.

    image_id: the image's path relative to the dataset's image folder (``images/`` for
    CUB, the dataset folder for most formats); unique within the dataset.
    label: 0-based class index. boxes: (x0, y0, x1, y1) inclusive boxes in the original
    image's pixels, not yet clipped to the image (the transform clips, as it knows the
    image size); empty when the dataset localises the object by masks only (Oxford
    Flowers, OpenImages), in which case :class:`WsolDataset` derives one box per mask file
    from its foreground. mask_path: a segmentation of the whole image, or None when the
    dataset has none for this image; mask_encoding: how its pixels give the foreground
    (:func:`read_mask`); extra_mask_paths: further masks of the same image (instances)
    whose foregrounds are added to it; ignore_mask_path: a mask of pixels a segmentation
    metric should not count (wsolevaluation's OpenImages), carried for evaluation and
    checked by ``wsol data check``, not read by :class:`WsolDataset`.
    """

    image_id: str
    image_path: Path
    label: int
    boxes: tuple[Box, ...]
    mask_path: Path | None = None
    mask_encoding: MaskEncoding = "grey"
    extra_mask_paths: tuple[Path, ...] = ()
    ignore_mask_path: Path | None = None

    @property
    def mask_paths(self) -> tuple[Path, ...]:
        """Every mask file of the image: ``mask_path`` then ``extra_mask_paths``."""
        return () if self.mask_path is None else (self.mask_path, *self.extra_mask_paths)


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

    The stored pixels, EXIF orientation ignored (the annotations refer to them).
    Raises DatasetError naming the file if it is missing, truncated (a JPEG without its
    end marker, a PNG without IEND: decoders would fill the rest with grey silently) or
    cannot be decoded.
    """
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    _refuse_truncated(path, "image")
    image = cv2.imread(str(path), _IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image file {path}: expected a readable JPEG/PNG image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _refuse_truncated(path: Path, kind: str) -> None:
    try:
        problem = file_truncation_problem(path)
    except OSError as error:
        raise DatasetError(f"cannot read {kind} file {path}: {error}") from None
    if problem is not None:
        raise DatasetError(f"cannot decode {kind} file {path}: {problem}")


def read_mask(path: Path, encoding: MaskEncoding = "grey") -> np.ndarray:
    """The segmentation at ``path`` as an HxW bool foreground array.

    encoding 'grey': grey level > 127.5, half of the maximum 255 (CUB's segmentations,
    whose grey level is the share of annotators marking the pixel; synthetic masks).
    'nonzero': grey level > 0 (wsolevaluation's OpenImages instance masks, > 0.5).
    'not_blue': a colour image whose background is painted pure blue (Oxford Flowers
    segmim): foreground unless every channel is within :data:`BLUE_TOLERANCE` of
    (R, G, B) = (0, 0, 255).
    Raises DatasetError naming the file if it is missing, truncated or cannot be decoded.
    """
    if not path.is_file():
        raise DatasetError(f"mask file not found: {path}")
    _refuse_truncated(path, "mask")
    if encoding == "not_blue":
        pixels = cv2.imread(str(path), _IMREAD_COLOR)
        if pixels is None:
            raise DatasetError(f"cannot decode mask file {path}: expected a colour JPEG/PNG")
        blue, green, red = (pixels[..., channel].astype(np.int16) for channel in range(3))
        background = (
            (blue >= 255 - BLUE_TOLERANCE) & (green <= BLUE_TOLERANCE) & (red <= BLUE_TOLERANCE)
        )
        return ~background
    mask = cv2.imread(str(path), _IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"cannot decode mask file {path}: expected a grey-level PNG")
    if encoding == "nonzero":
        return mask > 0
    if encoding != "grey":
        raise ValueError(f"unknown mask encoding {encoding!r}; expected grey, nonzero or not_blue")
    return mask > MASK_THRESHOLD


def read_sample_mask(sample: Sample, size_hw: tuple[int, int]) -> tuple[np.ndarray, list[Box]]:
    """The foreground of all of ``sample``'s mask files (their union) and the bounding box
    of each file's foreground (files without foreground give none).

    ``size_hw``: the image's (H, W); a mask of another size raises DatasetError naming
    both files. The sample must have a mask (``mask_path`` not None).
    """
    union: np.ndarray | None = None
    boxes: list[Box] = []
    for path in sample.mask_paths:
        # One argument for the default encoding: read_mask's long-standing signature.
        if sample.mask_encoding == "grey":
            mask = read_mask(path)
        else:
            mask = read_mask(path, sample.mask_encoding)
        if mask.shape != size_hw:
            raise DatasetError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{sample.image_path} is {size_hw[1]}x{size_hw[0]} px; expected the same size"
            )
        box = mask_bounding_box(mask)
        if box is not None:
            boxes.append(box)
        union = mask if union is None else union | mask
    if union is None:
        raise ValueError(f"sample {sample.image_id!r} has no mask")
    return union, boxes


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode ``sample``: (HxWx3 uint8 RGB image, (N,4) int64 boxes in image pixels, HxW
    bool mask or None). A sample without boxes gets the box of each mask file's
    foreground. Raises DatasetError naming a missing, truncated or corrupt file."""
    image = read_image_rgb(sample.image_path)
    mask = None
    mask_boxes: list[Box] = []
    if sample.mask_path is not None:
        mask, mask_boxes = read_sample_mask(sample, image.shape[:2])
    # A dataset that localises by masks only gives no boxes: use the masks' boxes.
    boxes = np.asarray(sample.boxes or mask_boxes, dtype=np.int64).reshape(-1, 4)
    return image, boxes, mask


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
      boxes     int64 (N, 4), inclusive (x0, y0, x1, y1) in crop pixels, in [0, C - 1];
                the sample's boxes, or when it has none, the box of each of its mask
                files' foreground (N may be 0 for an image with neither)
      mask      float32 (1, C, C) in {0, 1}; all zeros when the sample has no mask
      has_mask  bool scalar tensor
      image_id  str
      index     int (i)
    A missing, unreadable, truncated or corrupt image or mask raises DatasetError naming
    the file: nothing is skipped.

    ``cache``: a :class:`~wsol.data.cache.DecodedImageCache` of exactly these samples at
    the transform's resize (:func:`wsol.data.cache.open_decoded_cache`); items are then
    cut from its already decoded and resized pixels by the same
    :meth:`WsolTransform.crop_and_flip`, and are identical to the decoded ones.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: WsolTransform,
        seed: int = 0,
        cache: DecodedImageCache | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = seed % 2**64
        self.epoch = 0
        if cache is not None:
            cache.check_matches(self.samples, transform.resize)
        self.cache = cache

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
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.cache is not None:
            image, boxes, mask = self.transform.crop_and_flip(*self.cache.item(index), rng)
        else:
            image, boxes, mask = self.transform(*load_sample(sample), rng)
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
