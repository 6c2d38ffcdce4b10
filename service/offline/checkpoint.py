"""Resumable training state without pickle: tensors in safetensors, the rest in JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    # On the CPU, so a checkpoint written on a GPU resumes anywhere.
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a run killed mid-save leaves the previous checkpoint intact.
    tmp_tensors = path.with_suffix(".safetensors.tmp")
    tmp_meta = path.with_suffix(".json.tmp")
    save_file(tensors, str(tmp_tensors))
    tmp_meta.write_text(json.dumps({"meta": meta, "param_groups": groups}))
    os.replace(tmp_tensors, path.with_suffix(".safetensors"))
    os.replace(tmp_meta, path.with_suffix(".json"))


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore model and optimizer from ``path`` if it exists; return the saved meta."""
    tensor_file = path.with_suffix(".safetensors")
    meta_file = path.with_suffix(".json")
    if not (tensor_file.exists() and meta_file.exists()):
        return None
    tensors = load_file(str(tensor_file))
    saved = json.loads(meta_file.read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    meta: dict[str, Any] = saved["meta"]
    return meta
