"""What the app's lifespan owns: settings, resident models, worker pools and readiness."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import torch

from service.config import Settings
from service.device import resolve_device, resolve_dtype
from service.engine import InferenceEngine
from service.inference import run_network
from service.models.resident import ModelSet

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Lifecycle:
    ready: bool = False
    draining: bool = False


@dataclass
class Runtime:
    settings: Settings
    device: torch.device
    dtype: torch.dtype
    models: ModelSet
    engine: InferenceEngine
    codec_pool: ThreadPoolExecutor
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if device.type == "cpu":
            # Decode/encode threads need cores too: torch gets the cores unless told otherwise.
            torch.set_num_threads(settings.torch_threads or (torch.get_num_threads() or 1))
        models = ModelSet.load(settings.model_store, device, dtype)
        runtime = cls(
            settings=settings,
            device=device,
            dtype=dtype,
            models=models,
            engine=InferenceEngine(device),
            codec_pool=ThreadPoolExecutor(settings.codec_threads, thread_name_prefix="codec"),
        )
        return runtime

    def warm_up(self) -> None:
        """One pass of every model, so the first request does not pay for lazy init."""
        probe = torch.full((1, 1, 24, 24), 128.0)
        for model in self.models:
            run_network(model, probe)
            log.info("warmed up %s (%s x%d)", model.ref, model.method, model.scale)

    async def in_codec_pool(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.codec_pool, functools.partial(func, *args, **kwargs))

    def close(self) -> None:
        self.engine.close()
        self.codec_pool.shutdown(wait=True)
