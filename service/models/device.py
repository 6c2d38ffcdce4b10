"""Which device and dtype the models live on."""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(setting: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"SR_DEVICE={setting} but CUDA is not available on this machine")
    return device


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on CUDA (tensor cores; ESPCN's activations are bounded by tanh)
    and float32 on the CPU, where half precision is slower, not faster."""
    if setting == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[setting]
