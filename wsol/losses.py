"""The loss of Method I (Eq. 1): D(f(I), f(I*M)) + lambda * R(M)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from wsol.data.transforms import normalization_stats


def weighted_input(
    images: torch.Tensor,
    masks: torch.Tensor,
    normalization: Literal["imagenet", "per_image"],
    apply_to: Literal["normalized", "raw"],
) -> torch.Tensor:
    """I*M as f sees it: images (B,3,H,W) in [0,1], masks (B,1,H,W) in [0,1] -> normalised.

    Both modes normalise with the statistics of the unmasked image, so 'per_image'
    standardisation cannot stretch a mostly-masked image back to full contrast.
    'normalized' multiplies the normalised image: a masked-out pixel becomes the mean
    ('no information'); 'raw' multiplies pixels: a masked-out pixel becomes black.
    """
    mean, std = normalization_stats(images, normalization)
    if apply_to == "normalized":
        return (images - mean) / std * masks
    return (images * masks - mean) / std


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """D of Eq. 1: CE between f's pseudo-probabilities on I (a fixed target) and f(I*M).

    logits, target_logits: (B, num_classes). Returns the batch mean (a scalar).
    """
    return F.cross_entropy(logits, F.softmax(target_logits.detach(), dim=1))


def l1_regularizer(masks: torch.Tensor) -> torch.Tensor:
    """R of Eq. 1: the mean L1 norm of M (B,1,H,W) in [0,1], i.e. its mean value."""
    return masks.abs().mean()


@dataclass
class LossTerms:
    """Eq. 1's terms for one batch; ``total`` is what is minimised."""

    total: torch.Tensor
    ce: torch.Tensor
    reg: torch.Tensor


def method1_loss(
    classifier: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    lam: float,
    use_ce: bool,
    use_reg: bool,
    normalization: Literal["imagenet", "per_image"],
    apply_to: Literal["normalized", "raw"],
) -> LossTerms:
    """Eq. 1 for a batch. ``classifier`` is frozen; gradients flow through it into M.

    images (B,3,H,W) in [0,1]; masks = g(I) (B,1,H,W); target_logits = f(I), computed
    once per batch without gradients by the caller. A switched-off term is still
    reported (for the logs) but contributes nothing to ``total``.
    """
    ce = soft_cross_entropy(
        classifier(weighted_input(images, masks, normalization, apply_to)), target_logits
    )
    reg = l1_regularizer(masks)
    total = masks.new_zeros(())
    if use_ce:
        total = total + ce
    if use_reg:
        total = total + lam * reg
    return LossTerms(total=total, ce=ce, reg=reg)
