"""Pixels in, pixels out: the colour handling around a resampler or a network.

Learned methods see only luminance Y (BT.601 studio swing, what they were trained on); Cb, Cr
and alpha are upscaled with bicubic (OpenCV's, on planes kept interleaved as it wants them). The split is in two halves, :func:`split_for_model` and
:func:`merge_from_model`, so the network can run elsewhere (the batcher's thread) in between.
The evaluation command calls these same functions, so the card's numbers are the server's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from service.imaging.colour import grey_to_studio
from service.imaging.resamplers import interpolate

# The work is done in strips of rows, each small enough to stay in cache, written into one
# preallocated uint8 answer. With whole-image float temporaries a 4096x4096 x2 request peaked
# at 4.5 GiB (issue #15); in strips it grows the server by 1.1 GiB, its uint8 answer and the
# network's float plane among it (python -m benchmarks.memory --cases 4096:2:espcn). Strips
# are exact, because a resampler's output row reads only a few input rows around it
# (bit-identical at x2 and x4; at x3 the source coordinate's float rounding differs, which
# moves a rare value by one level). 2^16 output pixels keep a strip's float temporaries under
# the 1 MiB above which malloc maps fresh pages (service.malloc): at 2^18 every strip paid
# for its page faults, and a 128x128 x3 merge cost 1.3-1.5 ms of CPU instead of 0.7.
STRIP_OUTPUT_PIXELS = 1 << 16
# But at least 8 input rows, since the halo's 4 rows are resized with every strip (twice the
# work at 4 rows), while a strip stays within 2^18 output pixels (admission's fixed share).
MIN_STRIP_ROWS = 8
MAX_STRIP_OUTPUT_PIXELS = 1 << 18
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
    row = max(1, width * scale * scale)
    rows = max(1, STRIP_OUTPUT_PIXELS // row, min(MIN_STRIP_ROWS, MAX_STRIP_OUTPUT_PIXELS // row))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _halo_rows(top: int, bottom: int, height: int) -> tuple[int, int]:
    """The input rows [first, last) that the upscaled rows of input rows [top, bottom) read;
    the strip's answer is rows [(top - first) r, (bottom - first) r) of their upscaling,
    equal to the whole image's (see STRIP_OUTPUT_PIXELS for the one exception)."""
    return max(0, top - _STRIP_HALO), min(height, bottom + _STRIP_HALO)


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
        first, last = _halo_rows(top, bottom, height)
        up = interpolate(_planes(pixels[first:last]), scale, method)
        out[top * scale:bottom * scale] = _pixels(up[..., (top - first) * scale:(bottom - first) * scale, :])
    return out


# BT.601 puts one weight on Y in each of R, G and B (Cb's and Cr's rows of the forward
# matrix sum to zero): RGB = K (Y - 16) + terms in Cb and Cr alone, K = 255/219; a grey image's
# value is K (Y - 16) too. Bicubic is linear and keeps constants, so upscaling Cb and Cr and
# then converting equals upscaling each channel's RGB - K Y at input size and adding the
# network's K Y: the merge has no colour matrix to apply at output size, one resize of all the
# planes and one weighted add that rounds into the answer (a 128x128 x3 merge: 0.5 against
# 2.0 ms on one thread, 512x512 x3: 10 against 40 ms, against the sub-pixel bicubic in torch and
# the matrix after it).
_K = 255.0 / 219.0
# Rows for cv2.transform on float RGB(A) pixels, the last column the constant term: Y of
# BT.601 studio swing, and each colour channel less K Y, alpha as it is.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_ROW = {c: np.array([[*_Y_WEIGHTS, *[0.0] * (c - 3), 16.0]], np.float32) for c in (3, 4)}
_REST_ROWS = {
    c: (np.concatenate([np.eye(c), np.zeros((c, 1))], axis=1)
        - _K * np.outer([1.0] * 3 + [0.0] * (c - 3), _Y_ROW[c][0])).astype(np.float32)
    for c in (3, 4)
}


@dataclass(frozen=True)
class ModelInput:
    """The luminance for the network and the planes that wait for it, both at input size."""

    luma: torch.Tensor  # (H, W) float32, 0..255
    # (H, W, K) float32, what bicubic carries to the merge: each colour channel less K Y, then
    # alpha; K is 3 or 4 for colour, 0 or 1 (alpha) for grey.
    rest: np.ndarray
    mode: str
    scale: int


