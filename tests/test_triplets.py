"""The triplet samplers of Method II: positives share the anchor's class, negatives do not,
seeded, and classes of one image are never anchors; the class-balanced batches of
``batch_hard`` hold P classes x K images, cover each class before repeating it, and
reproduce per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.data import WsolDataset, build_transform, read_training_splits
from wsol.triplets import ClassBalancedBatches, TripletDataset, TripletSampler, collate_triplets

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]  # class 3 has a single image


def test_positive_shares_the_anchors_class_and_is_another_image() -> None:
    labels = np.asarray(LABELS)
    for epoch in range(20):
        for anchor, positive, _ in TripletSampler(LABELS, seed=1).triplets(epoch):
            assert labels[positive] == labels[anchor]
            assert positive != anchor


def test_negative_is_of_another_class() -> None:
    labels = np.asarray(LABELS)
    for epoch in range(20):
        for anchor, _, negative in TripletSampler(LABELS, seed=1).triplets(epoch):
            assert labels[negative] != labels[anchor]


def test_same_seed_and_epoch_give_the_same_triplets_other_seeds_or_epochs_differ() -> None:
    sampler = TripletSampler(LABELS, seed=7)
    first = sampler.triplets(3)
    np.testing.assert_array_equal(first, TripletSampler(LABELS, seed=7).triplets(3))
    assert not np.array_equal(first, sampler.triplets(4))
    assert not np.array_equal(first, TripletSampler(LABELS, seed=8).triplets(3))


def test_each_eligible_image_is_an_anchor_per_anchor_times_per_epoch() -> None:
    sampler = TripletSampler(LABELS, seed=0, per_anchor=2)
    anchors = sampler.triplets(0)[:, 0]
    assert len(sampler) == len(anchors) == 2 * 9
    assert sorted(anchors.tolist()) == sorted(2 * list(range(9)))


def test_a_class_with_one_image_is_never_an_anchor_but_is_drawn_as_a_negative() -> None:
    sampler = TripletSampler(LABELS, seed=0)
    assert sampler.singleton_classes == [3]
    rows = np.concatenate([sampler.triplets(epoch) for epoch in range(50)])
    assert 9 not in rows[:, 0] and 9 not in rows[:, 1]
    assert 9 in rows[:, 2]


def test_positives_and_negatives_are_drawn_from_every_candidate() -> None:
    # Uniform draws: over many epochs every other member of the class shows up as positive.
    sampler = TripletSampler(LABELS, seed=0)
    rows = np.concatenate([sampler.triplets(epoch) for epoch in range(200)])
    of_anchor_5 = rows[rows[:, 0] == 5]
    assert set(of_anchor_5[:, 1].tolist()) == {6, 7, 8}
    assert set(of_anchor_5[:, 2].tolist()) == {0, 1, 2, 3, 4, 9}


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 0, 0], "at least 2 classes"), ([0, 1, 2], "at least 2 images")],
)
def test_labels_that_admit_no_triplet_are_refused(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TripletSampler(labels)


def test_triplet_dataset_batches_the_three_roles(synthetic_root) -> None:
    from wsol.config import DataConfig

    data = DataConfig(root=synthetic_root, resize=40, crop=32, normalization="per_image")
    splits = read_training_splits(data)
    dataset = WsolDataset(splits.train, build_transform(data, False))
    triplets = TripletSampler([s.label for s in splits.train], seed=0).triplets(0)[:4]
    batch = collate_triplets([TripletDataset(dataset, triplets)[i] for i in range(4)])
    for role, column in (("anchor", 0), ("positive", 1), ("negative", 2)):
        assert batch[role]["image"].shape == (4, 3, 32, 32)
        expected = torch.tensor([splits.train[i].label for i in triplets[:, column]])
        assert torch.equal(batch[role]["label"], expected)
    assert torch.equal(batch["anchor"]["label"], batch["positive"]["label"])
    assert not (batch["anchor"]["label"] == batch["negative"]["label"]).any()


# Classes of 12, 6 and 3 images and one singleton (class 3, index 21).
BALANCED_LABELS = [0] * 12 + [1] * 6 + [2] * 3 + [3]


def test_class_balanced_batches_hold_p_distinct_classes_of_k_images() -> None:
    sampler = ClassBalancedBatches(BALANCED_LABELS, classes_per_batch=2, images_per_class=3)
    labels = np.asarray(BALANCED_LABELS)
    assert len(sampler) == len(BALANCED_LABELS) // 6 == 3
    for epoch in range(30):
        batches = sampler.batches(epoch)
        assert len(batches) == len(sampler)
        for batch in batches:
            groups = labels[batch].reshape(2, 3)
            assert (groups == groups[:, :1]).all()  # K images of one class, class by class
            assert groups[0, 0] != groups[1, 0]


def test_class_balanced_batches_never_draw_a_class_of_one_image() -> None:
    sampler = ClassBalancedBatches(BALANCED_LABELS, 2, 3)
    assert sampler.singleton_classes == [3]
    drawn = np.concatenate([b for epoch in range(50) for b in sampler.batches(epoch)])
    assert 21 not in drawn


def test_a_class_hands_out_every_image_before_repeating_one() -> None:
    # Class 0 is drawn often: its first 12 draws within an epoch are its 12 images.
    sampler = ClassBalancedBatches([0] * 12 + [1] * 12, 2, 4, seed=3)
    draws = [i for batch in sampler.batches(0) for i in batch.tolist() if i < 12]
    assert len(draws) == 12 and sorted(draws) == list(range(12))


def test_classes_are_drawn_in_proportion_to_their_size() -> None:
    sampler = ClassBalancedBatches([0] * 40 + [1] * 10 + [2] * 10, 2, 2, seed=0)
    labels = np.asarray([0] * 40 + [1] * 10 + [2] * 10)
    drawn = labels[np.concatenate([b for e in range(200) for b in sampler.batches(e)])]
    share = (drawn == 0).mean()
    # Without replacement among 2 of 3 classes, class 0 (2/3 of the images) is in nearly
    # every batch: far above the 1/3 a uniform class draw would give.
    assert share > 0.45


def test_class_balanced_batches_reproduce_per_seed_and_epoch() -> None:
    first = ClassBalancedBatches(BALANCED_LABELS, 2, 3, seed=5).batches(2)
    again = ClassBalancedBatches(BALANCED_LABELS, 2, 3, seed=5).batches(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other_epoch = ClassBalancedBatches(BALANCED_LABELS, 2, 3, seed=5).batches(3)
    other_seed = ClassBalancedBatches(BALANCED_LABELS, 2, 3, seed=6).batches(2)
    for other in (other_epoch, other_seed):
        assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    ("labels", "p", "k", "message"),
    [
        ([0, 0, 1, 1], 1, 2, "at least 2 classes"),
        ([0, 0, 1, 1], 2, 1, "at least 2 images a class"),
        ([0, 0, 1, 2], 2, 2, "need 2 classes of at least 2 images, got 1"),
        ([0, 0, 1, 1, 2, 2], 3, 4, "do not fill one batch"),
    ],
)
def test_class_balanced_batches_refuse_labels_that_cannot_fill_a_batch(
    labels: list[int], p: int, k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ClassBalancedBatches(labels, p, k)
