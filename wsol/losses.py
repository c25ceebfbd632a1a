"""The losses: Method I (Eq. 1): D(f(I), f(I*M)) + lambda * R(M); Method II: the triplet
loss of Eq. 2 (f's pretraining) and L_inner (Eq. 3) + L_outer (Eq. 4) + lambda * R(M_a)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from wsol.data.transforms import normalization_stats

Number = TypeVar("Number", torch.Tensor, float)


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
    normalized: torch.Tensor | None = None,
) -> LossTerms:
    """Eq. 1 for a batch. ``classifier`` is frozen; gradients flow through it into M.

    images (B,3,H,W) in [0,1]; masks = g(I) (B,1,H,W); target_logits = f(I), computed
    once per batch without gradients by the caller. ``normalized``: the caller's
    ``normalize(images, normalization)``, if it has it; with ``apply_to: normalized``
    I*M is then ``normalized * masks`` (the same numbers :func:`weighted_input` computes,
    without normalising the batch a second time). f's logits are taken in fp32, so the
    loss is fp32 under bf16 autocast too. A switched-off term is still reported (for the
    logs) but contributes nothing to ``total``.
    """
    if normalized is not None and apply_to == "normalized":
        masked = normalized * masks
    else:
        masked = weighted_input(images, masks, normalization, apply_to)
    ce = soft_cross_entropy(classifier(masked).float(), target_logits.float())
    reg = l1_regularizer(masks)
    total = masks.new_zeros(())
    if use_ce:
        total = total + ce
    if use_reg:
        total = total + lam * reg
    return LossTerms(total=total, ce=ce, reg=reg)


# --------------------------------------------------------------------------- Method II


def euclidean_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distance ||x - y|| of (B, D) embeddings -> (B,).

    The squared distance is clamped at 1e-12 before the square root, so identical rows
    give 1e-6 and a finite (zero) gradient instead of NaN.
    """
    return (x - y).pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()


def triplet_losses(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """max(||a - p|| - ||a - n|| + margin, 0) per triplet: (B, D) x 3 -> (B,).

    Eq. 2 with margin 1 (f's pretraining); Eq. 3 and 4 are this with other arguments.
    """
    return F.relu(
        euclidean_distance(anchor, positive) - euclidean_distance(anchor, negative) + margin
    )


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """The batch mean of :func:`triplet_losses` (a scalar): Eq. 2."""
    return triplet_losses(anchor, positive, negative, margin).mean()


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Eq. 2 with each anchor's hardest triplet in the batch (Hermans et al., 2017, "In
    Defense of the Triplet Loss"), a scalar.

    ``embeddings`` (N, D), ``labels`` (N,). Every image is an anchor; its positive is the
    farthest *other* image of its class, its negative the nearest image of another class::

        mean over anchors a of max(max_p ||a - p|| - min_n ||a - n|| + margin, 0)

    An anchor with no other image of its class, or no image of another class, in the batch
    has no triplet and is left out of the mean. Raises ValueError when no anchor has one
    (the batch sampler is then wrong: see :class:`wsol.triplets.ClassBalancedBatches`).
    Distances as :func:`euclidean_distance` (finite gradients at 0).
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings must be (N, D) and labels (N,), got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}"
        )
    distances = euclidean_distance(embeddings[:, None, :], embeddings[None, :, :])
    same = labels[:, None] == labels[None, :]
    other_image = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & other_image
    negative = ~same
    has_triplet = positive.any(dim=1) & negative.any(dim=1)
    if not bool(has_triplet.any()):
        raise ValueError(
            f"no anchor of the batch has a triplet: labels {labels.tolist()} need a class "
            "with two images and a second class"
        )
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(~negative, float("inf")).amin(dim=1)
    losses = F.relu(hardest_positive - hardest_negative + margin)
    return losses[has_triplet].mean()


