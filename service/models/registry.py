"""Architectures by name, so ``model.json`` can say which code builds its weights."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from service.models.ecb import RepSubPixel
from service.models.espcn import ESPCN
from service.models.large import ESPCNLarge

Builder = Callable[..., nn.Module]


class Registry:
    """Name -> builder; refuses duplicates and lists what it knows for an unknown name."""

    def __init__(self) -> None:
        self._builders: dict[str, Builder] = {}

    def register(self, name: str, builder: Builder) -> None:
        if name in self._builders:
            raise ValueError(f"architecture {name!r} is already registered")
        self._builders[name] = builder

    def build(self, name: str, **kwargs: Any) -> nn.Module:
        try:
            builder = self._builders[name]
        except KeyError:
            known = ", ".join(sorted(self._builders))
            raise KeyError(f"unknown architecture {name!r}; known: {known}") from None
        return builder(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)


ARCHITECTURES = Registry()
ARCHITECTURES.register("espcn", ESPCN)
ARCHITECTURES.register("espcn-large", ESPCNLarge)
# The re-parameterised tiers, sized to the multiply-adds of espcn and espcn-large.
ARCHITECTURES.register("ecbsr", functools.partial(RepSubPixel, channels=23, blocks=4))
ARCHITECTURES.register("ecbsr-large", functools.partial(RepSubPixel, channels=40, blocks=8))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_lr_pixel(model: nn.Module) -> int:
    """Multiply-adds per low-resolution pixel of the served network: every convolution, plus
    any other per-pixel work it declares (``extra_macs_per_lr_pixel``: a bicubic base's 16 taps
    per output pixel, ``valid.BICUBIC_MACS_PER_OUTPUT_PIXEL``).
    A re-parameterisable network is counted folded, as it is served."""
    if hasattr(model, "fold"):
        model = model.fold()
    total = int(getattr(model, "extra_macs_per_lr_pixel", 0))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += module.in_channels * module.out_channels * k // module.groups
    return total
