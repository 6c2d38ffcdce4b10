"""ESPCN (Shi et al., CVPR 2016) and its transposed-convolution twin.

Every convolution runs in low-resolution space; the last one produces r*r channels that
PixelShuffle rearranges into an r-times larger image. Input and output are luminance scaled to
0..1 with shape (N, 1, H, W) -> (N, 1, rH, rW).
"""

from __future__ import annotations

import torch
from torch import nn

from service.imaging.borders import crop_borders
from service.models.valid import unpadded


class ESPCN(nn.Module):
    """The paper's network: conv5x5(64), tanh, conv3x3(32), tanh, conv3x3(r*r), PixelShuffle.

    Args:
        scale: upscaling factor r.
        features: channels of the first and second layer (paper: 64 and 32).
    """

    def __init__(self, scale: int, features: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        self.scale = scale
        first, second = features
        self.conv1 = nn.Conv2d(1, first, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(first, second, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(second, scale * scale, kernel_size=3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He-style normal init for the hidden layers and a near-zero head, as the good
        # reproductions do: tanh networks started from PyTorch's default init take many more
        # steps before they beat bicubic.
        for conv in (self.conv1, self.conv2):
            fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
            nn.init.normal_(conv.weight, 0.0, (2.0 / fan_out) ** 0.5)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.conv3.weight, 0.0, 1e-3)
        nn.init.zeros_(self.conv3.bias)

    # Receptive field radius in LR pixels: 2 + 1 + 1.
    halo = 4

    def features(self, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv2(torch.tanh(self.conv1(y))))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, 1, rH, rW)."""
        return self.shuffle(self.conv3(self.features(y)))

    def features_valid(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`features` unpadded: each side shrinks by ``halo - 1`` (all but the head's)."""
        return torch.tanh(unpadded(self.conv2, torch.tanh(unpadded(self.conv1, y))))

    def forward_valid(self, y: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) -> the centre of ``forward``, (N, 1, (h - 2 halo) r, (w - 2 halo) r)
        (service.models.valid)."""
        return self.shuffle(unpadded(self.conv3, self.features_valid(y)))

    def last_layer(self) -> nn.Conv2d:
        return self.conv3


class SubPixelDeconv(nn.Module):
    """A trained sub-pixel network whose conv + PixelShuffle head is a ConvTranspose2d.

    A 3x3 convolution to r*r channels followed by PixelShuffle(r) equals a transposed
    convolution with kernel 3r, stride r and padding r, whose weight is the conv's weight
    flipped and interleaved: ``Wt[c, 0, r*(2-dy)+i, r*(2-dx)+j] = W[i*r+j, c, dy, dx]``.
    The conv's r*r biases become an r x r periodic bias map, added after the deconvolution.
    The rewrite happens once, here, at load time.
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        conv: nn.Conv2d = body.last_layer()
        r = body.scale
        self.scale = r
        self.halo = body.halo
        out_channels, in_channels, kh, kw = conv.weight.shape
        if out_channels != r * r or (kh, kw) != (3, 3):
            raise ValueError(f"expected a 3x3 head with {r * r} channels, got {tuple(conv.weight.shape)}")
        self.deconv = nn.ConvTranspose2d(
            in_channels,
            1,
            kernel_size=3 * r,
            stride=r,
            padding=r,
            bias=False,
            dtype=conv.weight.dtype,
            device=conv.weight.device,
        )
        with torch.no_grad():
            # W[i*r+j, c, dy, dx] -> (i, j, c, dy, dx)
            w = conv.weight.detach().reshape(r, r, in_channels, 3, 3)
            # Flip the taps (2 - dy, 2 - dx) and interleave sub-pixel offsets into the kernel.
            w = w.flip(-1).flip(-2)  # (i, j, c, ky, kx) with ky = 2 - dy
            w = w.permute(2, 3, 0, 4, 1).reshape(in_channels, 3 * r, 3 * r)
            self.deconv.weight.copy_(w.unsqueeze(1))
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros(r * r)
        self.register_buffer("bias_map", bias.reshape(1, 1, r, r).clone())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        out = self.deconv(self.body.features(y))
        h, w = y.shape[-2], y.shape[-1]
        return out + self.bias_map.repeat(1, 1, h, w)

    def forward_valid(self, y: torch.Tensor) -> torch.Tensor:
        """The centre of ``forward`` (service.models.valid). The body's unpadded features
        leave one LR pixel of context for the 3x3 head; the deconvolution, padded as in
        ``forward``, computes that rim from zeros beyond the features, and it is cut off."""
        features = self.body.features_valid(y)
        out = self.deconv(features) + self.bias_map.repeat(1, 1, features.shape[-2], features.shape[-1])
        return crop_borders(out, self.scale)
