"""Image quality metrics with the field's protocol: on Y, borders shaved, 0..255 scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from service.imaging.borders import crop_borders


def psnr(reference: torch.Tensor, estimate: torch.Tensor, *, border: int = 0) -> float:
    """PSNR in dB of two (H, W) planes in 0..255; ``inf`` when they are equal."""
    ref = crop_borders(reference.to(torch.float64), border)
    est = crop_borders(estimate.to(torch.float64), border)
    if ref.shape != est.shape:
        raise ValueError(f"shapes differ: {tuple(ref.shape)} vs {tuple(est.shape)}")
    mse = torch.mean((ref - est) ** 2).item()
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(reference: torch.Tensor, estimate: torch.Tensor, *, border: int = 0) -> float:
    """SSIM of Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255.

    Computed over the 'valid' part of the window, as the reference MATLAB ``ssim_index``.
    """
    ref = crop_borders(reference.to(torch.float64), border)[None, None]
    est = crop_borders(estimate.to(torch.float64), border)[None, None]
    window = _gaussian_window()[None, None]
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    mu_x = F.conv2d(ref, window)
    mu_y = F.conv2d(est, window)
    sigma_x = F.conv2d(ref * ref, window) - mu_x**2
    sigma_y = F.conv2d(est * est, window) - mu_y**2
    sigma_xy = F.conv2d(ref * est, window) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return (numerator / denominator).mean().item()
