"""Method II's losses against values worked out by hand on tiny embeddings: Eq. 2 (f's
triplet pretraining), L_inner (Eq. 3), L_outer (Eq. 4) and lambda * R(M_a)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsol.losses import (
    batch_hard_triplet_loss,
    euclidean_distance,
    method2_loss,
    triplet_loss,
    triplet_losses,
)


def test_eq2_is_the_hinge_of_the_distance_gap_plus_the_margin() -> None:
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # distances 5 and 2
    negative = torch.tensor([[6.0, 8.0], [1.0, 0.0]])  # distances 10 and 1
    # Row 1: max(5 - 10 + 1, 0) = 0. Row 2: max(2 - 1 + 1, 0) = 2.
    assert triplet_losses(anchor, positive, negative, 1.0).tolist() == pytest.approx([0.0, 2.0])
    assert triplet_loss(anchor, positive, negative, 1.0).item() == pytest.approx(1.0)
    # A margin of 0.5: row 2 gives 2 - 1 + 0.5 = 1.5; row 1 stays 0.
    assert triplet_loss(anchor, positive, negative, 0.5).item() == pytest.approx(0.75)
    # A margin large enough to reach row 1: max(5 - 10 + 6, 0) = 1; row 2: 2 - 1 + 6 = 7.
    assert triplet_losses(anchor, positive, negative, 6.0).tolist() == pytest.approx([1.0, 7.0])


def test_distance_is_euclidean_and_has_a_finite_gradient_at_zero() -> None:
    x = torch.tensor([[1.0, 2.0, 2.0]], requires_grad=True)
    assert euclidean_distance(x, torch.zeros(1, 3)).item() == pytest.approx(3.0)
    same = euclidean_distance(x, x.detach().clone())
    same.sum().backward()
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    assert torch.isfinite(x.grad).all()


# Points on a line, two classes: class 0 at 0, 1, 3; class 1 at 4, 10.
LINE = torch.tensor([[0.0], [1.0], [3.0], [4.0], [10.0]])
LINE_LABELS = torch.tensor([0, 0, 0, 1, 1])


def test_batch_hard_takes_each_anchors_farthest_positive_and_nearest_negative() -> None:
    # Anchor 0: positives at 1, 3 -> 3; negatives at 4, 10 -> 4: max(3 - 4 + 1, 0) = 0.
    # Anchor 1: positives 1, 2 -> 2; negative 3: 2 - 3 + 1 = 0.
    # Anchor 3: positives 3, 2 -> 3; negative 1: 3 - 1 + 1 = 3.
    # Anchor 4: positive 6; negative 1: 6 - 1 + 1 = 6.  Anchor 10: positive 6; negative 7: 0.
    loss = batch_hard_triplet_loss(LINE, LINE_LABELS, 1.0)
    assert loss.item() == pytest.approx((0 + 0 + 3 + 6 + 0) / 5)
    # Margin 2: 1, 1, 4, 7, 1.
    assert batch_hard_triplet_loss(LINE, LINE_LABELS, 2.0).item() == pytest.approx(14 / 5)


def test_batch_hard_leaves_out_anchors_without_a_positive() -> None:
    # Class 2 (the point at 20) is alone in the batch: it has no triplet and is no anchor,
    # but it is a negative of the others (farther than every nearest negative above).
    points = torch.cat([LINE, torch.tensor([[20.0]])])
    labels = torch.cat([LINE_LABELS, torch.tensor([2])])
    assert batch_hard_triplet_loss(points, labels, 1.0).item() == pytest.approx(9 / 5)


def test_batch_hard_gradient_is_finite_and_pulls_the_hardest_pair() -> None:
    points = LINE.clone().requires_grad_(True)
    batch_hard_triplet_loss(points, LINE_LABELS, 1.0).backward()
    assert torch.isfinite(points.grad).all()
    # Anchor 4 (index 3) is pulled toward its positive at 10 and pushed from 3 (index 2):
    # both terms move it to larger x, so its gradient is negative.
    assert points.grad[3, 0] < 0


@pytest.mark.parametrize(
    ("labels", "message"), [([0, 0, 0], "no anchor"), ([0, 1, 2], "no anchor")]
)
def test_batch_hard_refuses_a_batch_without_any_triplet(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batch_hard_triplet_loss(torch.randn(3, 2), torch.tensor(labels), 1.0)


def test_batch_hard_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        batch_hard_triplet_loss(torch.randn(4), torch.tensor([0, 0, 1, 1]), 1.0)


class FirstChannelPixels(nn.Module):
    """A stand-in f: the embedding of a (B,3,1,2) input is its first channel's 2 pixels."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0].flatten(1)