def luma_and_rest(pixels: np.ndarray, mode: str) -> tuple[torch.Tensor, np.ndarray]:
    """The (H, W) luminance a network sees and the (H, W, K) planes that go around it.

    The one place that says what a network's input is, for the upscale path and for the
    ``auto`` proxy alike. Colour: Y of BT.601 studio swing. A grey image is its own Y, but on
    the full 0..255 swing; the networks learnt the studio swing 16..235 of colour images.
    Grey g is the RGB (g, g, g), whose Y is 16 + 219 g / 255 (worth 0.01-0.04 dB on Set14's
    greyscale bridge).
    """
    height, width, channels = pixels.shape
    grey = mode in ("L", "LA")
    luma = np.empty((height, width), np.float32)
    rest = np.empty((height, width, channels - 1 if grey else channels), np.float32)
    for top, bottom in strips(height, width, 1):
        values = pixels[top:bottom].astype(np.float32)
        if grey:
            luma[top:bottom] = grey_to_studio(values[..., 0])
            rest[top:bottom] = values[..., 1:]
        else:
            luma[top:bottom] = cv2.transform(values, _Y_ROW[channels]).reshape(bottom - top, width)
            rest[top:bottom] = cv2.transform(values, _REST_ROWS[channels]).reshape(bottom - top, width, channels)
    return torch.from_numpy(luma), rest


def split_for_model(pixels: np.ndarray, mode: str, scale: int) -> ModelInput:
    luma, rest = luma_and_rest(pixels, mode)
    return ModelInput(luma=luma, rest=rest, mode=mode, scale=scale)


def bicubic_rows(planes: np.ndarray, top: int, bottom: int, scale: int) -> np.ndarray:
    """Output rows [top*scale, bottom*scale) of the bicubic upscaling of (H, W, K) float
    planes, from input rows [top, bottom) and a halo: OpenCV's INTER_CUBIC is interpolate's
    bicubic (a = -0.75, pixel centres, edges replicated) to within 0.01, and 4-5x faster on a
    merge's planes. Always (rows, W*scale, K)."""
    height, width, channels = planes.shape
    first, last = _halo_rows(top, bottom, height)
    up = cv2.resize(planes[first:last], (width * scale, (last - first) * scale), interpolation=cv2.INTER_CUBIC)
    return up.reshape(up.shape[0], up.shape[1], channels)[(top - first) * scale:(bottom - first) * scale]


def upscale_bicubic_uint8(plane: np.ndarray, scale: int) -> np.ndarray:
    """An 8-bit plane upscaled with the images' chroma bicubic, in OpenCV's fixed point
    (within a level of the float path): a video frame's U and V."""
    height, width = plane.shape
    return cv2.resize(plane, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)


def merge_from_model(model_input: ModelInput, luma_hr: torch.Tensor) -> np.ndarray:
    """Combine the network's (rH, rW) luminance with the bicubic planes into uint8 pixels.

    Each colour channel is K Y (the network's) plus its bicubic term, rounded and saturated
    into the interleaved answer by one OpenCV weighted add per strip of rows."""
    rest, scale = model_input.rest, model_input.scale
    height, width, planes = rest.shape
    grey = model_input.mode in ("L", "LA")
    out = np.empty((height * scale, width * scale, planes + 1 if grey else planes), np.uint8)
    luma = luma_hr.to(torch.float32).numpy()
    for top, bottom in strips(height, width, scale):
        rows = out[top * scale:bottom * scale]
        y = luma[top * scale:bottom * scale]
        if grey:
            rows[..., 0] = cv2.addWeighted(y, _K, y, 0.0, -16 * _K, dtype=cv2.CV_8U)
            if planes:
                alpha = bicubic_rows(rest, top, bottom, scale)[..., 0]
                rows[..., 1] = cv2.addWeighted(alpha, 1.0, alpha, 0.0, 0.0, dtype=cv2.CV_8U)
            continue
        up = bicubic_rows(rest, top, bottom, scale)
        # K Y on the colour channels, nothing on alpha.
        lumas = cv2.merge([y, y, y] if planes == 3 else [y, y, y, np.zeros_like(y)])
        cv2.addWeighted(lumas, _K, up, 1.0, 0.0, dst=rows, dtype=cv2.CV_8U)
    return out