def normalized_softmax_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, scale: float
) -> torch.Tensor:
    """Cross-entropy over cosine similarities to one learned proxy a class (Zhai & Wu,
    2019, "Classification is a Strong Baseline for Deep Metric Learning"), a scalar.

    ``embeddings`` (N, D), ``labels`` (N,) in [0, C), ``proxies`` (C, D)::

        CE(scale * cos(embedding_i, proxy_c) over c, label_i)

    Both sides are scaled to unit length here, so the loss reads only directions: it
    trains the embedding that Eq. 2-4 then measure. ``scale`` (> 0) is the inverse
    temperature: cosines lie in [-1, 1], so without it the softmax stays near uniform.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings must be (N, D) and labels (N,), got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if proxies.ndim != 2 or proxies.shape[1] != embeddings.shape[1]:
        raise ValueError(f"proxies must be (C, {embeddings.shape[1]}), got {tuple(proxies.shape)}")
    cosines = F.normalize(embeddings, dim=1) @ F.normalize(proxies, dim=1).T
    return F.cross_entropy(scale * cosines, labels)


@dataclass
class Method2Terms:
    """Method II's terms for one batch; ``total`` is what is minimised (batch means)."""

    total: torch.Tensor
    inner: torch.Tensor
    outer: torch.Tensor
    reg: torch.Tensor


def method2_loss(
    embedding: nn.Module,
    images: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    masks: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    anchor_embedding: torch.Tensor,
    *,
    lam: float,
    use_inner: bool,
    use_outer: bool,
    use_reg: bool,
    margin: float,
    normalization: Literal["imagenet", "per_image"],
    apply_to: Literal["normalized", "raw"],
) -> Method2Terms:
    """L_inner (Eq. 3) + L_outer (Eq. 4) + lam * R(M_a) for a batch of triplets.

    ``embedding`` is f, frozen; gradients flow through it into the masks.
    ``images`` = (I_a, I_p, I_n), each (B,3,H,W) in [0,1]; ``masks`` = (g(I_a), g(I_p),
    g(I_n)), each (B,1,H,W); ``anchor_embedding`` = f(I_a) (B, D), computed without
    gradients by the caller. J^f_x = g(I_x) * I_x and J^b_x = (1 - g(I_x)) * I_x, both as
    :func:`weighted_input` makes them (``apply_to``)::

        L_inner = max(||f(I_a) - f(J^f_a)|| - ||f(I_a) - f(J^b_a)|| + margin, 0)
        L_outer = max(||f(J^f_a) - f(J^f_p)|| - ||f(J^f_a) - f(J^f_n)|| + margin, 0)
        R(M_a)  = mean of M_a

    A switched-off term is still reported (for the logs) but adds nothing to ``total``.
    f embeds the four masked batches in one call (it is in eval mode, so this equals four
    calls).
    """
    image_a, image_p, image_n = images
    mask_a, mask_p, mask_n = masks
    batch = len(image_a)
    inputs = torch.cat(
        [
            weighted_input(image_a, mask_a, normalization, apply_to),
            weighted_input(image_a, 1.0 - mask_a, normalization, apply_to),
            weighted_input(image_p, mask_p, normalization, apply_to),
            weighted_input(image_n, mask_n, normalization, apply_to),
        ]
    )
    # fp32 embeddings, so the distances are fp32 under bf16 autocast too (no-op in fp32).
    fore_a, back_a, fore_p, fore_n = embedding(inputs).float().split(batch)
    target = anchor_embedding.detach().float()
    inner = triplet_loss(target, fore_a, back_a, margin)
    outer = triplet_loss(fore_a, fore_p, fore_n, margin)
    reg = l1_regularizer(mask_a)
    total = method2_total(
        mask_a.new_zeros(()),
        inner,
        outer,
        reg,
        lam=lam,
        use_inner=use_inner,
        use_outer=use_outer,
        use_reg=use_reg,
    )
    return Method2Terms(total=total, inner=inner, outer=outer, reg=reg)


def method2_total(
    zero: Number,
    inner: Number,
    outer: Number,
    reg: Number,
    *,
    lam: float,
    use_inner: bool,
    use_outer: bool,
    use_reg: bool,
) -> Number:
    """What Method II minimises: ``zero`` + the switched-on terms of L_inner + L_outer +
    lam * R, for tensors (a step) or floats (a validation pass's means) alike."""
    total = zero
    if use_inner:
        total = total + inner
    if use_outer:
        total = total + outer
    if use_reg:
        total = total + lam * reg
    return total
