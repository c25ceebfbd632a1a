"""The mask generator g: ResNet encoder, five-block U-Net decoder, sigmoid output.

Follows the paper's Architecture paragraph literally: each decoder block upsamples x2,
concatenates the encoder feature map of equal resolution where one exists, then applies
two 3x3 convolutions (padding 1) with batch norm after the second one, before the
activation (ReLU in blocks 1-4, sigmoid in block 5). The paragraph names no activation
between a block's two convolutions, and we add none.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsol.models.backbones import build_resnet, stage_channels

DECODER_CHANNELS = (256, 128, 64, 32, 1)
#: The first convolution of a block keeps at least this many channels (the last block's
#: output is one channel, the mask).
MIN_MID_CHANNELS = 16


def decoder_channels(width: float) -> tuple[int, ...]:
    """The five blocks' output channels at ``width``: DECODER_CHANNELS times ``width``
    (rounded, at least 1), the last block always 1 (the mask)."""
    scaled = [max(1, round(count * width)) for count in DECODER_CHANNELS[:-1]]
    return (*scaled, 1)


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, final: bool, norm: bool = True) -> None:
        super().__init__()
        mid_channels = max(out_channels, MIN_MID_CHANNELS)
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1)
        self.norm: nn.Module = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.activation: nn.Module = nn.Sigmoid() if final else nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.activation(self.norm(self.conv2(self.conv1(x))))


class MaskGenerator(nn.Module):
    """g: images (B,3,H,W), normalised, H and W divisible by 32 -> M (B,1,H,W) in [0,1].

    ``width`` multiplies the channel counts of the encoder (as ``classifier.width`` does
    f's) and of the decoder blocks but the last; anything but 1 trains from scratch.
    ``final_norm: False`` drops the batch norm of the last block (the mask's logits then
    come straight from its convolution): with it, a batch's logits always have the mean
    of its learned shift, so the whole map can only fall below tau as fast as that one
    parameter moves.

    Skip connections: block 1 (H/16) gets layer3, block 2 (H/8) layer2, block 3 (H/4)
    layer1, block 4 (H/2) the stem's output before max-pooling; block 5 (H) has no encoder
    stage of that resolution and gets none.
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        pretrained: bool = False,
        weights_path: Path | None = None,
        width: float = 1.0,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        net = build_resnet(encoder, pretrained, weights_path, width=width)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        stem_ch, ch1, ch2, ch3, ch4 = stage_channels(net)
        skips = (ch3, ch2, ch1, stem_ch, 0)
        blocks = []
        in_channels = ch4
        for index, (skip_channels, out_channels) in enumerate(
            zip(skips, decoder_channels(width), strict=True)
        ):
            final = index == len(DECODER_CHANNELS) - 1
            norm = final_norm or not final
            blocks.append(DecoderBlock(in_channels + skip_channels, out_channels, final, norm))
            in_channels = out_channels
        self.decoder = nn.ModuleList(blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"g needs H and W divisible by 32, got {height}x{width}")
        stem = self.stem(images)
        x1 = self.layer1(self.pool(stem))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x = self.layer4(x3)
        for block, skip in zip(self.decoder, (x3, x2, x1, stem, None), strict=True):
            x = block(x, skip)
        return x
