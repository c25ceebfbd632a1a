"""DataLoaders whose batches depend only on the seed and the epoch.

So a run resumed at epoch k sees exactly the batches an uninterrupted run would, and the
same trial twice gives the same per-epoch S-scores on CPU. Workers and pinned memory
follow :mod:`wsol.compute` (``data.num_workers: auto``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsol.compute import pins_memory, resolve_num_workers
from wsol.config import RunConfig
from wsol.data import WsolDataset, collate_samples
from wsol.triplets import TripletDataset, collate_triplets


def make_loader(
    dataset: WsolDataset,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    num_workers: int | str,
    device: torch.device | None = None,
) -> DataLoader:
    """Batches of ``dataset``, shuffled by ``(seed, epoch)`` when ``train`` (the last
    partial batch dropped), in order otherwise; the dataset's augmentation is set to
    ``epoch``. ``num_workers``: a count or ``"auto"``
    (:func:`wsol.compute.resolve_num_workers`, sized to the CPU share for ``device``);
    batches are pinned when ``device`` is CUDA."""
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size,
        generator=generator,
        num_workers=resolve_num_workers(num_workers, device),
        collate_fn=collate_samples,
        persistent_workers=False,
        pin_memory=pins_memory(device),
    )


def make_eval_loader(
    dataset: WsolDataset, batch_size: int, config: RunConfig, device: torch.device
) -> DataLoader:
    """Batches of ``dataset`` in order, for a validation or test pass (its eval transform
    decides the crops); workers and pinning as :func:`make_loader`."""
    return make_loader(
        dataset,
        batch_size,
        train=False,
        seed=0,
        epoch=0,
        num_workers=config.data.num_workers,
        device=device,
    )


def make_triplet_loader(
    dataset: WsolDataset,
    triplets: np.ndarray,
    batch_size: int,
    *,
    epoch: int,
    num_workers: int | str,
    device: torch.device | None = None,
) -> DataLoader:
    """Batches of ``triplets`` (N, 3) dataset indices, already in a seeded random order
    (:class:`wsol.triplets.TripletSampler`), with ``dataset``'s augmentation of ``epoch``;
    a batch holds ``batch_size`` triplets, so 3 x ``batch_size`` images. Workers and
    pinning as :func:`make_loader`."""
    dataset.set_epoch(epoch)
    return DataLoader(
        TripletDataset(dataset, triplets),
        batch_size=batch_size,
        shuffle=False,
        drop_last=len(triplets) > batch_size,
        num_workers=resolve_num_workers(num_workers, device),
        collate_fn=collate_triplets,
        persistent_workers=False,
        pin_memory=pins_memory(device),
    )


def make_batch_loader(
    dataset: WsolDataset,
    batches: Sequence[np.ndarray],
    *,
    epoch: int,
    num_workers: int | str,
    device: torch.device | None = None,
) -> DataLoader:
    """The given ``batches`` (arrays of dataset indices, already drawn by a seeded sampler
    such as :class:`wsol.triplets.ClassBalancedBatches`), in order, with ``dataset``'s
    augmentation of ``epoch``. Workers and pinning as :func:`make_loader`."""
    dataset.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_sampler=[batch.tolist() for batch in batches],
        num_workers=resolve_num_workers(num_workers, device),
        collate_fn=collate_samples,
        persistent_workers=False,
        pin_memory=pins_memory(device),
    )
