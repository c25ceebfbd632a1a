"""Triplets for Method II: (anchor, positive of the anchor's class, negative of another).

:class:`TripletSampler` draws them as dataset indices, seeded; :class:`TripletDataset`
turns a list of them into items for a DataLoader (three :class:`~wsol.data.WsolDataset`
items each), and :func:`collate_triplets` batches them.

Sampling ``random`` (the default, the paper's Eq. 2 as written): each epoch, every
eligible image is an anchor ``per_anchor`` times, in an order shuffled by
``np.random.default_rng([seed, epoch])``; its positive is drawn uniformly from the *other*
images of its class, its negative uniformly from all images of the other classes. So the
same (labels, seed, epoch) gives the same triplets, a resumed run sees the triplets an
uninterrupted one would, and every epoch sees new pairings.

Classes with one image: that image is never an anchor, since no *other* image shares its
class (pairing it with itself would make Eq. 2's positive distance 0, a triplet that
teaches nothing about the class); it is still drawn as a negative for the other classes.
:attr:`TripletSampler.singleton_classes` lists such classes. The sampler refuses labels
with fewer than two classes, or with no class of at least two images (no triplet exists).

Sampling ``batch_hard`` (ours, for f only): :class:`ClassBalancedBatches` draws batches
of P classes x K images, and :func:`wsol.losses.batch_hard_triplet_loss` takes each
anchor's hardest positive and negative within the batch. Each image is embedded once per
batch instead of once per triplet role (a third of ``random``'s forward passes), and no
step is spent on triplets the margin already satisfies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from wsol.data import WsolDataset, collate_samples

#: The images of one triplet, in the order Eq. 2-4 name them.
TRIPLET_ROLES = ("anchor", "positive", "negative")


class TripletSampler:
    """Seeded random triplets ``(anchor, positive, negative)`` of indices into ``labels``.

    See the module docstring for what is drawn; :meth:`triplets` gives one epoch's.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, per_anchor: int = 1) -> None:
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if per_anchor < 1:
            raise ValueError(f"per_anchor must be >= 1, got {per_anchor}")
        self.seed = seed % 2**64
        self.per_anchor = per_anchor
        classes, counts = np.unique(self.labels, return_counts=True)
        if len(classes) < 2:
            raise ValueError(
                f"triplets need images of at least 2 classes (a negative must exist), got "
                f"{len(classes)} class(es) in {len(self.labels)} images"
            )
        if counts.max() < 2:
            raise ValueError(
                f"triplets need a class with at least 2 images (a positive other than the "
                f"anchor), but all {len(classes)} classes have one image each"
            )
        self.members: dict[int, np.ndarray] = {
            int(label): np.flatnonzero(self.labels == label) for label in classes
        }
        self.others: dict[int, np.ndarray] = {
            int(label): np.flatnonzero(self.labels != label) for label in classes
        }
        self.singleton_classes: list[int] = [
            int(label) for label, count in zip(classes, counts, strict=True) if count == 1
        ]
        self.anchors = np.flatnonzero(np.isin(self.labels, classes[counts >= 2]))

    def __len__(self) -> int:
        """Triplets per epoch."""
        return len(self.anchors) * self.per_anchor

    def triplets(self, epoch: int = 0) -> np.ndarray:
        """This epoch's triplets: (len(self), 3) int64 rows of (anchor, positive, negative)."""
        rng = np.random.default_rng([self.seed, epoch])
        anchors = rng.permutation(np.repeat(self.anchors, self.per_anchor))
        rows = np.empty((len(anchors), 3), dtype=np.int64)
        for row, anchor in enumerate(anchors):
            label = int(self.labels[anchor])
            members = self.members[label]
            # Uniform over the class's other images: draw among n - 1 slots, skip the anchor.
            slot = int(rng.integers(len(members) - 1))
            if members[slot] == anchor:
                slot = len(members) - 1
            others = self.others[label]
            rows[row] = (anchor, members[slot], others[int(rng.integers(len(others)))])
        return rows


