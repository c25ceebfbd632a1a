"""The triplet sampler of Method II: positives share the anchor's class, negatives do not,
seeded, and classes of one image are never anchors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.data import WsolDataset, build_transform, read_training_splits
from wsol.triplets import TripletDataset, TripletSampler, collate_triplets

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
