"""How much will a learned method gain over bicubic on *this* image? A cheap estimate.

The gain of a super-resolution network over bicubic depends on what the image holds: edges
it can sharpen gain a lot, flat or already blurred areas nothing, and random texture little.
A detail statistic alone does not separate edges from texture (measured: Spearman ~0.1 on the
training images), so the estimate asks the network itself, on a copy of the input shrunk once
more by r (MATLAB bicubic): images are self-similar across scales, and the network's gain in
reconstructing the LR input from that copy predicts its gain on the real upscale. The copy
has 1/r^2 of the input's pixels, so this costs about 1/r^4 of the request. A line maps that
proxy gain to the real one, fitted on the training images (``train/``, never ``eval/``) by
``python -m service.gain fit`` (``service.offline.gain_fit``), which writes ``gain.json``
into the model store beside the models it was fitted on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from service.imaging.borders import crop_borders, upscale_plane
from service.imaging.matlab_resize import downscale_uint8

GAIN_FILE = "gain.json"
# Below this LR side the shrunk copy is too small to say anything.
MIN_PROXY_SIDE = 12


def proxy_gain_db(module: nn.Module, luma: torch.Tensor, scale: int) -> float | None:
    """The network's PSNR gain over bicubic when it rebuilds ``luma`` (H, W, 0..255) from a
    copy shrunk by ``scale``; None when the image is too small for that."""
    h, w = (luma.shape[0] // scale) * scale, (luma.shape[1] // scale) * scale
    if min(h, w) // scale < MIN_PROXY_SIDE:
        return None
    target = luma[:h, :w].to(torch.float64)
    small = downscale_uint8(target, scale)
    x = (small / 255.0).to(next(module.parameters()).dtype)
    device = next(module.parameters()).device
    with torch.inference_mode():
        learned = upscale_plane(module, x.to(device)).float().cpu().clamp(0, 1).double() * 255
        bicubic = F.interpolate(small[None, None], scale_factor=scale, mode="bicubic",
                                align_corners=False)[0, 0].clamp(0, 255)
    # PSNR difference = ratio of MSEs; the epsilon keeps a perfect (flat) image at 0 dB, not nan.
    eps = 1e-3
    truth = crop_borders(target, scale)
    mse_learned = float(((truth - crop_borders(learned.round(), scale)) ** 2).mean()) + eps
    mse_bicubic = float(((truth - crop_borders(bicubic.round(), scale)) ** 2).mean()) + eps
    return 10.0 * math.log10(mse_bicubic / mse_learned)


@dataclass(frozen=True)
class GainModel:
    intercept_db: float
    slope_db: float  # dB of real gain per dB of proxy gain

    def predict_db(self, proxy_db: float) -> float:
        return self.intercept_db + self.slope_db * proxy_db

    @classmethod
    def fit(cls, proxies: list[float], gains: list[float]) -> GainModel:
        """Least squares through the origin: an image with nothing for the network to do on
        the shrunk copy (a flat one) has nothing to gain on the real upscale either."""
        sxx = sum(x * x for x in proxies)
        slope = sum(x * g for x, g in zip(proxies, gains, strict=True)) / sxx if sxx else 0.0
        return cls(0.0, slope)


def load_gain_models(path: Path) -> dict[int, GainModel]:
    """Scale -> fitted line, from ``gain.json``; none (``auto`` uses set averages) when absent."""
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {int(k[1:]): GainModel(v["intercept_db"], v["slope_db"]) for k, v in raw.items() if k.startswith("x")}
