"""Pixels in, pixels out: the colour handling around a resampler or a network.

Learned methods see only luminance Y (BT.601 studio swing, what they were trained on); Cb, Cr
and alpha are upscaled with bicubic. The split is in two halves, :func:`split_for_model` and
:func:`merge_from_model`, so the network can run elsewhere (the batcher's thread) in between.
The evaluation command calls these same functions, so the card's numbers are the server's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from service.imaging.colour import grey_to_studio, rgb_to_ycbcr, studio_to_grey, ycbcr_planes_to_rgb
from service.imaging.resamplers import bicubic_by_phases, interpolate

# The work is done in strips of rows, each small enough to stay in cache, written into one
# preallocated uint8 answer. With whole-image float temporaries a 4096x4096 x2 request peaked
# at 4.5 GiB (issue #15); in strips it grows the server by 1.1 GiB, its uint8 answer and the
# network's float plane among it (python -m benchmarks.memory --cases 4096:2:espcn). Strips
# are exact, because a resampler's
# output row reads only a few input rows around it (bit-identical at x2 and x4; at x3 the
# source coordinate's float rounding differs, which moves a rare value by one level).
STRIP_OUTPUT_PIXELS = 1 << 18
# Input rows either side of a strip that nearest, bilinear and bicubic (align_corners=False)
# read: bicubic's four taps reach two rows past the source coordinate.
_STRIP_HALO = 2


def _planes(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (1, C, H, W) float32 in 0..255."""
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].to(torch.float32)


def _pixels(planes: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) float -> (H, W, C) uint8, rounded and clamped in place: ``planes`` is a
    temporary of the caller's, and two more float copies of it would cost more than the work."""
    return planes[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def strips(height: int, width: int, scale: int) -> list[tuple[int, int]]:
    """Input row ranges [top, bottom) whose upscaled rows are about STRIP_OUTPUT_PIXELS each."""
    rows = max(1, STRIP_OUTPUT_PIXELS // max(1, width * scale * scale))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _upscaled_rows(
    planes: torch.Tensor, top: int, bottom: int, scale: int, resample: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The output rows [top*scale, bottom*scale) of ``resample(planes)`` (an upscaling by
    ``scale``), computed from input rows [top, bottom) and a halo, bit-identical to the
    whole-image call."""
    first, last = max(0, top - _STRIP_HALO), min(planes.shape[-2], bottom + _STRIP_HALO)
    up = resample(planes[..., first:last, :])
    offset = (top - first) * scale
    return up[..., offset:offset + (bottom - top) * scale, :]


def classical_upscale(
    pixels: np.ndarray, scale: int, method: str, *, align_corners: bool = False
) -> np.ndarray:
    """Every channel (colour and alpha alike) through the same resampler."""
    height, width, channels = pixels.shape
    if align_corners and method != "nearest":
        # Aligned corners map every output row through the whole height: no strips, but the
        # rounding works in place so only one float copy of the answer exists.
        return _pixels(interpolate(_planes(pixels), scale, method, align_corners=True))
    out = np.empty((height * scale, width * scale, channels), np.uint8)
    for top, bottom in strips(height, width, scale):
        first, last = max(0, top - _STRIP_HALO), min(height, bottom + _STRIP_HALO)
        planes = _planes(pixels[first:last])
        rows = _upscaled_rows(planes, top - first, bottom - first, scale,
                              functools.partial(interpolate, scale=scale, method=method))
        out[top * scale:bottom * scale] = _pixels(rows)
    return out


@dataclass(frozen=True)
class ModelInput:
    """The luminance for the network and the planes that wait for it, both at input size."""

    luma: torch.Tensor  # (H, W) float32, 0..255
    rest: torch.Tensor  # (1, K, H, W): Cb, Cr and/or alpha (K may be 0); bicubic at the merge
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
    height, width, channels = pixels.shape
    luma = torch.empty((height, width), dtype=torch.float32)
    rest = torch.empty((1, channels - 1, height, width), dtype=torch.float32)
    for top, bottom in strips(height, width, 1):
        planes = _planes(pixels[top:bottom])
        if mode in ("L", "LA"):
            luma[top:bottom] = grey_to_studio(planes[0, 0])
            rest[0, :, top:bottom] = planes[0, 1:]
        else:
            ycbcr = rgb_to_ycbcr(planes[:, :3])
            luma[top:bottom] = ycbcr[0, 0]
            rest[0, :2, top:bottom] = ycbcr[0, 1:]
            rest[0, 2:, top:bottom] = planes[0, 3:]
    return luma, rest


def split_for_model(pixels: np.ndarray, mode: str, scale: int) -> ModelInput:
    luma, rest = luma_and_rest(pixels, mode)
    return ModelInput(luma=luma, rest=rest, mode=mode, scale=scale)


def merge_from_model(model_input: ModelInput, luma_hr: torch.Tensor) -> np.ndarray:
    """Combine the network's (rH, rW) luminance with the bicubic planes into uint8 pixels:
    each output channel computed as one plane and rounded into its place in the interleaved
    answer, with no stacked float copy of the answer."""
    rest, scale = model_input.rest, model_input.scale
    _, planes, height, width = rest.shape
    out = np.empty((height * scale, width * scale, planes + 1), np.uint8)
    answer = torch.from_numpy(out)
    # Cb, Cr and alpha: bicubic in its sub-pixel form, 3x faster than interpolate's (the
    # chroma was most of a merge); the classical methods keep interpolate's own.
    chroma = functools.partial(bicubic_by_phases, scale=scale)
    for top, bottom in strips(height, width, scale):
        rows = answer[top * scale:bottom * scale]
        y = luma_hr[top * scale:bottom * scale].to(torch.float32)
        around = _upscaled_rows(rest, top, bottom, scale, chroma)[0] if planes else None
        if model_input.mode in ("L", "LA"):
            channels: tuple[torch.Tensor, ...] = (studio_to_grey(y),)
            extra = around
        else:
            assert around is not None
            channels = ycbcr_planes_to_rgb(y, around[0], around[1])
            extra = around[2:]
        if extra is not None:
            channels = (*channels, *extra)
        for index, plane in enumerate(channels):
            rows[..., index].copy_(plane.round_().clamp_(0, 255))  # temporaries: rounded in place
    return out
