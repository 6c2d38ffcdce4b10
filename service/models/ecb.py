"""Re-parameterisable sub-pixel networks: ECBSR-style edge-oriented blocks (Zhang et al., ACM MM
2021) that fold into plain 3x3 convolutions.

An edge-oriented convolution block (ECB) is, at training time, the sum of several linear
branches on the same input: a 3x3 convolution; a 1x1 expansion followed by a 3x3 convolution;
1x1 convolutions followed by fixed Sobel-x, Sobel-y and Laplacian filters with a learnt scale
per channel; and the identity when input and output widths match. Every branch is linear, so
their sum is one 3x3 convolution: :meth:`EdgeBlock.merged` computes its kernel and bias. The
network that is served (:meth:`RepSubPixel.fold`) is a chain of plain 3x3 convolutions and
PReLUs in low-resolution space with a PixelShuffle head: a sub-pixel network in ESPCN's sense,
costing what a plain network of that width and depth costs.

Training runs the merged kernel too ("online re-parameterisation", OREPA, CVPR 2022): the
function of the branch parameters is the same, so are its gradients, and a step costs about what
the folded network's costs instead of three times as much. :meth:`EdgeBlock.forward_branches`
computes the branches one by one; the tests hold the three forms equal.

Exactness at the image border: the 1x1 convolution's bias reaches the padded ring of the 3x3
that follows it (the branch form pads with that bias, as the ECBSR reference does), which is
what the merged 3x3 with zero padding computes.
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
    prelu,
    unpadded,
)

_SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
_SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
EDGE_FILTERS = {"sobel_x": _SOBEL_X, "sobel_y": _SOBEL_Y, "laplacian": _LAPLACIAN}


class _Sequence(nn.Module):
    """A 1x1 convolution (``k0``, ``b0``) followed by a 3x3 kernel (``inner_kernel``, ``b1``)."""

    k0: nn.Parameter
    b0: nn.Parameter
    b1: nn.Parameter

    def inner_kernel(self) -> torch.Tensor:
        raise NotImplementedError

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _compose(self.k0, self.b0, self.inner_kernel(), self.b1)

    def forward_branch(self, x: torch.Tensor) -> torch.Tensor:
        y0 = _pad_with_bias(F.conv2d(x, self.k0, self.b0), self.b0)
        return F.conv2d(y0, self.inner_kernel(), self.b1)


class _Expand3x3(_Sequence):
    """1x1 convolution to ``mid`` channels, then a learnt 3x3 convolution to ``out``."""

    def __init__(self, inp: int, out: int, mid: int) -> None:
        super().__init__()
        self.k0 = nn.Parameter(torch.empty(mid, inp, 1, 1))
        self.b0 = nn.Parameter(torch.zeros(mid))
        self.k1 = nn.Parameter(torch.empty(out, mid, 3, 3))
        self.b1 = nn.Parameter(torch.zeros(out))
        nn.init.kaiming_uniform_(self.k0, a=5**0.5)
        nn.init.kaiming_uniform_(self.k1, a=5**0.5)

    def inner_kernel(self) -> torch.Tensor:
        return self.k1


class _EdgeFilter(_Sequence):
    """1x1 convolution, then a fixed edge filter per channel with a learnt scale (depthwise)."""

    def __init__(self, inp: int, out: int, taps: tuple[tuple[float, ...], ...]) -> None:
        super().__init__()
        self.k0 = nn.Parameter(torch.empty(out, inp, 1, 1))
        self.b0 = nn.Parameter(torch.zeros(out))
        self.scale = nn.Parameter(torch.randn(out, 1, 1, 1) * 1e-3)
        self.b1 = nn.Parameter(torch.randn(out) * 1e-3)
        self.register_buffer("taps", torch.tensor(taps).expand(out, 1, 3, 3).clone(), persistent=False)
        nn.init.kaiming_uniform_(self.k0, a=5**0.5)

    def inner_kernel(self) -> torch.Tensor:
        # The depthwise filter written as a dense (out, out, 3, 3) kernel with a diagonal.
        out = self.taps.shape[0]
        eye = torch.eye(out, dtype=self.scale.dtype, device=self.scale.device)
        return eye[:, :, None, None] * (self.scale * self.taps).reshape(out, 1, 3, 3)


def _pad_with_bias(y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Pad (N, C, H, W) by one pixel whose value is each channel's bias: what a 1x1
    convolution computes on the zero-padded ring of its input."""
    padded = F.pad(y - bias.view(1, -1, 1, 1), (1, 1, 1, 1))
    return padded + bias.view(1, -1, 1, 1)


