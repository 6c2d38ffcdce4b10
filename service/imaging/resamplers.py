"""The classical resamplers, as ``torch.nn.functional.interpolate`` computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLASSICAL_METHODS = ("nearest", "bilinear", "bicubic")


def interpolate(
    planes: torch.Tensor, scale: int, method: str, *, align_corners: bool = False
) -> torch.Tensor:
    """Upscale (N, C, H, W) float planes by an integer ``scale``; no clamping, no rounding.

    ``align_corners`` matters for bilinear and bicubic only: False maps pixel centres (the
    image-processing convention); True maps the corner pixels onto each other.
    """
    if method == "nearest":
        return F.interpolate(planes, scale_factor=scale, mode="nearest")
    if method in ("bilinear", "bicubic"):
        return F.interpolate(
            planes, scale_factor=scale, mode=method, align_corners=align_corners
        )
    raise ValueError(f"unknown classical method {method!r}; known: {', '.join(CLASSICAL_METHODS)}")


def to_uint8(planes: torch.Tensor) -> torch.Tensor:
    return planes.round().clamp(0, 255).to(torch.uint8)
