"""WsolTransform carries boxes and masks exactly; normalisation helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from wsol.config import DataConfig
from wsol.data import build_transform, normalization_stats, normalize
from wsol.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WsolTransform,
    flip_boxes,
    mask_bounding_box,
    resize_boxes,
)

ODD_SIZES = [(37, 53), (61, 29), (45, 45), (101, 73), (23, 41)]  # (H, W)


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def random_rectangle(rng: np.random.Generator, height: int, width: int, min_side: int = 1):
    """A filled rectangle mask and its box, at least ``min_side`` px in each direction."""
    x0 = int(rng.integers(0, width - min_side + 1))
    y0 = int(rng.integers(0, height - min_side + 1))
    x1 = int(rng.integers(x0 + min_side - 1, width))
    y1 = int(rng.integers(y0 + min_side - 1, height))
    mask = np.zeros((height, width), bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask, np.array([[x0, y0, x1, y1]])


def random_ellipse(rng: np.random.Generator, height: int, width: int, small: bool = False):
    """A filled rotated ellipse mask (possibly cut by the border unless ``small``), its box."""
    mask = np.zeros((height, width), np.uint8)
    if small:
        axes = (int(rng.integers(2, width // 5)), int(rng.integers(2, height // 5)))
        radius = max(axes)
        centre = (
            int(rng.integers(radius, width - radius)),
            int(rng.integers(radius, height - radius)),
        )
    else:
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(2, width // 2)), int(rng.integers(2, height // 2)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    mask = mask.astype(bool)
    return mask, np.array([mask_bounding_box(mask)])


@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
@pytest.mark.parametrize(("resize", "crop"), [(40, 32), (72, 64), (19, 13), (130, 96)])
def test_rectangle_mask_box_equals_transformed_box_exactly(
    height: int, width: int, resize: int, crop: int
) -> None:
    transform = WsolTransform(resize, crop, train=True)
    # Thinner rectangles can fall between the sampled rows or columns of a downscale.
    min_side = -(-max(height, width) // resize) + 1
    for seed in range(40):
        rng = np.random.default_rng(seed)
        mask, boxes = random_rectangle(rng, height, width, min_side)
        image, out_boxes, out_mask = transform(random_image(rng, height, width), boxes, mask, rng)
        assert image.shape == (crop, crop, 3) and out_mask.shape == (crop, crop)
        box = mask_bounding_box(out_mask)
        if box is None:  # wholly cropped away: a degenerate box on the border remains
            x0, y0, x1, y1 = out_boxes[0]
            assert x0 == x1 in (0, crop - 1) or y0 == y1 in (0, crop - 1)
        else:
            assert box == tuple(out_boxes[0])


@pytest.mark.parametrize(("height", "width"), ODD_SIZES)
@pytest.mark.parametrize("resize", [17, 40, 64, 150])
def test_resized_mask_box_is_within_one_pixel_of_resized_box(
    height: int, width: int, resize: int
) -> None:
    transform = WsolTransform(resize, resize, train=False)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        mask, boxes = random_ellipse(rng, height, width)
        _, out_boxes, out_mask = transform(random_image(rng, height, width), boxes, mask, rng)
        box = mask_bounding_box(out_mask)
        assert box is not None
        assert np.abs(np.array(box) - out_boxes[0]).max() <= 1


@pytest.mark.parametrize(("size", "crop"), [(45, 32), (67, 64), (33, 33)])
def test_crop_and_flip_keep_any_contained_shape_box_exact(size: int, crop: int) -> None:
    transform = WsolTransform(size, crop, train=True)  # resize to its own size: identity
    contained = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        mask, boxes = random_ellipse(rng, size, size, small=True)
        _, out_boxes, out_mask = transform(random_image(rng, size, size), boxes, mask, rng)
        if out_mask.sum() == mask.sum():
            contained += 1
            assert mask_bounding_box(out_mask) == tuple(out_boxes[0])
    assert contained >= 5


def test_resizing_to_the_same_size_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    image = random_image(rng, 29, 29)
    mask, boxes = random_ellipse(rng, 29, 29)
    out_image, out_boxes, out_mask = WsolTransform(29, 29, train=False)(image, boxes, mask, rng)
    assert np.array_equal(out_image, image) and np.array_equal(out_mask, mask)
    assert np.array_equal(out_boxes, boxes)


def test_boxes_are_clipped_to_the_image_and_crop_and_never_dropped() -> None:
    boxes = np.array([[-5, -3, 200, 300], [0, 0, 3, 3], [60, 60, 90, 90]])
    resized = resize_boxes(boxes, (64, 64), 64)
    assert resized.tolist() == [[0, 0, 63, 63], [0, 0, 3, 3], [60, 60, 63, 63]]
    rng = np.random.default_rng(0)
    _, out, _ = WsolTransform(64, 32, train=False)(random_image(rng, 64, 64), boxes, None, rng)
    assert out.dtype == np.int64
    assert out.tolist() == [[0, 0, 31, 31], [0, 0, 0, 0], [31, 31, 31, 31]]


def test_flip_twice_is_the_identity() -> None:
    rng = np.random.default_rng(1)
    xs, ys = np.sort(rng.integers(0, 50, size=(2, 20, 2)), axis=2)
    boxes = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)
    flipped = flip_boxes(boxes, 50)
    assert np.all(flipped[:, 0] <= flipped[:, 2])
    assert np.array_equal(flip_boxes(flipped, 50), boxes)
    image = random_image(rng, 9, 50)
    assert np.array_equal(image[:, ::-1][:, ::-1], image)


def test_training_flip_mirrors_image_mask_and_box_together_about_half_the_time() -> None:
    rng = np.random.default_rng(0)
    image = random_image(rng, 33, 33)
    mask, boxes = random_rectangle(rng, 33, 33)
    plain = WsolTransform(33, 33, train=False)(image, boxes, mask, rng)
    train = WsolTransform(33, 33, train=True)
    flips = 0
    for seed in range(100):
        out_image, out_boxes, out_mask = train(image, boxes, mask, np.random.default_rng(seed))
        if np.array_equal(out_image, plain[0]):
            assert np.array_equal(out_boxes, plain[1]) and np.array_equal(out_mask, plain[2])
        else:
            flips += 1
            assert np.array_equal(out_image, plain[0][:, ::-1])
            assert np.array_equal(out_mask, plain[2][:, ::-1])
            assert np.array_equal(out_boxes, flip_boxes(plain[1], 33))
    assert 30 <= flips <= 70


def test_centre_crop_is_deterministic_and_centred() -> None:
    rng = np.random.default_rng(0)
    image = random_image(rng, 50, 70)
    transform = WsolTransform(40, 32, train=False)
    first = transform(image, np.array([[0, 0, 69, 49]]), None, np.random.default_rng(1))
    second = transform(image, np.array([[0, 0, 69, 49]]), None, np.random.default_rng(2))
    assert np.array_equal(first[0], second[0])
    resized = cv2.resize(image, (40, 40), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(first[0], resized[4:36, 4:36])
    assert first[1].tolist() == [[0, 0, 31, 31]]


def test_evaluation_never_flips() -> None:
    rng = np.random.default_rng(0)
    image = random_image(rng, 40, 40)
    transform = WsolTransform(40, 32, train=False)
    reference = transform(image, np.array([[0, 0, 9, 9]]), None, rng)
    for seed in range(30):
        out = transform(image, np.array([[0, 0, 9, 9]]), None, np.random.default_rng(seed))
        assert np.array_equal(out[0], reference[0]) and np.array_equal(out[1], reference[1])


def test_inputs_are_not_modified_and_outputs_are_contiguous() -> None:
    rng = np.random.default_rng(0)
    image = random_image(rng, 40, 40)
    mask, boxes = random_rectangle(rng, 40, 40)
    copies = image.copy(), boxes.copy(), mask.copy()
    for seed in range(5):
        out_image, _, out_mask = WsolTransform(40, 32, train=True)(
            image, boxes, mask, np.random.default_rng(seed)
        )
        assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous
    assert all(np.array_equal(a, b) for a, b in zip((image, boxes, mask), copies, strict=True))


def test_crop_larger_than_resize_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"crop \(64 px\) must not exceed resize \(48 px\)"):
        WsolTransform(48, 64, train=True)


def test_build_transform_uses_the_config_sizes() -> None:
    transform = build_transform(DataConfig(resize=72, crop=64), train=True)
    assert (transform.resize, transform.crop, transform.train) == (72, 64, True)


# --------------------------------------------------------------------------- normalisation


def test_imagenet_normalization_uses_the_fixed_statistics() -> None:
    images = torch.rand(2, 3, 8, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(normalize(images, "imagenet"), (images - mean) / std)


def test_per_image_normalization_standardises_each_image_and_channel() -> None:
    images = torch.rand(4, 3, 16, 16) * torch.tensor([0.2, 0.5, 1.0]).view(1, 3, 1, 1)
    images[1] += 0.3
    mean, std = normalization_stats(images, "per_image")
    assert mean.shape == std.shape == (4, 3, 1, 1)
    out = normalize(images, "per_image")
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), torch.ones(4, 3), atol=1e-4)


def test_per_image_normalization_of_a_flat_image_is_zero_not_nan() -> None:
    out = normalize(torch.full((1, 3, 4, 4), 0.7), "per_image")
    # Only float rounding of the mean remains, divided by the 1e-5 std floor.
    assert torch.isfinite(out).all() and out.abs().max() < 0.05


def test_normalization_rejects_unknown_modes_and_shapes() -> None:
    with pytest.raises(ValueError, match="unknown normalization 'zscore'"):
        normalize(torch.rand(1, 3, 4, 4), "zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must be \(B,3,H,W\)"):
        normalize(torch.rand(3, 4, 4), "imagenet")
