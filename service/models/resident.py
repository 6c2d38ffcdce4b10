"""The models the server holds on its device, keyed by (method, scale)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from service.models.backends import Runner, choose_runner
from service.models.espcn import SubPixelDeconv
from service.models.store import ModelCard, ModelStoreError, discover_versions, load_weights

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
    runner: Runner | None = None  # the backend that runs batches (models.backends); None: the module's
    backend: dict[str, object] = field(default_factory=lambda: {"backend": "torch"})

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) windows in 0..1 on the model's device -> the centres of their outputs,
        (N, 1, (h - 2 halo) r, (w - 2 halo) r), through the backend (service.models.valid)."""
        out: torch.Tensor = (self.runner or self.module.forward_valid)(x)
        return out

    @property
    def halo(self) -> int:
        """LR pixels of context each side that the network's output depends on."""
        return int(self.module.halo)

    @property
    def ref(self) -> str:
        return self.card.ref


def _served(card: ModelCard, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The card's weights as the module that serves them: checked, loaded, folded, on device."""
    module = load_weights(card)
    if hasattr(module, "fold"):
        # A re-parameterisable network is stored in its training form and served folded into
        # plain convolutions (service.models.ecb).
        module = module.fold()
    return module.to(device=device, dtype=dtype).eval()


class ModelSet:
    """The newest version of every model, resident from start-up (read-only afterwards), and
    every older version of the store, loaded on first use (``versioned``)."""

    def __init__(self, models: list[ResidentModel], versions: dict[str, list[ModelCard]] | None = None) -> None:
        self._models = {(m.method, m.scale): m for m in models}
        self.versions = versions or {}  # name -> cards, oldest first
        self._older: dict[str, ResidentModel] = {}  # ref -> loaded on first use
        self._loading = threading.Lock()

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
        crowded: Callable[[], bool] | None = None,
    ) -> ModelSet:
        """Every newest model of the store on ``device``; ``backend`` (``models.backends``)
        chooses what runs their batches, timed on ``batch`` tiles of ``tile`` px for auto;
        ``crowded`` narrows ONNX Runtime's batches to one thread while it says so."""
        versions = discover_versions(store)
        cards = [found[-1] for found in versions.values()]
        if not cards:
            raise ModelStoreError(f"model store {store} holds no models")
        models: list[ResidentModel] = []

        def resident(method: str, card: ModelCard, module: nn.Module) -> ResidentModel:
            side = tile + 2 * int(module.halo)
            runner, info = choose_runner(module, backend, device, threads=threads, batch=batch, side=side,
                                         crowded=crowded)
            log.info("%s x%d runs on %s %s", method, card.scale, info["backend"], info.get("timed_ms", ""))
            return ResidentModel(method, card.scale, card, module, device, dtype, runner, info)

        for card in cards:
            module = _served(card, device, dtype)
            models.append(resident(card.method, card, module))
            if card.arch == "espcn":
                # Rewritten once here; it shares the body's tensors with the espcn model.
                twin = SubPixelDeconv(module).to(device=device, dtype=dtype).eval()
                models.append(resident(DECONV_METHOD, card, twin))
            log.info("loaded %s (%s x%d) on %s as %s", card.ref, card.arch, card.scale, device, dtype)
        return cls(models, versions)

    def get(self, method: str, scale: int) -> ResidentModel | None:
        return self._models.get((method, scale))

    def card(self, name: str, version: str | None = None) -> ModelCard | None:
        """A model's card by name and version (None: the newest)."""
        cards = self.versions.get(name, [])
        if version is None:
            return cards[-1] if cards else None
        return next((c for c in cards if c.version == version), None)

    def lookup(self, name: str, version: str | None = None) -> ModelCard:
        """:meth:`card`, or LookupError saying what the store has instead."""
        card = self.card(name, version)
        if card is not None:
            return card
        known = self.versions.get(name)
        if not known:
            raise LookupError(f"no model named {name!r}")
        raise LookupError(f"{name} has no version {version!r}; it has {', '.join(c.version for c in known)}")

    @property
    def max_halo(self) -> int:
        """The widest context any resident network needs (pricing a request before its model)."""
        return max((m.halo for m in self), default=0)

    def resident(self, card: ModelCard) -> ResidentModel | None:
        """The model serving ``card`` if it is loaded: the newest at start-up, an older one
        once something asked for it."""
        newest = self._models.get((card.method, card.scale))
        if newest is not None and newest.card.ref == card.ref:
            return newest
        return self._older.get(card.ref)

    def versioned(self, card: ModelCard) -> ResidentModel:
        """The model serving ``card``, loading an older version on first use (blocking: call
        it off the event loop). Older versions run on torch eager, with no ONNX session: they
        cost their weights (0.1-0.5 MB for the shipped ones) and a load of tens of ms."""
        loaded = self.resident(card)
        if loaded is not None:
            return loaded
        newest = self._models[(card.method, card.scale)]
        with self._loading:
            if card.ref not in self._older:
                module = _served(card, newest.device, newest.dtype)
                self._older[card.ref] = ResidentModel(card.method, card.scale, card, module,
                                                      newest.device, newest.dtype)
                log.info("loaded %s on first use", card.ref)
            return self._older[card.ref]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._models.values())

    def methods(self) -> dict[str, list[int]]:
        offered: dict[str, list[int]] = {}
        for method, scale in sorted(self._models):
            offered.setdefault(method, []).append(scale)
        return offered
