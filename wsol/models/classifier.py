"""The classifier f of Method I: ResNet backbone, global average pool, one FC layer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from wsol.models.backbones import resnet_trunk


class Classifier(nn.Module):
    """f: images (B,3,H,W), already normalised -> logits (B, num_classes).

    ``features`` gives the last feature map (B,K,h,w) that CAM weighs with ``fc``.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights_path: Path | None = None,
        small_input_stem: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.stem, self.body, self.feature_dim = resnet_trunk(
            backbone, pretrained, weights_path, small_input_stem, width
        )
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(images).mean(dim=(2, 3)))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients; gradients still flow through to its input."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