class ClassBalancedBatches:
    """Seeded batches of ``classes_per_batch`` (P) classes x ``images_per_class`` (K) images,
    as dataset indices into ``labels``, for the batch-hard triplet loss.

    An epoch has ``len(labels) // (P * K)`` batches (the same every epoch, so per-step
    schedules can count them). For each batch, P distinct classes are drawn without
    replacement with probability proportional to their size, so an image is drawn about
    once an epoch whatever its class's size; each class hands out its images in an order
    shuffled once per epoch, starting again (reshuffled) when it runs out, so no image of a
    class repeats before all of them have been drawn. Everything is drawn by
    ``np.random.default_rng([seed, epoch])``.

    A class with one image has no positive and is never drawn (listed in
    :attr:`singleton_classes`); fewer than P classes of at least two images, or fewer than
    P * K labels, are refused.
    """

    def __init__(
        self, labels: Sequence[int], classes_per_batch: int, images_per_class: int, seed: int = 0
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if classes_per_batch < 2:
            raise ValueError(
                f"a batch needs at least 2 classes (a negative must exist), got "
                f"classes_per_batch={classes_per_batch}"
            )
        if images_per_class < 2:
            raise ValueError(
                f"a batch needs at least 2 images a class (a positive must exist), got "
                f"images_per_class={images_per_class}"
            )
        self.classes_per_batch = classes_per_batch
        self.images_per_class = images_per_class
        self.seed = seed % 2**64
        classes, counts = np.unique(self.labels, return_counts=True)
        self.singleton_classes: list[int] = [int(c) for c in classes[counts == 1]]
        eligible = classes[counts >= 2]
        if len(eligible) < classes_per_batch:
            raise ValueError(
                f"batches of {classes_per_batch} classes need {classes_per_batch} classes of "
                f"at least 2 images, got {len(eligible)} (of {len(classes)} classes in "
                f"{len(self.labels)} images); lower classifier.batch_size or raise "
                "classifier.triplet_images_per_class"
            )
        self.members: dict[int, np.ndarray] = {
            int(label): np.flatnonzero(self.labels == label) for label in eligible
        }
        self.batches_per_epoch = len(self.labels) // (classes_per_batch * images_per_class)
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{len(self.labels)} images do not fill one batch of {classes_per_batch} "
                f"classes x {images_per_class} images"
            )

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.batches_per_epoch

    def batches(self, epoch: int = 0) -> list[np.ndarray]:
        """This epoch's batches: ``len(self)`` int64 arrays of P * K dataset indices, K of
        each of P distinct classes, class by class."""
        rng = np.random.default_rng([self.seed, epoch])
        classes = np.array(sorted(self.members))
        sizes = np.array([len(self.members[c]) for c in classes], dtype=np.float64)
        orders = {c: rng.permutation(self.members[c]) for c in classes.tolist()}
        cursors = dict.fromkeys(orders, 0)
        result = []
        for _ in range(self.batches_per_epoch):
            chosen = rng.choice(
                classes, size=self.classes_per_batch, replace=False, p=sizes / sizes.sum()
            )
            batch = []
            for label in chosen.tolist():
                for _ in range(self.images_per_class):
                    if cursors[label] == len(orders[label]):
                        orders[label] = rng.permutation(self.members[label])
                        cursors[label] = 0
                    batch.append(orders[label][cursors[label]])
                    cursors[label] += 1
            result.append(np.asarray(batch, dtype=np.int64))
        return result


class TripletDataset(Dataset[dict[str, Any]]):
    """Items ``{"anchor", "positive", "negative"}``: the three :class:`WsolDataset` items of
    one triplet (each with its own seeded augmentation, as ``dataset`` draws it)."""

    def __init__(self, dataset: WsolDataset, triplets: np.ndarray) -> None:
        self.dataset = dataset
        self.triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        anchor, positive, negative = (int(i) for i in self.triplets[index])
        return {
            "anchor": self.dataset[anchor],
            "positive": self.dataset[positive],
            "negative": self.dataset[negative],
        }


def collate_triplets(batch: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Batch triplet items: each role collated by :func:`wsol.data.collate_samples`."""
    return {role: collate_samples([item[role] for item in batch]) for role in TRIPLET_ROLES}


def validation_triplets(labels: Sequence[int]) -> np.ndarray | None:
    """Fixed triplets over the validation split's ``labels`` (seed 0, epoch 0), the same
    every epoch and run, for the triplet losses' validation values; None when the split
    admits none (fewer than 2 classes, or no class with 2 images)."""
    try:
        return TripletSampler(labels, seed=0).triplets(0)
    except ValueError:
        return None