def _image(left: float, right: float) -> torch.Tensor:
    """One (1,3,1,2) image, the same two pixel values in every channel."""
    return (
        torch.tensor([left, right], dtype=torch.float32).view(1, 1, 1, 2).expand(1, 3, 1, 2).clone()
    )


def _mask(left: float, right: float) -> torch.Tensor:
    return torch.tensor([left, right], dtype=torch.float32).view(1, 1, 1, 2).requires_grad_(True)


def _hand_worked_terms(**switches: bool):
    # Per-image standardisation maps pixels (0, 1) to (-1, +1) and (1, 0) to (+1, -1);
    # 'normalized' multiplies the standardised image by the mask.
    image_a, image_p, image_n = _image(0, 1), _image(0, 1), _image(0, 1)
    mask_a, mask_p, mask_n = _mask(1.0, 0.5), _mask(1.0, 1.0), _mask(1.0, 0.0)
    # f(I_a) = (-1, 1).
    anchor_embedding = torch.tensor([[-1.0, 1.0]])
    terms = method2_loss(
        FirstChannelPixels(),
        (image_a, image_p, image_n),
        (mask_a, mask_p, mask_n),
        anchor_embedding,
        lam=2.0,
        use_inner=switches.get("inner", True),
        use_outer=switches.get("outer", True),
        use_reg=switches.get("reg", True),
        margin=1.0,
        normalization="per_image",
        apply_to="normalized",
    )
    return terms, (mask_a, mask_p, mask_n)


# f(J^f_a) = (-1, 0.5), f(J^b_a) = (0, 0.5): L_inner = max(0.5 - sqrt(1.25) + 1, 0).
INNER = 1.5 - math.sqrt(1.25)
# f(J^f_p) = (-1, 1), f(J^f_n) = (-1, 0): L_outer = max(0.5 - 0.5 + 1, 0) = 1.
OUTER = 1.0
# R(M_a) = mean(1, 0.5) = 0.75, weighted by lambda = 2.
REG = 0.75


def test_inner_outer_and_reg_match_the_hand_worked_values() -> None:
    terms, _ = _hand_worked_terms()
    assert terms.inner.item() == pytest.approx(INNER, abs=1e-6)
    assert terms.outer.item() == pytest.approx(OUTER, abs=1e-6)
    assert terms.reg.item() == pytest.approx(REG)
    assert terms.total.item() == pytest.approx(INNER + OUTER + 2.0 * REG, abs=1e-6)


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        ({"reg": False}, INNER + OUTER),
        ({"inner": False}, OUTER + 2.0 * REG),
        ({"outer": False}, INNER + 2.0 * REG),
    ],
)
def test_a_switched_off_term_is_reported_but_not_minimised(
    switches: dict[str, bool], expected: float
) -> None:
    terms, _ = _hand_worked_terms(**switches)
    assert terms.total.item() == pytest.approx(expected, abs=1e-6)
    assert terms.inner.item() == pytest.approx(INNER, abs=1e-6)
    assert terms.outer.item() == pytest.approx(OUTER, abs=1e-6)


def test_gradients_flow_through_f_into_every_mask_of_the_triplet() -> None:
    terms, (mask_a, mask_p, mask_n) = _hand_worked_terms(inner=False, reg=False)
    terms.total.backward()
    # L_outer depends on all three masks: d/dM_p and d/dM_n are non-zero on the right pixel.
    for mask in (mask_a, mask_p, mask_n):
        assert mask.grad is not None and mask.grad.abs().sum() > 0
    # R and L_inner involve M_a only.
    terms, (mask_a, mask_p, mask_n) = _hand_worked_terms(outer=False)
    terms.total.backward()
    assert mask_a.grad.abs().sum() > 0
    assert mask_p.grad is None or mask_p.grad.abs().sum() == 0
    assert mask_n.grad is None or mask_n.grad.abs().sum() == 0
