"""The served form of a network: every convolution unpadded, only the outputs serving keeps.

Serving extends a plane's borders by the network's halo (``imaging.borders``) and cuts it into
windows that carry ``halo`` LR pixels of context on every side (``serving.tiling``); of each
window's output it keeps the centre, whose receptive field lies inside the window. A
convolution without padding computes exactly those outputs and no others, so each network's
``forward_valid`` maps an (N, 1, h, w) window to the centre of its ``forward``, (N, 1,
(h - 2 halo) r, (w - 2 halo) r), with the same convolutions (equal to the bit on ONNX Runtime
here; the residual networks' bicubic base and ecbsr's exported PReLU are the same maps in a
form ONNX Runtime runs faster, equal within 4e-6). What it does not compute is the rim the old zero-padded form computed and threw away:
for a 128x128 image (one 136x136 window) that was 11 % of ESPCN x3's time on ONNX Runtime
(40.8 against 36.4 ms a batch of four on one thread; ``python -m benchmarks.network`` times
every model both ways). Nothing outside the
window can reach a kept output either, which is why a canvas that mixes window sizes needs no
validity mask: what lies beyond a smaller window only feeds outputs that are thrown away.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def unpadded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` without its padding: each side shrinks by the kernel's radius."""
    return F.conv2d(x, conv.weight, conv.bias)


def prelu(x: torch.Tensor, act: nn.PReLU) -> torch.Tensor:
    """``act(x)`` (one slope a per channel), exported to ONNX as relu(x) (1 - a) + x a.

    ONNX Runtime's blocked CPU layout (NCHWc) has no PRelu: each one took its tensor out of the
    layout and back (a reorder either side), and ecbsr x3 spent 46 of its 220 ms a batch in PRelu
    with the reorders beside it. Per-channel products it turns into 1x1 depthwise convolutions
    inside the layout, with the sum folded into the second: a 16-channel stack of nine such
    layers ran in 48 instead of 100 ms, a 40-channel one in 415 instead of 493 (one thread, this
    CPU). The two forms agree within 3e-8; torch eager keeps its one-pass PReLU."""
    if not torch.onnx.is_in_onnx_export():
        out: torch.Tensor = act(x)
        return out
    a = act.weight.view(1, -1, 1, 1)
    return F.relu(x) * (1 - a) + x * a


def bicubic_base(y: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic upscale the residual networks (ecbsr, espcn-large) add their detail to, in
    their training form (borders clamped, as F.interpolate does)."""
    return F.interpolate(y, scale_factor=scale, mode="bicubic", align_corners=False)


# The taps a bicubic output phase reads lie within 2 LR pixels of its source pixel.
BICUBIC_RADIUS = 2
# torch's bicubic reads 4 x 4 LR pixels per output pixel: the multiply-adds the cards count for
# a bicubic base (the served 5x5 phases also multiply the zero taps around them, 25).
BICUBIC_MACS_PER_OUTPUT_PIXEL = 16


def bicubic_base_valid(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The centre of :func:`bicubic_base`, served: (N, 1, h, w) -> (N, 1, (h - 4) r, (w - 4) r),
    the outputs whose taps all lie inside the window (so no border clamping is involved).

    One 5x5 convolution to r² phase channels (``kernel``, from :func:`bicubic_kernel`) and a
    PixelShuffle: the same linear map as F.interpolate's. ONNX Runtime's cubic Resize took
    longer than ecbsr's whole convolution stack (82 against 81 ms of 220 for a batch of four
    128x128 windows at x3, one thread, in its profiler); as a convolution it is one more small
    layer, like the network's own."""
    scale = math.isqrt(kernel.shape[0])
    return F.pixel_shuffle(F.conv2d(y, kernel), scale)


def bicubic_kernel(scale: int) -> torch.Tensor:
    """(r², 1, 5, 5) float32: for output phase (i, j), the weights F.interpolate gives the 5x5
    LR pixels around its source pixel. Read off F.interpolate's answer to an impulse, so the two
    cannot disagree on the cubic's coefficient (torch's A = -0.75) or the half-pixel centres.
    Each phase has at most 4x4 non-zero taps (the model cards count those 16 multiply-adds an
    output pixel). The modules hold it as a buffer made at construction: computed inside an ONNX
    export, the impulse's Resize would be traced into the graph."""
    r, side = scale, 4 * BICUBIC_RADIUS + 1
    centre = side // 2
    impulse = torch.zeros(1, 1, side, side, dtype=torch.float64)
    impulse[0, 0, centre, centre] = 1.0
    response = F.interpolate(impulse, scale_factor=r, mode="bicubic", align_corners=False)[0, 0]
    # Output (r m + i, r n + j) reads LR (m + a - 2, n + b - 2) with weight w_i[a] w_j[b]; the
    # impulse at the centre answers there for m = centre + 2 - a.
    taps = 2 * BICUBIC_RADIUS + 1
    kernel = torch.empty(r * r, 1, taps, taps, dtype=torch.float64)
    for i in range(r):
        for j in range(r):
            for a in range(taps):
                for b in range(taps):
                    m, n = centre + BICUBIC_RADIUS - a, centre + BICUBIC_RADIUS - b
                    kernel[i * r + j, 0, a, b] = response[r * m + i, r * n + j]
    return kernel.float()
