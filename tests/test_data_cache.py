"""The decoded-image cache gives exactly the items decoding gives, and is built once."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from wsol.data import DatasetError, WsolDataset, collate_samples, read_training_splits
from wsol.data.cache import DecodedImageCache, cache_key, open_decoded_cache
from wsol.data.transforms import WsolTransform, mask_bounding_box
from wsol.loaders import make_loader


@pytest.fixture(scope="module")
def samples(synthetic_root: Path):
    from wsol.config import DataConfig

    return read_training_splits(DataConfig(root=synthetic_root, val_fraction=0.25)).train


def assert_same_item(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == second[key].dtype, key
            assert torch.equal(value, second[key]), key
        else:
            assert value == second[key], key


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_cached_items_equal_decoded_items(samples, tmp_path: Path, train: bool) -> None:
    transform = WsolTransform(72, 64, train=train)
    cache = open_decoded_cache(samples, 72, tmp_path)
    decoded = WsolDataset(samples, transform, seed=3)
    cached = WsolDataset(samples, transform, seed=3, cache=cache)
    for epoch in (1, 2):
        decoded.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(samples)):
            assert_same_item(decoded[index], cached[index])


def test_cached_boxes_and_masks_stay_aligned_under_crops_and_flips(samples, tmp_path) -> None:
    # Synthetic boxes are the tight boxes of the masks: after any crop and flip, the
    # mask's bounding box lies inside the (clipped) box, and is the box whenever the
    # crop cuts nothing off the object.
    cache = open_decoded_cache(samples, 80, tmp_path)
    dataset = WsolDataset(samples, WsolTransform(80, 64, train=True), seed=0, cache=cache)
    flipped_seen, inside = 0, 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(samples)):
            item = dataset[index]
            mask = item["mask"][0].numpy() > 0.5
            box = mask_bounding_box(mask)
            if box is None:  # object cropped out entirely
                continue
            x0, y0, x1, y1 = item["boxes"][0].tolist()
            assert x0 <= box[0] <= box[2] <= x1 and y0 <= box[1] <= box[3] <= y1
            if min(x0, y0) > 0 and max(x1, y1) < 63:
                assert (x0, y0, x1, y1) == box
                inside += 1
            rng = np.random.default_rng([0, epoch, index])
            rng.integers(0, 17), rng.integers(0, 17)
            flipped_seen += bool(rng.random() < 0.5)
    assert flipped_seen > 0 and inside > 0


def test_mask_only_samples_and_samples_without_masks(samples, tmp_path: Path) -> None:
    mixed = [
        dataclasses.replace(samples[0], boxes=()),  # boxes come from the mask
        dataclasses.replace(samples[1], mask_path=None),  # no mask at all
        *samples[2:4],
    ]
    transform = WsolTransform(72, 64, train=True)
    cache = open_decoded_cache(mixed, 72, tmp_path)
    decoded = WsolDataset(mixed, transform, seed=1)
    cached = WsolDataset(mixed, transform, seed=1, cache=cache)
    for index in range(len(mixed)):
        assert_same_item(decoded[index], cached[index])
    assert len(cached[0]["boxes"]) == 1
    assert not cached[1]["has_mask"] and not cached[1]["mask"].any()


def test_a_cache_is_built_once_and_reused(samples, tmp_path: Path) -> None:
    messages: list[str] = []
    first = open_decoded_cache(samples, 72, tmp_path, log=messages.append)
    second = open_decoded_cache(samples, 72, tmp_path, log=messages.append)
    assert first.directory == second.directory
    assert len(messages) == 1  # only the first call decoded
    assert first.nbytes >= len(samples) * 72 * 72 * 3
    other_resize = open_decoded_cache(samples, 80, tmp_path)
    assert other_resize.directory != first.directory


def test_a_changed_image_file_gets_a_new_cache(samples, tmp_path: Path) -> None:
    copied = []
    for sample in samples[:3]:
        target = tmp_path / "images" / Path(sample.image_path).name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(Path(sample.image_path).read_bytes())
        copied.append(dataclasses.replace(sample, image_path=target))
    before = cache_key(copied, 72)
    with copied[0].image_path.open("ab") as handle:
        handle.write(b"\0")
    assert cache_key(copied, 72) != before


def test_the_cache_refuses_other_samples_or_resize(samples, tmp_path: Path) -> None:
    cache = open_decoded_cache(samples, 72, tmp_path)
    with pytest.raises(ValueError, match="other samples"):
        WsolDataset(samples[1:], WsolTransform(72, 64, train=False), cache=cache)
    with pytest.raises(ValueError, match="resized to 72 px"):
        WsolDataset(samples, WsolTransform(80, 64, train=False), cache=cache)


def test_a_corrupt_image_names_the_file_and_leaves_no_cache(samples, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    bad = [samples[0], dataclasses.replace(samples[1], image_path=broken)]
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        open_decoded_cache(bad, 72, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_cache_pickles_without_its_arrays_and_feeds_loader_workers(samples, tmp_path) -> None:
    cache = open_decoded_cache(samples, 72, tmp_path)
    cache.item(0)  # maps the files in this process
    restored = pickle.loads(pickle.dumps(cache))
    assert restored._arrays is None
    assert np.array_equal(restored.item(5)[0], cache.item(5)[0])
    transform = WsolTransform(72, 64, train=True)
    decoded = WsolDataset(samples, transform, seed=0)
    cached = WsolDataset(samples, transform, seed=0, cache=cache)
    plain = list(make_loader(decoded, 8, train=True, seed=0, epoch=1, num_workers=0))
    workers = list(make_loader(cached, 8, train=True, seed=0, epoch=1, num_workers=2))
    assert len(plain) == len(workers)
    for first, second in zip(plain, workers, strict=True):
        assert torch.equal(first["image"], second["image"])
        assert torch.equal(first["mask"], second["mask"])
        assert [b.tolist() for b in first["boxes"]] == [b.tolist() for b in second["boxes"]]


def _open_in_process(args) -> list[str]:
    samples, resize, root = args
    messages: list[str] = []
    open_decoded_cache(samples, resize, root, log=messages.append)
    return messages


def test_processes_that_start_together_build_the_cache_once(samples, tmp_path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        results = pool.map(_open_in_process, [(samples, 72, tmp_path)] * 3)
    assert sum(len(messages) for messages in results) == 1
    built = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(built) == 1 and isinstance(DecodedImageCache(built[0]), DecodedImageCache)


def test_collated_cached_batch_matches(samples, tmp_path: Path) -> None:
    cache = open_decoded_cache(samples, 72, tmp_path)
    transform = WsolTransform(72, 64, train=False)
    decoded = WsolDataset(samples, transform, seed=0)
    cached = WsolDataset(samples, transform, seed=0, cache=cache)
    first = collate_samples([decoded[i] for i in range(4)])
    second = collate_samples([cached[i] for i in range(4)])
    assert torch.equal(first["image"], second["image"])
    assert first["image_id"] == second["image_id"]
