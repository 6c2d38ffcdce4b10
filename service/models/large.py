"""``espcn-large``: a deeper, wider sub-pixel network for users who can spend more compute.

Same principle as ESPCN: every convolution runs in low-resolution space and a PixelShuffle
head makes the HR image. What it adds, each for quality per multiply-add:
- depth and width (3x3 convolutions of ``width`` channels) with ReLU, which train faster than
  tanh at depth;
- local residual connections between pairs of layers, so the deep stack trains on a CPU budget;
- a global skip: the head predicts the detail missing from a bicubic upscale of the input,
  which costs no multiply-adds worth counting and lets the network spend capacity on edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from service.imaging.borders import crop_borders
from service.models.valid import (
    BICUBIC_MACS_PER_OUTPUT_PIXEL,
    BICUBIC_RADIUS,
    bicubic_base,
    bicubic_base_valid,
    bicubic_kernel,
    unpadded,
)


class _ResidualPair(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """Unpadded: two pixels off every side, the skip cut to match."""
        return crop_borders(x, 2) + unpadded(self.conv2, F.relu(unpadded(self.conv1, x)))


class ESPCNLarge(nn.Module):
    """conv5x5(width), ReLU, ``blocks`` residual pairs of conv3x3(width), conv3x3(r*r), PixelShuffle,
    plus bicubic(input).

    Args:
        scale: upscaling factor r.
        width: channels of the hidden layers.
        blocks: residual pairs (each two 3x3 convolutions).
    """

    def __init__(self, scale: int, width: int = 48, blocks: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.head_in = nn.Conv2d(1, width, 5, padding=2)
        self.body = nn.Sequential(*(_ResidualPair(width) for _ in range(blocks)))
        self.head_out = nn.Conv2d(width, scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        # LR receptive radius: 2 (5x5) + 2 per pair + 1 (head); bicubic's 2 is inside that.
        self.halo = 2 + 2 * blocks + 1
        # Not in the state dict: derived from the scale, like the PixelShuffle.
        self.register_buffer("bicubic_kernel", bicubic_kernel(scale), persistent=False)
        self.extra_macs_per_lr_pixel = BICUBIC_MACS_PER_OUTPUT_PIXEL * scale * scale

    def features(self, y: torch.Tensor) -> torch.Tensor:
        return self.body(F.relu(self.head_in(y)))

    def last_layer(self) -> nn.Conv2d:
        return self.head_out

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, 1, rH, rW)."""
        detail = self.shuffle(self.head_out(self.features(y)))
        return bicubic_base(y, self.scale) + detail

    def forward_valid(self, y: torch.Tensor) -> torch.Tensor:
        """The centre of ``forward`` (service.models.valid)."""
        h = F.relu(unpadded(self.head_in, y))
        for pair in self.body:
            h = pair.forward_valid(h)
        detail = self.shuffle(unpadded(self.head_out, h))
        base = bicubic_base_valid(y, self.bicubic_kernel)
        return crop_borders(base, (self.halo - BICUBIC_RADIUS) * self.scale) + detail
