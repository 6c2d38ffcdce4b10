"""What the app's lifespan owns: settings, resident models, the batcher, pools, metrics, the
measured tables and the admission state. Built in the lifespan, reached by handlers through
``RuntimeDep``; the wiring of the serving parts, and the lifecycle (ready, draining, drained)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import torch
from prometheus_client import CollectorRegistry

from service.config import SCALES, Settings
from service.errors import Draining, Overloaded
from service.imaging.gain import GAIN_FILE, GainModel, load_gain_models
from service.imaging.resamplers import CLASSICAL_METHODS
from service.models.device import resolve_device, resolve_dtype
from service.models.inference import run_network
from service.models.resident import ModelSet
from service.serving.batching import Batcher, BatchStats, RunBatch, retry_after_s
from service.serving.choice import (
    CLASSICAL_QUALITY_FILE,
    Choice,
    ChoiceRequest,
    CostModel,
    QualityTable,
    adjust_for_content,
    candidates_for,
    choose,
)
from service.serving.metrics import Metrics, build_metrics, watch_cuda_memory

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Lifecycle:
    ready: bool = False
    draining: bool = False
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Runtime:
    settings: Settings
    device: torch.device
    dtype: torch.dtype
    models: ModelSet
    batcher: Batcher
    codec_pool: ThreadPoolExecutor
    metrics: Metrics
    quality: QualityTable
    gain_models: dict[int, GainModel]
    costs: CostModel = field(default_factory=CostModel)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    @classmethod
    def start(
        cls,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        *,
        run_batch: RunBatch = run_network,
    ) -> Runtime:
        """Load the models and start the batcher; call inside a running event loop.

        ``run_batch`` runs one batch on the device (tests pass a slow or failing one)."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        if device.type == "cpu" and settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        models = ModelSet.load(
            settings.model_store, device, dtype, backend=settings.backend,
            threads=torch.get_num_threads(), batch=settings.max_batch_size, tile=settings.tile_size,
        )
        offered = [(m, s) for m, scales in offered_methods(models).items() for s in scales]
        metrics = build_metrics(registry or CollectorRegistry(), offered)
        for m in models:
            metrics.model_info.labels(
                model=m.card.name, version=m.card.version, scale=str(m.scale),
                device=str(device), dtype=str(dtype).removeprefix("torch."),
            ).set(1)
        if device.type == "cuda":
            watch_cuda_memory(
                metrics, str(device),
                functools.partial(torch.cuda.memory_allocated, device),
                functools.partial(torch.cuda.memory_reserved, device),
            )
        lifecycle = Lifecycle()
        batcher = Batcher(
            device,
            run_batch,
            max_batch_tiles=settings.max_batch_size,
            tile_size=settings.tile_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1000.0,
            on_batch=functools.partial(_observe_batch, metrics, lifecycle),
        )
        metrics.queue_depth.set_function(lambda: batcher.queued_tiles)
        metrics.admission_limit.set(settings.max_queue)
        runtime = cls(
            settings=settings,
            device=device,
            dtype=dtype,
            models=models,
            batcher=batcher,
            codec_pool=ThreadPoolExecutor(
                settings.codec_threads, thread_name_prefix="codec", initializer=_yield_to_inference
            ),
            metrics=metrics,
            quality=QualityTable.load(
                [(m.method, m.scale, m.card.raw.get("benchmarks", {})) for m in models],
                settings.model_store / CLASSICAL_QUALITY_FILE,
            ),
            gain_models=load_gain_models(settings.model_store / GAIN_FILE),
            lifecycle=lifecycle,
        )
        lifecycle.idle.set()
        metrics.ready.set_function(lambda: float(lifecycle.ready and not lifecycle.draining))
        batcher.start()
        return runtime

    def offered(self) -> dict[str, list[int]]:
        return offered_methods(self.models)

    def choose(self, request: ChoiceRequest, proxy_db: float | None = None) -> Choice:
        """The method-choice policy on this server's measured quality, cost and queue.
        ``proxy_db``: the image's proxy gain (``imaging.gain``), when the image is at hand."""
        candidates = candidates_for(
            request, self.offered(), self.costs, self.quality, self.batcher.expected_wait_s() * 1000
        )
        if proxy_db is not None:
            adjust_for_content(
                candidates, self.quality, self.gain_models.get(request.scale), request.scale,
                proxy_db, self.settings.auto_min_gain_db,
            )
        return choose(candidates, objective=request.objective,
                      max_latency_ms=request.max_latency_ms, min_psnr_db=request.min_psnr_db)

    def warm_up(self) -> None:
        """One pass of every model at tile size, so the first request pays no lazy init."""
        side = self.settings.tile_size
        for model in self.models:
            run_network(model, torch.full((1, 1, side + 2 * model.halo, side + 2 * model.halo), 128.0))
            log.info("warmed up %s (%s x%d)", model.ref, model.method, model.scale)

    async def in_codec_pool(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.codec_pool, functools.partial(func, *args, **kwargs))

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[float]:
        """Admit a request or refuse it at once; yields its deadline (monotonic seconds)."""
        state = self.lifecycle
        if state.draining:
            raise Draining()
        if state.inflight >= self.settings.max_queue:
            wait = self.batcher.expected_wait_s()
            raise Overloaded(
                f"{state.inflight} requests are in progress (limit {self.settings.max_queue}); "
                f"retry in about {wait:.1f} s",
                retry_after_s=retry_after_s(wait),
            )
        state.inflight += 1
        state.idle.clear()
        self.metrics.inflight.inc()
        try:
            yield time.monotonic() + self.settings.request_timeout_s
        finally:
            state.inflight -= 1
            self.metrics.inflight.dec()
            if state.inflight == 0:
                state.idle.set()

    def begin_drain(self) -> None:
        """From now on readiness is 503 and new requests are refused with 503 ``draining``."""
        self.lifecycle.draining = True

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work, then wait for the admitted requests to finish."""
        self.begin_drain()
        try:
            await asyncio.wait_for(self.lifecycle.idle.wait(), timeout=timeout_s)
        except TimeoutError:
            log.warning("drain timed out with %d requests in flight", self.lifecycle.inflight)

    async def close(self) -> None:
        await self.batcher.stop()
        self.codec_pool.shutdown(wait=True)


def offered_methods(models: ModelSet) -> dict[str, list[int]]:
    """Method -> scales this server answers: the resamplers at every scale, the models shipped."""
    offered = {m: list(SCALES) for m in CLASSICAL_METHODS}
    offered.update(models.methods())
    return offered


def _yield_to_inference() -> None:
    """Run codec threads at a lower CPU priority (Linux nice is per thread).

    On a small CPU, decode/encode and the network compete for the same cores; the network's
    threads then hold a batch of several requests hostage. Niced codec threads still get every
    idle cycle, but the scheduler lets inference go first.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 5)
    except (AttributeError, OSError):  # not Linux, or not permitted: keep the default
        pass


def _observe_batch(metrics: Metrics, lifecycle: Lifecycle, stats: BatchStats) -> None:
    if not lifecycle.ready:
        return  # warm-up and calibration batches are not traffic
    labels = {"method": stats.model.method, "scale": str(stats.model.scale)}
    metrics.inference_duration.labels(**labels).observe(stats.seconds)
    metrics.batch_size.labels(**labels).observe(stats.tiles)
