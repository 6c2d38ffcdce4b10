"""ITU-R BT.601 studio-swing YCbCr, as MATLAB's ``rgb2ycbcr``/``ycbcr2rgb``.

The learned models are trained and evaluated on this Y (the field's protocol), so the server
uses the very same transform: a model never sees a luminance it was not trained on.
Values are float tensors in 0..255 with shape (..., 3, H, W) or (..., H, W) per plane.
"""

from __future__ import annotations

import torch

# Rows give Y, Cb, Cr from R, G, B in 0..255 (MATLAB rgb2ycbcr, divided by 255).
_RGB_TO_YCBCR = torch.tensor(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=torch.float64,
) / 255.0
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in 0..255 -> (..., 3, H, W) Y, Cb, Cr (float, not rounded)."""
    matrix = _RGB_TO_YCBCR.to(rgb.dtype)
    offset = _YCBCR_OFFSET.to(rgb.dtype)
    return torch.einsum("ij,...jhw->...ihw", matrix, rgb) + offset[:, None, None]


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`; the result is not clamped."""
    matrix = _YCBCR_TO_RGB.to(ycbcr.dtype)
    offset = _YCBCR_OFFSET.to(ycbcr.dtype)
    return torch.einsum("ij,...jhw->...ihw", matrix, ycbcr - offset[:, None, None])


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in 0..255 -> (..., H, W) luminance Y (16..235)."""
    matrix = _RGB_TO_YCBCR[0].to(rgb.dtype)
    return torch.einsum("j,...jhw->...hw", matrix, rgb) + 16.0


def grey_to_studio(grey: torch.Tensor) -> torch.Tensor:
    """Grey 0..255 -> the Y (16..235) of the RGB pixel (g, g, g): 16 + 219 g / 255."""
    return grey * (219.0 / 255.0) + 16.0


def studio_to_grey(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`grey_to_studio` (not clamped)."""
    return (y - 16.0) * (255.0 / 219.0)