def _compose(
    k0: torch.Tensor, b0: torch.Tensor, k1: torch.Tensor, b1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3x3 kernel and bias of ``conv3x3(k1, b1) after conv1x1(k0, b0)``."""
    kernel = torch.einsum("omhw,mi->oihw", k1, k0[:, :, 0, 0])
    bias = torch.einsum("omhw,m->o", k1, b0) + b1
    return kernel, bias


class EdgeBlock(nn.Module):
    """One ECB: the sum of its branches, then PReLU unless ``act`` is False.

    Args:
        inp, out: channels in and out.
        depth_multiplier: width of the 1x1-3x3 branch's middle, in multiples of ``out``.
        act: a PReLU (one slope per channel) after the sum; the network's last block has none.
    """

    def __init__(self, inp: int, out: int, *, depth_multiplier: float = 2.0, act: bool = True) -> None:
        super().__init__()
        self.inp, self.out = inp, out
        self.conv3x3 = nn.Conv2d(inp, out, 3, padding=1)
        self.expand = _Expand3x3(inp, out, max(1, int(out * depth_multiplier)))
        self.edges = nn.ModuleDict({name: _EdgeFilter(inp, out, taps) for name, taps in EDGE_FILTERS.items()})
        self.identity = inp == out
        self.act = nn.PReLU(out) if act else None

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 convolution this block's branches add up to (differentiable)."""
        kernel, bias = self.conv3x3.weight, self.conv3x3.bias
        assert bias is not None
        for branch in (self.expand, *self.edges.values()):
            k, b = branch.merged()
            kernel, bias = kernel + k, bias + b
        if self.identity:
            eye = torch.zeros_like(kernel)
            eye[torch.arange(self.out), torch.arange(self.out), 1, 1] = 1.0
            kernel = kernel + eye
        return kernel, bias

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        kernel, bias = self.merged()
        return F.conv2d(x, kernel, bias, padding=1)

    def linear_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The branches computed one by one: the reference the merged kernel must equal."""
        y = self.conv3x3(x)
        for branch in (self.expand, *self.edges.values()):
            y = y + branch.forward_branch(x)
        return y + x if self.identity else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.act(y) if self.act is not None else y

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_branches(x)
        return self.act(y) if self.act is not None else y

    def fold(self) -> nn.Sequential:
        """A plain ``Conv2d`` (and the PReLU), with the merged kernel as its weight."""
        kernel, bias = self.merged()
        conv = nn.Conv2d(self.inp, self.out, 3, padding=1, dtype=kernel.dtype, device=kernel.device)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)  # type: ignore[union-attr]
        layers: list[nn.Module] = [conv]
        if self.act is not None:
            act = nn.PReLU(self.out, dtype=kernel.dtype, device=kernel.device)
            with torch.no_grad():
                act.weight.copy_(self.act.weight)
            layers.append(act)
        return nn.Sequential(*layers)


class RepSubPixel(nn.Module):
    """Training form: EdgeBlock(1 -> C), ``blocks`` x EdgeBlock(C -> C), EdgeBlock(C -> r*r) without
    activation, PixelShuffle(r), plus bicubic(input) (the network learns the missing detail).

    Args:
        scale: upscaling factor r.
        channels: width C of the hidden layers.
        blocks: hidden C -> C blocks (ECBSR's M).
        depth_multiplier: see :class:`EdgeBlock`.
    """

    def __init__(self, scale: int, channels: int = 16, blocks: int = 4, depth_multiplier: float = 2.0) -> None:
        super().__init__()
        self.scale = scale
        widths = [1] + [channels] * (blocks + 1)
        hidden = [EdgeBlock(a, b, depth_multiplier=depth_multiplier) for a, b in zip(widths, widths[1:], strict=False)]
        self.blocks = nn.ModuleList(hidden)
        self.tail = EdgeBlock(channels, scale * scale, depth_multiplier=depth_multiplier, act=False)
        self.shuffle = nn.PixelShuffle(scale)
        # One LR pixel of context per 3x3 layer; bicubic's 2 is inside that.
        self.halo = blocks + 2
        with torch.no_grad():
            # Meant as ESPCN's near-zero detail head, but it shrinks only the tail's plain 3x3
            # branch: its 1x1-3x3 and edge branches keep torch's default init, so an untrained
            # network adds detail of std 0.10 (4 x 23) to 0.38 (8 x 40) on a 0..1 scale of
            # uniform noise to its bicubic base. Kept: every shipped ecbsr was trained from this
            # init (or from one trained so), and --replay must build it again.
            self.tail.conv3x3.weight.mul_(1e-2)

    def last_layer(self) -> nn.Module:
        return self.tail

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = y
        for block in self.blocks:
            h = block(h)
        return bicubic_base(y, self.scale) + self.shuffle(self.tail(h))

    def forward_branches(self, y: torch.Tensor) -> torch.Tensor:
        h = y
        for block in self.blocks:
            h = block.forward_branches(h)
        return bicubic_base(y, self.scale) + self.shuffle(self.tail.forward_branches(h))

    def fold(self) -> PlainSubPixel:
        """The served network: plain convolutions with the merged kernels."""
        with torch.no_grad():
            layers = [block.fold() for block in (*self.blocks, self.tail)]
        return PlainSubPixel(self.scale, layers, self.halo).eval()


class PlainSubPixel(nn.Module):
    """The folded :class:`RepSubPixel`: 3x3 convolutions with PReLU, PixelShuffle, + bicubic."""

    def __init__(self, scale: int, layers: list[nn.Sequential], halo: int) -> None:
        super().__init__()
        self.scale = scale
        self.layers = nn.ModuleList(layers)
        self.shuffle = nn.PixelShuffle(scale)
        self.halo = halo
        # Not in the state dict: derived from the scale, like the PixelShuffle.
        self.register_buffer("bicubic_kernel", bicubic_kernel(scale), persistent=False)
        self.extra_macs_per_lr_pixel = BICUBIC_MACS_PER_OUTPUT_PIXEL * scale * scale

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, 1, rH, rW)."""
        h = y
        for layer in self.layers:
            h = layer(h)
        return bicubic_base(y, self.scale) + self.shuffle(h)

    def forward_valid(self, y: torch.Tensor) -> torch.Tensor:
        """The centre of ``forward`` (service.models.valid): each unpadded 3x3 layer takes one
        pixel off every side; the bicubic base (radius 2, inside the halo) is cut to match."""
        h = y
        for conv, *act in self.layers:
            h = unpadded(conv, h)
            if act:
                h = prelu(h, act[0])
        r = self.scale
        detail = crop_borders(self.shuffle(h), (self.halo - len(self.layers)) * r)
        return crop_borders(bicubic_base_valid(y, self.bicubic_kernel), (self.halo - BICUBIC_RADIUS) * r) + detail
