"""Eq. 1: the terms' values, their switches, and where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsol.losses import l1_regularizer, method1_loss, soft_cross_entropy, weighted_input
from wsol.models import freeze


class LinearClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(images.mean(dim=(2, 3)))


def test_soft_cross_entropy_equals_hand_computed_value() -> None:
    target = torch.tensor([[0.0, math.log(3.0)]])  # pseudo-probabilities (1/4, 3/4)
    logits = torch.tensor([[math.log(2.0), 0.0]])  # log-softmax: log(2/3), log(1/3)
    expected = -(0.25 * math.log(2 / 3) + 0.75 * math.log(1 / 3))
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_cross_entropy_takes_no_gradient_through_the_target() -> None:
    target = torch.randn(4, 3, requires_grad=True)
    logits = torch.randn(4, 3, requires_grad=True)
    soft_cross_entropy(logits, target).backward()
    assert target.grad is None and logits.grad is not None


def test_l1_regularizer_is_the_mean_mask_value() -> None:
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, :2, :2] = 1.0  # 4 of 32 pixels
    assert l1_regularizer(masks).item() == pytest.approx(4 / 32)


def test_weighted_input_normalized_mode_sends_masked_pixels_to_the_mean() -> None:
    images = torch.rand(1, 3, 4, 4)
    masks = torch.zeros(1, 1, 4, 4)
    assert torch.count_nonzero(weighted_input(images, masks, "imagenet", "normalized")) == 0
    raw = weighted_input(images, masks, "imagenet", "raw")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(raw, (0 - mean) / std * torch.ones_like(raw))


def test_weighted_input_with_a_full_mask_is_the_normalised_image() -> None:
    images = torch.rand(2, 3, 8, 8)
    ones = torch.ones(2, 1, 8, 8)
    for mode in ("imagenet", "per_image"):
        assert torch.allclose(
            weighted_input(images, ones, mode, "normalized"),
            weighted_input(images, ones, mode, "raw"),
            atol=1e-6,
        )


def _loss(classifier, masks, **switches):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        target = classifier(weighted_input(images, torch.ones_like(masks), "imagenet", "raw"))
    options = {"lam": 2.0, "use_ce": True, "use_reg": True} | switches
    return method1_loss(
        classifier,
        images,
        masks,
        target,
        normalization="imagenet",
        apply_to="normalized",
        **options,
    )


def test_total_is_ce_plus_lambda_reg_and_switches_drop_a_term() -> None:
    classifier = freeze(LinearClassifier())
    masks = torch.full((2, 1, 8, 8), 0.5)
    both = _loss(classifier, masks)
    assert both.total.item() == pytest.approx(both.ce.item() + 2.0 * both.reg.item())
    no_reg = _loss(classifier, masks, use_reg=False)
    assert no_reg.total.item() == pytest.approx(no_reg.ce.item())
    no_ce = _loss(classifier, masks, use_ce=False)
    assert no_ce.total.item() == pytest.approx(2.0 * no_ce.reg.item())


def test_gradients_reach_the_mask_but_not_the_frozen_classifier() -> None:
    classifier = freeze(LinearClassifier())
    masks = torch.full((2, 1, 8, 8), 0.5, requires_grad=True)
    _loss(classifier, masks, use_reg=False).total.backward()
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    assert all(p.grad is None for p in classifier.parameters())
    assert not classifier.training
