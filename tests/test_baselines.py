"""CAM: normalised to [0,1], follows the FC weights of the requested class."""

from __future__ import annotations

import torch

from wsol.baselines import class_activation_maps
from wsol.models import Classifier


def test_cam_is_in_unit_range_at_input_size() -> None:
    torch.manual_seed(0)
    classifier = Classifier(3, "resnet18", small_input_stem=True).eval()
    cams = class_activation_maps(classifier, torch.randn(2, 3, 64, 64), torch.tensor([0, 2]))
    assert cams.shape == (2, 64, 64)
    assert cams.min() >= 0 and cams.max() <= 1
    assert torch.isclose(cams.flatten(1).max(1).values, torch.ones(2)).all()


def test_cam_peaks_where_the_class_evidence_is() -> None:
    classifier = Classifier(2, "resnet18").eval()

    # Replace the trunk by an identity-like map so CAM is predictable: channel 0 lights up
    # the left half, channel 1 the right half; class k weighs channel k.
    def features(images: torch.Tensor) -> torch.Tensor:
        maps = torch.zeros(images.shape[0], 512, 4, 4)
        maps[:, 0, :, :2] = 1.0
        maps[:, 1, :, 2:] = 1.0
        return maps

    classifier.features = features  # type: ignore[method-assign]
    with torch.no_grad():
        classifier.fc.weight.zero_()
        classifier.fc.weight[0, 0] = 1.0
        classifier.fc.weight[1, 1] = 1.0
    cams = class_activation_maps(classifier, torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))
    assert cams[0, :, :8].mean() > 0.9 and cams[0, :, 24:].mean() < 0.1
    assert cams[1, :, 24:].mean() > 0.9 and cams[1, :, :8].mean() < 0.1


def test_constant_cam_becomes_all_zeros() -> None:
    classifier = Classifier(2, "resnet18").eval()
    with torch.no_grad():
        classifier.fc.weight.zero_()
    cams = class_activation_maps(classifier, torch.randn(1, 3, 32, 32), torch.tensor([1]))
    assert torch.count_nonzero(cams) == 0
