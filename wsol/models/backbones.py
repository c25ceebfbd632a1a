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
#: torchvision's ResNet channel counts of the stem and layers 1-4 (before a block's expansion).
RESNET_WIDTHS = (64, 128, 256, 512)


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


def _rescale_widths(net: tv_models.ResNet, width: float) -> tv_models.ResNet:
    """``net`` rebuilt with every channel count of RESNET_WIDTHS times ``width`` (rounded,
    at least 1): the same blocks per layer, freshly initialised as torchvision does."""
    block = type(net.layer1[0])
    blocks = [len(layer) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    channels = [max(1, round(count * width)) for count in RESNET_WIDTHS]
    net.inplanes, net.dilation = channels[0], 1
    net.conv1 = nn.Conv2d(3, channels[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = net._norm_layer(channels[0])
    net.layer1 = net._make_layer(block, channels[0], blocks[0])
    net.layer2 = net._make_layer(block, channels[1], blocks[1], stride=2)
    net.layer3 = net._make_layer(block, channels[2], blocks[2], stride=2)
    net.layer4 = net._make_layer(block, channels[3], blocks[3], stride=2)
    net.fc = nn.Linear(channels[3] * block.expansion, net.fc.out_features)
    for module in net.modules():  # torchvision's ResNet.__init__ initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return net


def build_resnet(
    name: str,
    pretrained: bool = False,
    weights_path: Path | None = None,
    small_input_stem: bool = False,
    width: float = 1.0,
) -> tv_models.ResNet:
    """A torchvision ResNet (with its fc layer, unused by callers).

    ``weights_path`` (a state dict, or a checkpoint with a ``model`` entry) wins over
    ``pretrained``. ``small_input_stem`` replaces the 7x7 stride-2 convolution and the
    max-pool by one 3x3 stride-2 convolution, so 32-96 px inputs keep 4x more spatial
    resolution; pretrained stem weights are then dropped (the rest still loads).
    ``width`` multiplies every channel count (:data:`RESNET_WIDTHS`); anything but 1 is
    for training from scratch (no ``pretrained``, no ``weights_path``: ValueError).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    if width != 1.0 and (pretrained or weights_path is not None):
        raise ValueError(
            f"width={width:g} does not fit {name}'s pretrained weights; use width 1 or train "
            "from scratch (pretrained false, no weights_path)"
        )
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width:g}")
    net = _FACTORIES[name][0](weights=None)
    if width != 1.0:
        net = _rescale_widths(net, width)
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
        stem = net.conv1.out_channels
        net.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
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
    backbone: str,
    pretrained: bool,
    weights_path: Path | None,
    small_input_stem: bool,
    width: float = 1.0,
) -> tuple[nn.Sequential, nn.Sequential, int]:
    """f's trunk: (stem, body = layers 1-4, channels of the last feature map) of
    :func:`build_resnet`, for a head on its globally pooled features."""
    net = build_resnet(backbone, pretrained, weights_path, small_input_stem, width)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    body = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
    return stem, body, stage_channels(net)[-1]
