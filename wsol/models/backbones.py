"""ResNet backbones from torchvision, shared by the classifier f and the encoder of g."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

_FACTORIES: dict[str, tuple[Callable[..., tv_models.ResNet], tv_models.WeightsEnum]] = {
    "resnet18": (tv_models.resnet18, tv_models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tv_models.resnet34, tv_models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tv_models.resnet50, tv_models.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tv_models.resnet101, tv_models.ResNet101_Weights.IMAGENET1K_V1),
}

BACKBONE_NAMES = tuple(_FACTORIES)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or read."""


def _load_pretrained_state(name: str) -> dict[str, torch.Tensor]:
    weights = _FACTORIES[name][1]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # network, hash or disk errors all mean the same to a user
        raise WeightsUnavailableError(
            f"could not get torchvision's ImageNet weights {weights} for {name} "
            f"({weights.url}): {type(error).__name__}: {error}. "
            f"torchvision caches them in {cache} (set TORCH_HOME to move it); put the file "
            f"there, or set weights_path to a local copy, or set pretrained: false."
        ) from error


def _load_local_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights_path {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsUnavailableError(
            f"weights_path {path} is not a readable torch file: {error}"
        ) from error
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def build_resnet(
    name: str,
    pretrained: bool = False,
    weights_path: Path | None = None,
    small_input_stem: bool = False,
) -> tv_models.ResNet:
    """A torchvision ResNet (with its fc layer, unused by callers).

    ``weights_path`` (a state dict, or a checkpoint with a ``model`` entry) wins over
    ``pretrained``. ``small_input_stem`` replaces the 7x7 stride-2 convolution and the
    max-pool by one 3x3 stride-2 convolution, so 32-96 px inputs keep 4x more spatial
    resolution; pretrained stem weights are then dropped (the rest still loads).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    net = _FACTORIES[name][0](weights=None)
    state = None
    if weights_path is not None:
        state = _load_local_state(Path(weights_path))
    elif pretrained:
        state = _load_pretrained_state(name)
    if state is not None:
        missing, unexpected = net.load_state_dict(state, strict=False)
        relevant_missing = [key for key in missing if not key.startswith("fc.")]
        if relevant_missing or unexpected:
            raise WeightsUnavailableError(
                f"weights for {name} do not match the architecture: missing "
                f"{relevant_missing[:5]}, unexpected {list(unexpected)[:5]}"
            )
    if small_input_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        net.maxpool = nn.Identity()
    return net


def stage_channels(net: tv_models.ResNet) -> tuple[int, int, int, int, int]:
    """Output channels of (stem, layer1, layer2, layer3, layer4)."""

    def last_channels(layer: nn.Sequential) -> int:
        block = layer[-1]
        conv = block.conv3 if hasattr(block, "conv3") else block.conv2
        return conv.out_channels

    return (
        net.conv1.out_channels,
        last_channels(net.layer1),
        last_channels(net.layer2),
        last_channels(net.layer3),
        last_channels(net.layer4),
    )


def resnet_trunk(
    backbone: str, pretrained: bool, weights_path: Path | None, small_input_stem: bool
) -> tuple[nn.Sequential, nn.Sequential, int]:
    """f's trunk: (stem, body = layers 1-4, channels of the last feature map) of
    :func:`build_resnet`, for a head on its globally pooled features."""
    net = build_resnet(backbone, pretrained, weights_path, small_input_stem)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    body = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
    return stem, body, stage_channels(net)[-1]
