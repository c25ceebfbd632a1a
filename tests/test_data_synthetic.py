"""The synthetic dataset: deterministic, in the CUB layout, boxes that match its masks."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from study.cli import SYNTH_KINDS, build_parser
from wsol.config import DataConfig
from wsol.data import read_test_split, read_training_splits
from wsol.data.dataset import read_image_rgb, read_mask
from wsol.data.synthetic import (
    CLUTTER_STROKE_MIN,
    FRAGMENT_MARGIN,
    FRAGMENT_SHARE_RANGE,
    MIN_SHAPE_DISTANCE,
    SHAPE_KINDS,
    SYNTHETIC_KINDS,
    _fragment_region,
    _shape_background,
    _stroke_region,
    class_name,
    class_polygon,
    class_texture,
    render_sample,
    render_shape_sample,
    shape_clutter,
    silhouette_distance,
    synthesize_cub,
)
from wsol.data.transforms import mask_bounding_box

SHAPE_KIND_NAMES = sorted(SHAPE_KINDS)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def tiny(out: Path, seed: int, kind: str = "stripes") -> Path:
    return synthesize_cub(
        out, num_classes=2, train_per_class=3, test_per_class=1, image_size=48, seed=seed, kind=kind
    )


def set_digest(root: Path) -> str:
    """One sha256 over every file's relative path and bytes."""
    return hashlib.sha256(repr(sorted(tree_digest(root).items())).encode()).hexdigest()


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = tree_digest(tiny(tmp_path / "a", seed=11))
    assert first == tree_digest(tiny(tmp_path / "b", seed=11))
    other = tree_digest(tiny(tmp_path / "c", seed=12))
    assert other.keys() == first.keys() and other != first


def test_reads_back_with_balanced_classes_and_the_right_counts(synthetic_root: Path) -> None:
    config = DataConfig(root=synthetic_root, val_fraction=0.25)
    splits = read_training_splits(config)
    assert splits.class_names == ["001.Stripes_00deg", "002.Stripes_45deg", "003.Stripes_90deg"]
    assert Counter(s.label for s in splits.train) == {0: 9, 1: 9, 2: 9}
    assert Counter(s.label for s in splits.val) == {0: 3, 1: 3, 2: 3}
    test = read_test_split(config)
    assert Counter(s.label for s in test) == {0: 4, 1: 4, 2: 4}
    first = splits.train[0]
    assert first.image_id.startswith("001.Stripes_00deg/Stripes_00deg_")
    assert first.image_id.endswith(".jpg")


def test_every_box_is_its_mask_bounding_box(synthetic_root: Path) -> None:
    config = DataConfig(root=synthetic_root)
    splits = read_training_splits(config)
    for sample in splits.train + splits.val + read_test_split(config):
        assert sample.mask_path is not None and len(sample.boxes) == 1
        mask = read_mask(sample.mask_path)
        image = read_image_rgb(sample.image_path)
        assert mask.shape == image.shape[:2] == (64, 64)
        assert mask_bounding_box(mask) == sample.boxes[0]


def test_objects_cover_a_quarter_to_sixty_percent_of_each_side() -> None:
    for seed in range(30):
        _, mask = render_sample(np.random.default_rng(seed), seed % 4, 4, 96)
        x0, y0, x1, y1 = mask_bounding_box(mask)
        for extent in (x1 - x0 + 1, y1 - y0 + 1):
            assert 0.25 * 96 - 2 <= extent <= 0.6 * 96 + 2


def test_masks_are_binary_pngs(synthetic_root: Path) -> None:
    path = next((synthetic_root / "segmentations").rglob("*.png"))
    values = set(np.unique(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)).tolist())
    assert values == {0, 255}


def test_class_textures_are_distinct_and_flip_invariant() -> None:
    for num_classes in (2, 4, 7, 12):
        textures = [class_texture(k, num_classes) for k in range(num_classes)]
        assert len(set(textures)) == num_classes
        assert all(0.0 <= angle <= 90.0 for angle, _ in textures)
        assert len({class_name(k, num_classes) for k in range(num_classes)}) == num_classes


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        synthesize_cub(tmp_path, num_classes=1, train_per_class=1, test_per_class=0)


def test_reports_progress_per_image(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    synthesize_cub(
        tmp_path / "p",
        num_classes=2,
        train_per_class=2,
        test_per_class=1,
        image_size=32,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 6) for i in range(1, 7)]


