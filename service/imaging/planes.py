"""Pixels in, pixels out: the colour handling around a resampler or a network.

Learned methods see only luminance Y (BT.601 studio swing, what they were trained on); Cb, Cr
and alpha are upscaled with bicubic. The split is in two halves, :func:`split_for_model` and
:func:`merge_from_model`, so the network can run elsewhere (the batcher's thread) in between.
The evaluation command calls these same functions, so the card's numbers are the server's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from service.imaging.colour import grey_to_studio, rgb_to_ycbcr, studio_to_grey, ycbcr_to_rgb
from service.imaging.resamplers import interpolate, to_uint8


def _planes(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (1, C, H, W) float32 in 0..255."""
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].to(torch.float32)


def _pixels(planes: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) float -> (H, W, C) uint8, rounded and clamped."""
    return to_uint8(planes[0]).permute(1, 2, 0).contiguous().numpy()


def classical_upscale(
    pixels: np.ndarray, scale: int, method: str, *, align_corners: bool = False
) -> np.ndarray:
    """Every channel (colour and alpha alike) through the same resampler."""
    return _pixels(interpolate(_planes(pixels), scale, method, align_corners=align_corners))


@dataclass(frozen=True)
class ModelInput:
    """The luminance for the network and the upscaled planes that wait for it."""

    luma: torch.Tensor  # (H, W) float32, 0..255
    upscaled_rest: torch.Tensor | None  # (1, K, rH, rW): Cb, Cr and/or alpha, bicubic
    mode: str
    scale: int


def luma_and_rest(pixels: np.ndarray, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (H, W) luminance a network sees and the (1, K, H, W) planes that go around it.

    The one place that says what a network's input is, for the upscale path and for the
    ``auto`` proxy alike. Colour: Y of BT.601 studio swing; the rest is Cb, Cr and any alpha.
    A grey image is its own Y, but on the full 0..255 swing; the networks learnt the studio
    swing 16..235 of colour images. Grey g is the RGB (g, g, g), whose Y is 16 + 219 g / 255
    (worth 0.01-0.04 dB on Set14's greyscale bridge); the rest is any alpha.
    """
    planes = _planes(pixels)
    if mode in ("L", "LA"):
        return grey_to_studio(planes[0, 0]), planes[:, 1:]
    ycbcr = rgb_to_ycbcr(planes[:, :3])
    return ycbcr[0, 0], torch.cat([ycbcr[:, 1:], planes[:, 3:]], dim=1)


def split_for_model(pixels: np.ndarray, mode: str, scale: int) -> ModelInput:
    luma, rest = luma_and_rest(pixels, mode)
    upscaled = interpolate(rest, scale, "bicubic") if rest.shape[1] else None
    return ModelInput(luma=luma.contiguous(), upscaled_rest=upscaled, mode=mode, scale=scale)


def merge_from_model(model_input: ModelInput, luma_hr: torch.Tensor) -> np.ndarray:
    """Combine the network's (rH, rW) luminance with the bicubic planes into uint8 pixels."""
    y = luma_hr[None, None].to(torch.float32)
    rest = model_input.upscaled_rest
    if model_input.mode in ("L", "LA"):
        y = studio_to_grey(y)
        planes = y if rest is None else torch.cat([y, rest], dim=1)
        return _pixels(planes)
    assert rest is not None
    rgb = ycbcr_to_rgb(torch.cat([y, rest[:, :2]], dim=1))
    return _pixels(torch.cat([rgb, rest[:, 2:]], dim=1))
