"""Running a resident network on a luminance plane, on its device."""

from __future__ import annotations

import torch

from service.models.resident import ResidentModel


def run_network(model: ResidentModel, lr_batch: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) float32 Y in 0..255 on the host -> (N, 1, rh, rw) float32 Y in 0..255.

    Called on the device's worker thread only.
    """
    with torch.inference_mode():
        x = lr_batch.to(model.device, non_blocking=True).to(model.dtype).div_(255.0)
        y = model.module(x)
        return y.float().clamp_(0.0, 1.0).mul_(255.0).cpu()
