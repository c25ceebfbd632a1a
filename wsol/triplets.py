"""Triplets for Method II: (anchor, positive of the anchor's class, negative of another).

:class:`TripletSampler` draws them as dataset indices, seeded; :class:`TripletDataset`
turns a list of them into items for a DataLoader (three :class:`~wsol.data.WsolDataset`
items each), and :func:`collate_triplets` batches them.

Sampling (``random``, the default and so far the only strategy): each epoch, every
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