# ------------------------------------------------------------------------- kinds

#: set_digest of tiny(seed=11) as written before kinds existed (commit 40ce5cd): the default
#: kind must keep writing it, byte for byte (the README's `make demo` numbers depend on it).
STRIPES_TINY_DIGEST = "ff70bf4af83b9c3b41c3c60eed45eb512388d7ae94c7a393bd4a90c655583b9a"


def test_the_default_kind_writes_the_original_files_byte_for_byte(tmp_path: Path) -> None:
    assert set_digest(tiny(tmp_path / "default", seed=11)) == STRIPES_TINY_DIGEST
    assert set_digest(tiny(tmp_path / "stripes", seed=11, kind="stripes")) == STRIPES_TINY_DIGEST


def test_there_are_at_least_four_kinds_and_the_cli_offers_them_all() -> None:
    assert len(SYNTHETIC_KINDS) >= 4 and SYNTHETIC_KINDS[0] == "stripes"
    assert SYNTH_KINDS == SYNTHETIC_KINDS
    args = build_parser().parse_args(["synth", "out", "--kind", "hard"])
    assert args.kind == "hard"
    assert build_parser().parse_args(["synth", "out"]).kind == "stripes"


@pytest.mark.parametrize("kind", SHAPE_KIND_NAMES)
def test_same_seed_reproduces_each_kind_and_another_seed_does_not(
    tmp_path: Path, kind: str
) -> None:
    first = tree_digest(tiny(tmp_path / "a", seed=3, kind=kind))
    assert first == tree_digest(tiny(tmp_path / "b", seed=3, kind=kind))
    other = tree_digest(tiny(tmp_path / "c", seed=4, kind=kind))
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name.endswith(".jpg"))


@pytest.mark.parametrize("kind", SHAPE_KIND_NAMES)
def test_each_kind_reads_back_with_images_masks_and_valid_boxes(tmp_path: Path, kind: str) -> None:
    root = synthesize_cub(
        tmp_path / kind,
        num_classes=3,
        train_per_class=4,
        test_per_class=2,
        image_size=56,
        kind=kind,
    )
    config = DataConfig(root=root, val_fraction=0.25, require_masks=True)
    splits = read_training_splits(config)
    test = read_test_split(config)
    assert splits.class_names == ["001.Shape_01", "002.Shape_02", "003.Shape_03"]
    assert Counter(s.label for s in splits.train + splits.val) == {0: 4, 1: 4, 2: 4}
    assert Counter(s.label for s in test) == {0: 2, 1: 2, 2: 2}
    for sample in splits.train + splits.val + test:
        image, mask = read_image_rgb(sample.image_path), read_mask(sample.mask_path)
        assert image.shape == (56, 56, 3) and image.dtype == np.uint8
        assert mask.shape == (56, 56) and mask.any()
        (x0, y0, x1, y1), *rest = sample.boxes
        assert not rest and 0 <= x0 <= x1 < 56 and 0 <= y0 <= y1 < 56
        assert mask_bounding_box(mask) == (x0, y0, x1, y1)


def _best_iou_with_turns(first: np.ndarray, second: np.ndarray) -> float:
    """Best IoU of two masks over rotations of ``second`` by -45..45 degrees about its
    centroid, after moving it onto ``first``'s centroid (computed here, not by the module)."""

    def centroid(mask: np.ndarray) -> tuple[float, float]:
        ys, xs = np.nonzero(mask)
        return float(xs.mean()), float(ys.mean())

    (fx, fy), (sx, sy) = centroid(first), centroid(second)
    best = 0.0
    for degrees in np.arange(-45.0, 45.1, 2.5):
        matrix = cv2.getRotationMatrix2D((sx, sy), float(degrees), 1.0)
        matrix[:, 2] += (fx - sx, fy - sy)
        turned = cv2.warpAffine(second.astype(np.uint8), matrix, first.shape[::-1]) > 0
        best = max(best, float((first & turned).sum() / (first | turned).sum()))
    return best


def _canonical_mask(points: np.ndarray, side: int = 96) -> np.ndarray:
    canvas = np.zeros((side, side), np.uint8)
    cv2.fillPoly(canvas, [np.round(points * side * 0.2 + side / 2).astype(np.int32)], 1)
    return canvas > 0


