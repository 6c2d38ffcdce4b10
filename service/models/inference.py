"""Running a resident network on a batch of luminance windows, on its device."""

from __future__ import annotations

import torch

from service.models.resident import ResidentModel


def run_network(model: ResidentModel, lr_batch: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) float32 Y windows in 0..255 on the host -> the centres of their outputs,
    (N, 1, (h - 2 halo) r, (w - 2 halo) r), float32 Y in 0..255.

    Called on the device's worker thread only. On CUDA the host batch is pinned so the copy
    can overlap; the single ``.cpu()`` at the end is the one synchronisation point.
    """
    cuda = model.device.type == "cuda"
    with torch.inference_mode():
        if cuda:
            lr_batch = lr_batch.pin_memory()
        x = lr_batch.to(model.device, non_blocking=cuda).to(model.dtype).div_(255.0)
        y = model.run(x)
        return y.float().clamp_(0.0, 1.0).mul_(255.0).cpu()
