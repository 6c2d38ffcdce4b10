"""The models the server holds on its device, keyed by (method, scale)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from service.models.backends import Runner, choose_runner
from service.models.espcn import SubPixelDeconv
from service.models.store import ModelCard, ModelStoreError, discover, load_weights

log = logging.getLogger(__name__)

# The method served by the transposed-convolution rewrite of each espcn model.
DECONV_METHOD = "deconv"


@dataclass(frozen=True)
class ResidentModel:
    method: str
    scale: int
    card: ModelCard
    module: nn.Module
    device: torch.device
    dtype: torch.dtype
    runner: Runner | None = None  # the backend that runs batches (models.backends); None: the module
    backend: dict[str, object] = field(default_factory=lambda: {"backend": "torch"})

    def run(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(N, 1, h, w) in 0..1 on the model's device -> (N, 1, rh, rw), through the backend."""
        out: torch.Tensor = (self.runner or self.module)(x, mask)
        return out

    @property
    def halo(self) -> int:
        """LR pixels of context each side that the network's output depends on."""
        return int(self.module.halo)

    @property
    def ref(self) -> str:
        return self.card.ref


class ModelSet:
    """Every loaded model; built once in the app's lifespan, read-only afterwards."""

    def __init__(self, models: list[ResidentModel]) -> None:
        self._models = {(m.method, m.scale): m for m in models}

    @classmethod
    def load(
        cls,
        store: Path,
        device: torch.device,
        dtype: torch.dtype,
        *,
        backend: str = "torch",
        threads: int = 1,
        batch: int = 4,
        tile: int = 128,
    ) -> ModelSet:
        """Every newest model of the store on ``device``; ``backend`` (``models.backends``)
        chooses what runs their batches, timed on ``batch`` tiles of ``tile`` px for auto."""
        cards = discover(store)
        if not cards:
            raise ModelStoreError(f"model store {store} holds no models")
        models: list[ResidentModel] = []

        def resident(method: str, card: ModelCard, module: nn.Module) -> ResidentModel:
            side = tile + 2 * int(module.halo)
            runner, info = choose_runner(module, backend, device, threads=threads, batch=batch, side=side)
            log.info("%s x%d runs on %s %s", method, card.scale, info["backend"], info.get("timed_ms", ""))
            return ResidentModel(method, card.scale, card, module, device, dtype, runner, info)

        for card in cards:
            module = load_weights(card)
            if hasattr(module, "fold"):
                # A re-parameterisable network is stored in its training form and served
                # folded into plain convolutions (service.models.ecb).
                module = module.fold()
            module = module.to(device=device, dtype=dtype).eval()
            models.append(resident(card.method, card, module))
            if card.arch == "espcn":
                # Rewritten once here; it shares the body's tensors with the espcn model.
                twin = SubPixelDeconv(module).to(device=device, dtype=dtype).eval()
                models.append(resident(DECONV_METHOD, card, twin))
            log.info("loaded %s (%s x%d) on %s as %s", card.ref, card.arch, card.scale, device, dtype)
        return cls(models)

    def get(self, method: str, scale: int) -> ResidentModel | None:
        return self._models.get((method, scale))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._models.values())

    def methods(self) -> dict[str, list[int]]:
        offered: dict[str, list[int]] = {}
        for method, scale in sorted(self._models):
            offered.setdefault(method, []).append(scale)
        return offered