def test_no_shape_class_matches_its_own_mirror_image_at_any_turn() -> None:
    for class_index in range(10):
        mask = _canonical_mask(class_polygon(class_index))
        mirror = mask[:, ::-1]
        assert _best_iou_with_turns(mask, mirror) <= 0.8, f"class {class_index}"


def test_shape_classes_differ_from_each_other_and_from_each_others_mirrors() -> None:
    masks = [_canonical_mask(class_polygon(k)) for k in range(10)]
    for a in range(10):
        for b in range(a):
            assert _best_iou_with_turns(masks[a], masks[b]) <= 0.8, (a, b)
            assert _best_iou_with_turns(masks[a], masks[b][:, ::-1]) <= 0.8, (a, b)


def test_colour_texture_and_background_are_drawn_independently_of_the_class() -> None:
    for seed in range(5):
        first, first_mask = render_shape_sample(np.random.default_rng(seed), 0, 4, 64, "shapes")
        second, second_mask = render_shape_sample(np.random.default_rng(seed), 3, 4, 64, "shapes")
        assert not np.array_equal(first_mask, second_mask)
        both, neither = first_mask & second_mask, ~(first_mask | second_mask)
        assert both.any() or not (first_mask.any() and second_mask.any())
        np.testing.assert_array_equal(first[both], second[both])  # the same texture
        np.testing.assert_array_equal(first[neither], second[neither])  # the same background


@pytest.mark.parametrize(("kind", "smallest"), [("shapes", 0.25), ("scale", 0.1), ("hard", 0.1)])
def test_object_longer_side_spans_the_kinds_scale_range(kind: str, smallest: float) -> None:
    sides = []
    for seed in range(60):
        _, mask = render_shape_sample(np.random.default_rng(seed), seed % 5, 5, 100, kind)
        x0, y0, x1, y1 = mask_bounding_box(mask)
        sides.append(max(x1 - x0 + 1, y1 - y0 + 1))
    assert smallest * 100 - 2 <= min(sides) <= smallest * 100 + 8
    assert 52 <= max(sides) <= 62


def test_fragment_kinds_add_clutter_the_plain_kind_does_not_have() -> None:
    changed = 0
    for seed in range(10):
        plain, plain_mask = render_shape_sample(np.random.default_rng(seed), 1, 4, 64, "shapes")
        cluttered, mask = render_shape_sample(np.random.default_rng(seed), 1, 4, 64, "fragments")
        outside = ~(plain_mask | mask)  # the same background under both; fragments differ
        difference = np.abs(plain.astype(int) - cluttered.astype(int)).max(axis=2)
        changed += int((difference[outside] > 40).sum())
    assert changed > 10 * 64 * 64 * 0.02  # 4 % measured: 2-4 fragments per image


def test_refuses_an_unknown_kind_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown synthetic kind 'zebra'.*stripes, shapes"):
        synthesize_cub(tmp_path / "z", kind="zebra")


# ------------------------------------------------------------ shape kinds' clutter (issue 14)

#: Components under this many pixels are specks (a speckle cloud's dots), smaller than the
#: smallest object (10 % of a 96 px side is about 50 px of area).
SPECK_PIXELS = 20


