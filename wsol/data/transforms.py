"""Transforms that carry boxes and masks along with the image, exactly.

The paper's pipeline: resize to R x R (square, aspect ratio not kept), then crop to
C x C (random crop in training, centre crop otherwise), then a horizontal flip with
p = 0.5 in training only.

Geometry conventions:

- Boxes are (x0, y0, x1, y1) inclusive pixel indices (Choe et al., CVPR 2020). A box
  covers the continuous extent [x0, x1 + 1) x [y0, y1 + 1).
- Resizing is pixel-centre aligned: output pixel j samples the source at
  (j + 0.5) / s - 0.5 for scale s = R / W. The image uses bilinear interpolation
  (``cv2.INTER_LINEAR``, which is centre-aligned). The mask uses nearest neighbour
  with source index floor((j + 0.5) / s), computed here in exact integer arithmetic
  (``cv2.INTER_NEAREST`` is not centre-aligned: it uses floor(j / s), shifting the
  mask up to half a source pixel against the image).
- A box is resized to exactly the output pixels whose nearest source pixel lies in
  the box: x0' = ceil(x0 * s - 1/2), x1' = ceil((x1 + 1) * s - 1/2) - 1 (and likewise
  for y). So the bounding box of the resized mask equals the resized box of the
  mask's bounding box, exactly. A box too thin to be sampled (x0' > x1') keeps
  one pixel: x1' = x0'.
- Crop subtracts the crop offset and clips to [0, C - 1]; flip maps
  x0' = C - 1 - x1, x1' = C - 1 - x0. Both are exact for masks too.
- A box that ends up wholly outside the image or the crop is kept, as a degenerate
  box clipped onto the border (one pixel wide or high), so the number and order of
  boxes never changes.

Normalisation is not part of the transform: the dataset yields images in [0, 1] and
the model side calls :func:`normalize` (or :func:`normalization_stats`, to normalise
a masked image with the statistics of the unmasked one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import torch

if TYPE_CHECKING:
    from wsol.config import DataConfig

NormalizationMode = Literal["imagenet", "per_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PER_IMAGE_MIN_STD = 1e-5


def _nearest_source_indices(source_size: int, target_size: int) -> np.ndarray:
    """Centre-aligned nearest-neighbour source index of each of ``target_size`` pixels."""
    j = np.arange(target_size, dtype=np.int64)
    return np.minimum(((2 * j + 1) * source_size) // (2 * target_size), source_size - 1)


def _resize_interval(
    start: np.ndarray, end: np.ndarray, source_size: int, target_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive source intervals [start, end] -> the target pixels that sample them.

    Smallest j with floor((2j+1) W / 2R) >= start, largest j with it <= end; integer
    arithmetic, so this agrees with :func:`_nearest_source_indices` exactly.
    """
    w, r = source_size, target_size
    new_start = -((w - 2 * r * start) // (2 * w))
    new_end = -((w - 2 * r * (end + 1)) // (2 * w)) - 1
    new_start = np.clip(new_start, 0, target_size - 1)
    new_end = np.clip(new_end, 0, target_size - 1)
    return new_start, np.maximum(new_end, new_start)


def resize_boxes(boxes: np.ndarray, size_hw: tuple[int, int], target: int) -> np.ndarray:
    """Boxes (N,4) inclusive in an image of ``size_hw`` = (H, W) -> in the target x target image.

    Boxes are first clipped to the source image. Returns int64 (N,4) in [0, target - 1].
    """
    height, width = size_hw
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    x0 = np.clip(boxes[:, 0], 0, width - 1)
    x1 = np.clip(boxes[:, 2], 0, width - 1)
    y0 = np.clip(boxes[:, 1], 0, height - 1)
    y1 = np.clip(boxes[:, 3], 0, height - 1)
    x1 = np.maximum(x1, x0)
    y1 = np.maximum(y1, y0)
    nx0, nx1 = _resize_interval(x0, x1, width, target)
    ny0, ny1 = _resize_interval(y0, y1, height, target)
    return np.stack([nx0, ny0, nx1, ny1], axis=1)


def crop_boxes(boxes: np.ndarray, left: int, top: int, size: int) -> np.ndarray:
    """Boxes (N,4) -> in the ``size`` x ``size`` crop at (left, top), clipped to [0, size - 1]."""
    shifted = np.asarray(boxes, dtype=np.int64).reshape(-1, 4) - np.array(
        [left, top, left, top], dtype=np.int64
    )
    return np.clip(shifted, 0, size - 1)


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes (N,4) -> in the horizontally mirrored image of the given width."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return np.stack(
        [width - 1 - boxes[:, 2], boxes[:, 1], width - 1 - boxes[:, 0], boxes[:, 3]], axis=1
    )


def mask_bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive (x0, y0, x1, y1) of a boolean HxW mask's foreground; None if it is empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _flipped_if(
    flip: bool, image: np.ndarray, boxes: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The crop's image, boxes and mask, mirrored together when ``flip``, as new contiguous
    arrays."""
    if flip:
        image = image[:, ::-1]
        boxes = flip_boxes(boxes, image.shape[1])
        if mask is not None:
            mask = mask[:, ::-1]
    image = np.ascontiguousarray(image)
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
    return image, boxes, mask


class WsolTransform:
    """Resize to ``resize`` x ``resize``, crop to ``crop`` x ``crop``, flip (training only).

    ``train=True``: random crop offset and a horizontal flip with p = 0.5, both drawn
    from the ``rng`` passed to each call (crop left, crop top, then flip, in that
    order). ``hflip=False`` (``data.hflip``) never flips; the flip is still drawn, so the
    crops are those of ``hflip=True``. ``train=False``: centre crop (offset
    (resize - crop) // 2), no flip, and ``rng`` is not used. See the module docstring for
    the exact box geometry.
    """

    def __init__(
        self,
        resize: int,
        crop: int,
        train: bool,
        hflip: bool = True,
        crop_scale: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        if crop > resize:
            raise ValueError(f"crop ({crop} px) must not exceed resize ({resize} px)")
        if crop < 1:
            raise ValueError(f"crop must be a positive number of pixels, got {crop}")
        low, high = crop_scale
        if not 0.0 < low <= high or high * crop > resize:
            raise ValueError(
                f"crop_scale {list(crop_scale)} must satisfy 0 < low <= high and "
                f"high x crop ({high * crop:g} px) <= resize ({resize} px)"
            )
        self.resize = resize
        self.crop = crop
        self.train = train
        self.hflip = hflip
        self.crop_scale = (float(low), float(high))

    def __repr__(self) -> str:
        scale = "" if self.crop_scale == (1.0, 1.0) else f", crop_scale={list(self.crop_scale)}"
        return (
            f"WsolTransform(resize={self.resize}, crop={self.crop}, train={self.train}, "
            f"hflip={self.hflip}{scale})"
        )

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        mask: np.ndarray | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Transform one sample: :meth:`resize_sample`, then :meth:`crop_and_flip`.

        image: HxWx3 uint8 RGB. boxes: (N,4) int, inclusive, in image pixels (clipped
        to the image here). mask: HxW bool (same H, W as the image) or None.
        Returns (crop x crop x 3 uint8 image, (N,4) int64 boxes in [0, crop - 1],
        crop x crop bool mask or None). The inputs are not modified.
        """
        image, boxes, mask = self.resize_sample(image, boxes, mask)
        return self.crop_and_flip(image, boxes, mask, rng)

    def resize_sample(
        self, image: np.ndarray, boxes: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The deterministic first stage: image, boxes and mask resized to resize x resize.

        What the decoded-image cache (:mod:`wsol.data.cache`) stores, so that a cached
        sample goes through exactly the same :meth:`crop_and_flip` as a decoded one.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image must be an HxWx3 uint8 array, got shape {image.shape} {image.dtype}"
            )
        height, width = image.shape[:2]
        if mask is not None and mask.shape != (height, width):
            raise ValueError(f"mask shape {mask.shape} differs from the image's {(height, width)}")
        size = self.resize
        out_image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        out_boxes = resize_boxes(boxes, (height, width), size)
        out_mask = None
        if mask is not None:
            rows = _nearest_source_indices(height, size)
            cols = _nearest_source_indices(width, size)
            out_mask = np.asarray(mask, dtype=bool)[rows[:, None], cols[None, :]]
        return out_image, out_boxes, out_mask

    def crop_and_flip(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        mask: np.ndarray | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The random second stage on a resize x resize sample (image, boxes, mask as
        :meth:`resize_sample` returns them; the image may be a read-only memory map):
        crop (random in training, centre otherwise), then in training a flip with p = 0.5
        (none when ``hflip`` is false).
        Draws crop left, crop top, then flip from ``rng``; with a ``crop_scale`` other than
        (1, 1) the training crop is :meth:`_scaled_crop`'s instead. Returns new contiguous
        arrays."""
        size = self.resize
        if image.shape[:2] != (size, size):
            raise ValueError(f"expected a {size}x{size} resized image, got {image.shape[:2]}")
        if self.train and self.crop_scale != (1.0, 1.0):
            return self._scaled_crop(image, boxes, mask, rng)
        spare = size - self.crop
        if self.train:
            left = int(rng.integers(0, spare + 1))
            top = int(rng.integers(0, spare + 1))
            # Drawn even without flips, so that data.hflip changes nothing but the flips.
            flip = bool(rng.random() < 0.5) and self.hflip
        else:
            left = top = spare // 2
            flip = False
        window = (slice(top, top + self.crop), slice(left, left + self.crop))
        out_image = image[window]
        out_boxes = crop_boxes(boxes, left, top, self.crop)
        out_mask = None if mask is None else mask[window]
        return _flipped_if(flip, out_image, out_boxes, out_mask)

    def _scaled_crop(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        mask: np.ndarray | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A random-resized square crop: a window of side round(s x crop) px, s uniform in
        ``crop_scale`` (at least 1 px, at most the resized side), at a uniform offset,
        resized to crop x crop (image bilinear, mask and boxes exactly as
        :meth:`resize_sample` does), then the flip. Draws s, left, top, then flip."""
        low, high = self.crop_scale
        side = min(max(round(float(rng.uniform(low, high)) * self.crop), 1), self.resize)
        spare = self.resize - side
        left = int(rng.integers(0, spare + 1))
        top = int(rng.integers(0, spare + 1))
        flip = bool(rng.random() < 0.5) and self.hflip
        window = (slice(top, top + side), slice(left, left + side))
        out_image = cv2.resize(
            np.ascontiguousarray(image[window]),
            (self.crop, self.crop),
            interpolation=cv2.INTER_LINEAR,
        )
        out_boxes = resize_boxes(crop_boxes(boxes, left, top, side), (side, side), self.crop)
        out_mask = None
        if mask is not None:
            nearest = _nearest_source_indices(side, self.crop)
            out_mask = np.asarray(mask[window], dtype=bool)[nearest[:, None], nearest[None, :]]
        return _flipped_if(flip, out_image, out_boxes, out_mask)


def build_transform(config: DataConfig, train: bool) -> WsolTransform:
    """The paper's training (``train=True``) or evaluation transform for ``config``; the
    training transform flips only when ``config.hflip`` and scales its crop by
    ``config.crop_scale``."""
    return WsolTransform(
        config.resize, config.crop, train, hflip=config.hflip, crop_scale=config.crop_scale
    )


def normalization_stats(
    images: torch.Tensor, mode: NormalizationMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) that :func:`normalize` uses, broadcastable against ``images``.

    images: (B,3,H,W) float in [0,1]. 'imagenet': the fixed ImageNet statistics, each
    (1,3,1,1). 'per_image': each image's own per-channel mean and (population) std over
    its H*W pixels, each (B,3,1,1), std clamped below at 1e-5 so a flat channel maps to
    0 rather than dividing by zero. Returned on ``images``' device and dtype.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B,3,H,W), got shape {tuple(images.shape)}")
    if mode == "imagenet":
        mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return mean, std
    if mode == "per_image":
        mean = images.mean(dim=(2, 3), keepdim=True)
        std = images.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(PER_IMAGE_MIN_STD)
        return mean, std
    raise ValueError(f"unknown normalization {mode!r}; expected 'imagenet' or 'per_image'")


def normalize(images: torch.Tensor, mode: NormalizationMode) -> torch.Tensor:
    """(images - mean) / std with :func:`normalization_stats`; (B,3,H,W) -> (B,3,H,W)."""
    mean, std = normalization_stats(images, mode)
    return (images - mean) / std
