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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import cv2
import torch
from prometheus_client import CollectorRegistry

from service.config import SCALES, Settings
from service.errors import Draining, Overloaded
from service.imaging.codec import ImageHeader
from service.imaging.gain import GAIN_FILE, GainModel, load_gain_models
from service.imaging.resamplers import CLASSICAL_METHODS
from service.models.device import resolve_device, resolve_dtype
from service.models.inference import run_network
from service.models.resident import ModelSet
from service.serving.admission import (
    MemoryBudget,
    RequestCost,
    TooLateToStart,
    container_memory_limit,
    default_budget,
    estimate_memory,
    physical_memory,
    resident_bytes,
)
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
from service.serving.codec_pool import CodecPool
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
    device_hung: bool = False
    # Predicted seconds of work admitted and not finished (the cost model's, where it knows).
    backlog_s: float = 0.0


@dataclass
class Runtime:
    settings: Settings
    device: torch.device
    dtype: torch.dtype
    models: ModelSet
    batcher: Batcher
    codec_pool: CodecPool
    memory: MemoryBudget
    metrics: Metrics
    quality: QualityTable
    gain_models: dict[int, GainModel]
    costs: CostModel = field(default_factory=CostModel)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # Run first when draining begins (the job runner hands its running jobs back).
    drain_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _watchdog: asyncio.Task[None] = field(init=False, repr=False)

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
        codec_pool = CodecPool(settings.codec_threads, initializer=_yield_to_inference)
        batcher: Batcher | None = None

        def crowded() -> bool:
            """Other work for the cores: a codec job, or another batch (the batcher is made
            after the models; a batch only runs once it exists)."""
            return codec_pool.busy or (batcher is not None and batcher.running_batches > 1)

        try:
            models = ModelSet.load(
                settings.model_store, device, dtype, backend=settings.backend,
                threads=torch.get_num_threads(), batch=settings.max_batch_size, tile=settings.tile_size,
                crowded=crowded,
            )
        except BaseException:
            codec_pool.shutdown()
            raise
        on_onnx = device.type == "cpu" and all(m.backend["backend"] == "onnxruntime" for m in models)
        # Two batches at once, each on one thread, keep both cores on the network when it is the
        # bottleneck (128x128 x3 c=16: 144.8, 145.9 against 134.6, 133.6 images/s with one;
        # python -m benchmarks.profile). Torch's intra-op pool is one per process, so its
        # batches would share it; a GPU runs one stream.
        workers = settings.infer_workers or (2 if on_onnx else 1)
        if on_onnx and not settings.torch_threads:
            # The networks run on ONNX Runtime's own threads; torch is left the codec threads'
            # colour work, where its intra-op pool only makes the two codec threads and the
            # network's threads fight over two cores.
            torch.set_num_threads(1)
        # OpenCV's resizes and adds run on the codec threads, which are the parallelism of that
        # work: its own pool on top would put four threads on two cores.
        cv2.setNumThreads(1)
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
            workers=workers,
        )
        metrics.queue_depth.set_function(lambda: batcher.queued_tiles)
        metrics.admission_limit.set(settings.max_queue)
        memory = MemoryBudget(settings.memory_budget_bytes or default_budget(
            container_memory_limit() or physical_memory(), resident_bytes()
        ))
        log.info("memory budget for requests: %.0f MiB", memory.budget_bytes / 2**20)
        metrics.memory_budget.set(memory.budget_bytes)
        metrics.memory_reserved.set_function(lambda: memory.reserved_bytes)
        metrics.device_hung.set_function(lambda: float(lifecycle.device_hung))
        runtime = cls(
            settings=settings,
            device=device,
            dtype=dtype,
            models=models,
            batcher=batcher,
            codec_pool=codec_pool,
            memory=memory,
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
        runtime._watchdog = asyncio.get_running_loop().create_task(runtime._watch_device(), name="watchdog")
        return runtime

    async def _watch_device(self) -> None:
        """A batch past ``watchdog_s`` marks the device hung: readiness turns 503 so the load
        balancer sends traffic elsewhere, counted once per hang; it clears when the batch ends."""
        interval = min(1.0, self.settings.watchdog_s / 4)
        while True:
            await asyncio.sleep(interval)
            running = self.batcher.running_for_s()
            hung = running is not None and running > self.settings.watchdog_s
            if hung and not self.lifecycle.device_hung:
                self.metrics.device_hangs.inc()
                log.error("a batch has run for %.0f s (SR_WATCHDOG_S=%s): not ready until it ends",
                          running, self.settings.watchdog_s)
            elif not hung and self.lifecycle.device_hung:
                log.warning("the device answered again: ready")
            self.lifecycle.device_hung = hung

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
        """CPU work that is not a request's (warm-up, calibration): first in the pool's order."""
        return await self.codec_pool.run(functools.partial(func, *args, **kwargs))

    def cost_of(self, header: ImageHeader, method: str, scale: int, body_bytes: int, fmt: str) -> RequestCost:
        """The request's estimated peak memory and, where the cost model knows, its work.
        ``auto`` is priced as its most expensive candidate would be: a network."""
        model = self.models.get(method, scale)
        learned = method not in CLASSICAL_METHODS
        halo = model.halo if model is not None else self.models.max_halo
        # An animation holds all its frames, decoded and upscaled, until it is encoded.
        memory = estimate_memory(header.width, header.height * header.frames, header.channels, scale,
                                 learned=learned, halo=halo, body_bytes=body_bytes)
        work_ms = self.costs.predict_ms(method, scale, header.width, header.height * header.frames, fmt)
        return RequestCost(memory, None if work_ms is None else work_ms / 1000, learned)

    @asynccontextmanager
    async def admission(
        self, cost: RequestCost, describe: str = "the request", *, timeout_s: float | None = None
    ) -> AsyncIterator[float]:
        """Admit a request whose body has arrived, or refuse it at once; yields its deadline
        (monotonic seconds), ``timeout_s`` (default SR_REQUEST_TIMEOUT_S; a job's is longer)
        from now. Refused: 503 while draining, when ``max_queue`` requests are in progress,
        when its memory does not fit beside theirs, or when the work admitted before it leaves
        no time to finish before its deadline; 413 when it could never fit here."""
        state, settings = self.lifecycle, self.settings
        timeout_s = timeout_s or settings.request_timeout_s
        if state.draining:
            raise Draining()
        self.memory.check_fits_alone(cost, describe)
        # What is ahead of it: the codec threads' share of the admitted work, and for a network
        # the device's queue; a resampler does not wait for the device.
        wait = state.backlog_s / max(1, settings.codec_threads)
        if cost.learned:
            wait = max(wait, self.batcher.expected_wait_s())
        if state.inflight >= settings.max_queue:
            raise Overloaded(
                f"{state.inflight} requests are in progress (limit {settings.max_queue}); "
                f"retry in about {wait:.1f} s",
                retry_after_s=retry_after_s(wait),
            )
        if cost.work_s is not None and wait > 0 and wait + cost.work_s > timeout_s:
            raise TooLateToStart(
                f"the work ahead of this request needs about {wait:.1f} s and its own about "
                f"{cost.work_s:.1f} s: it could not finish within {timeout_s} s",
                retry_after_s=retry_after_s(wait),
            )
        self.memory.reserve(cost, retry_after_s(wait))
        state.inflight += 1
        state.backlog_s += cost.work_s or 0.0
        state.idle.clear()
        self.metrics.inflight.inc()
        try:
            yield time.monotonic() + timeout_s
        finally:
            self.memory.release(cost)
            state.inflight -= 1
            state.backlog_s = max(0.0, state.backlog_s - (cost.work_s or 0.0))
            self.metrics.inflight.dec()
            if state.inflight == 0:
                state.idle.set()
                state.backlog_s = 0.0  # no drift from float sums

    def begin_drain(self) -> None:
        """From now on readiness is 503 and new requests are refused with 503 ``draining``."""
        self.lifecycle.draining = True

    async def drain(self, timeout_s: float) -> None:
        """Refuse new work, hand the running jobs back to the queue (another replica resumes
        them now, not after a lease or a deadline), then wait for the admitted requests."""
        self.begin_drain()
        for hook in self.drain_hooks:
            await hook()
        try:
            await asyncio.wait_for(self.lifecycle.idle.wait(), timeout=timeout_s)
        except TimeoutError:
            log.warning("drain timed out with %d requests in flight", self.lifecycle.inflight)

    async def close(self) -> None:
        self._watchdog.cancel()
        await self.batcher.stop()
        self.codec_pool.shutdown()


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