def _components(region: np.ndarray) -> list[np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
    return [labels == c for c in range(1, count) if stats[c, cv2.CC_STAT_AREA] >= SPECK_PIXELS]


def _nearest_class(mask: np.ndarray, num_classes: int = 10) -> float:
    return min(silhouette_distance(mask, k) for k in range(num_classes))


def test_the_lookalike_measure_flags_filled_compact_shapes_and_whole_objects() -> None:
    """The measure the clutter test relies on has teeth: the ``stripes`` kind's clutter
    (filled ellipse, rectangle, triangle) and the objects themselves are class-like."""
    for draw in (
        lambda c: cv2.ellipse(c, (48, 48), (25, 12), 30, 0, 360, 1, -1),
        lambda c: cv2.rectangle(c, (30, 30), (60, 50), 1, -1),
        lambda c: cv2.fillPoly(c, [np.array([[20, 70], [70, 60], [40, 20]], np.int32)], 1),
    ):
        canvas = np.zeros((96, 96), np.uint8)
        draw(canvas)
        assert _nearest_class(canvas > 0) < MIN_SHAPE_DISTANCE
    own = [
        silhouette_distance(
            render_shape_sample(np.random.default_rng(s), s % 10, 10, 96, "shapes")[1], s % 10
        )
        for s in range(20)
    ]
    assert np.mean(np.array(own) < MIN_SHAPE_DISTANCE) >= 0.7


def test_shape_clutter_is_reproducible_and_no_element_looks_like_a_class() -> None:
    coverage = []
    for seed in range(25):
        elements = shape_clutter(np.random.default_rng(seed), 96)
        again = shape_clutter(np.random.default_rng(seed), 96)
        assert len(elements) == len(again) >= 1
        for (region, colour), (region2, colour2) in zip(elements, again, strict=True):
            np.testing.assert_array_equal(region, region2)
            np.testing.assert_array_equal(colour, colour2)
            for component in _components(region):
                assert _nearest_class(component) >= MIN_SHAPE_DISTANCE, seed
        coverage.append(np.logical_or.reduce([region for region, _ in elements]).mean())
    # the dots cover about 1 % of the image (their clouds' outlines several times that)
    assert 0.005 <= float(np.mean(coverage)) <= 0.25


def test_strokes_show_no_short_stubs() -> None:
    """Every piece of a stroke that shows spans CLUTTER_STROKE_MIN of the side (a short
    thick stub would be a small filled bar, which the measure above calls class-like)."""
    rng = np.random.default_rng(0)
    for index in range(100):
        region = _stroke_region(rng, 96)
        count, _, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
        spans = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
        assert count == 1 or spans.min() >= CLUTTER_STROKE_MIN * 96, index


def test_fragments_are_parts_not_whole_shapes() -> None:
    spec = SHAPE_KINDS["fragments"]
    drawn = 0
    for seed in range(40):
        class_index = seed % 10
        nothing_to_avoid = np.zeros((96, 96), bool)
        region = _fragment_region(
            np.random.default_rng(seed), class_index, 96, spec, nothing_to_avoid
        )
        if not region.any():
            continue  # dropped after its recuts (or placed off the image)
        drawn += 1
        assert silhouette_distance(region, class_index) >= MIN_SHAPE_DISTANCE, seed
        whole = 0.6 * 96  # at most the kind's largest longer side
        assert region.sum() <= FRAGMENT_SHARE_RANGE[1] * whole * whole
    assert drawn >= 30


def test_fragments_never_touch_the_object_and_keep_its_outline() -> None:
    """A fragment touching the object would change its outline (the class): within
    FRAGMENT_MARGIN of the side around the object the image is the background."""
    size, margin = 96, max(1, round(FRAGMENT_MARGIN * 96))
    grid = np.mgrid[0:size, 0:size].astype(np.float32)[::-1]
    near_object_changed, with_fragments = 0, 0
    for seed in range(30):
        image, mask = render_shape_sample(
            np.random.default_rng(seed), seed % 10, 10, size, "fragments"
        )
        background = _shape_background(np.random.default_rng(seed), size, grid)
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((2 * margin - 1,) * 2, np.uint8)) > 0
        ring &= ~mask
        difference = np.abs(background.astype(int) - image.astype(int)).max(axis=2)
        near_object_changed += int((difference[ring] > 40).sum())
        with_fragments += int((difference[~ring & ~mask] > 40).sum() > 20)
    assert near_object_changed == 0
    assert with_fragments >= 25


def test_a_fragment_that_cannot_be_placed_clear_is_dropped() -> None:
    spec = SHAPE_KINDS["fragments"]
    everywhere = np.ones((96, 96), bool)
    for seed in range(10):
        region = _fragment_region(np.random.default_rng(seed), seed % 10, 96, spec, everywhere)
        assert not region.any()


def test_the_shape_kinds_draw_their_object_on_the_clutter_background() -> None:
    """The shape kinds' background (a gradient under :func:`shape_clutter`) is drawn
    first from the image's rng, so outside the object (``shapes``: no fragments) the
    image is that background plus pixel noise."""
    for seed in range(5):
        image, mask = render_shape_sample(np.random.default_rng(seed), 2, 4, 64, "shapes")
        grid = np.mgrid[0:64, 0:64].astype(np.float32)[::-1]
        background = _shape_background(np.random.default_rng(seed), 64, grid)
        difference = np.abs(image.astype(int) - background.astype(int)).max(axis=2)
        assert np.median(difference[~mask]) <= 16  # pixel noise only (sigma 5)
