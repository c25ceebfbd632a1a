"""The synthetic dataset: deterministic, in the CUB layout, boxes that match its masks."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsol.config import DataConfig
from wsol.data import read_test_split, read_training_splits
from wsol.data.dataset import read_image_rgb, read_mask
from wsol.data.synthetic import class_name, class_texture, render_sample, synthesize_cub
from wsol.data.transforms import mask_bounding_box


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def tiny(out: Path, seed: int) -> Path:
    return synthesize_cub(
        out, num_classes=2, train_per_class=3, test_per_class=1, image_size=48, seed=seed
    )


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
