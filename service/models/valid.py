"""The served form of a network: every convolution unpadded, only the outputs serving keeps.

Serving extends a plane's borders by the network's halo (``imaging.borders``) and cuts it into
windows that carry ``halo`` LR pixels of context on every side (``serving.tiling``); of each
window's output it keeps the centre, whose receptive field lies inside the window. A
convolution without padding computes exactly those outputs and no others, so each network's
``forward_valid`` maps an (N, 1, h, w) window to the centre of its ``forward``, (N, 1,
(h - 2 halo) r, (w - 2 halo) r), with the same arithmetic (equal to the bit on ONNX Runtime
here). What it does not compute is the rim the old zero-padded form computed and threw away:
for a 128x128 image (one 136x136 window) that was 11 % of ESPCN x3's time on ONNX Runtime
(40.8 against 36.4 ms a batch of four on one thread; ``python -m benchmarks.network`` times
every model both ways). Nothing outside the
window can reach a kept output either, which is why a canvas that mixes window sizes needs no
validity mask: what lies beyond a smaller window only feeds outputs that are thrown away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def unpadded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` without its padding: each side shrinks by the kernel's radius."""
    return F.conv2d(x, conv.weight, conv.bias)


def bicubic_base(y: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic upscale the residual networks (ecbsr, espcn-large) add their detail to; its
    radius, 2, lies inside their halo, so the served form crops it like the detail."""
    return F.interpolate(y, scale_factor=scale, mode="bicubic", align_corners=False)
