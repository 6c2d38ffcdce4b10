"""Dynamic batching across requests of any size: tiles in, one device thread, futures out.

Each request's LR luminance is cut into tiles (``service.tiling``) that all fit one canvas
size per model, so a batch mixes tiles of different images and a large image streams through
in pieces. One scheduler task per device forms batches; one worker thread per device runs
them, so the event loop never waits on a network.

Scheduling: a batch goes to the device at once when the device is idle and tiles are queued.
While a batch runs, the next one is collected and sealed when it is full, when its oldest
tile has waited ``max_batch_delay_ms``, or when the device frees up; it then waits in the
worker's queue so the device never idles between batches (two batches in flight at most).
A batch is for the model of the oldest queued tile; its tiles are taken round robin over that
model's requests, oldest request first, so a small request is not queued behind every tile of
a large image or a video chunk. Background work (``/v1/jobs``) has the lowest priority: a
batch is for the model of the oldest interactive tile when there is one, and background tiles
only fill the slots interactive requests leave empty.

Callers see one awaitable, :meth:`Batcher.run` (Ray Serve's shape): it queues a plane, waits
for its result, the request's absolute deadline or the caller abandoning it, whichever comes
first, and takes the request's tiles out of the queue when it stops waiting. The deadline is
the request's own, one monotonic instant, checked again before a sealed batch runs.

Faults stay local: a batch that raises (out of memory, or one poisoned tile) is retried in
halves down to single tiles, so only the tiles that fail alone fail, and only their requests;
a batch that does not return one result per tile is retried the same way. No HTTP here: it is tested with fake
networks in plain asyncio.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from service.errors import ClientDisconnected, DeadlineExceeded, InferenceFailed
from service.imaging.borders import extend_borders
from service.models.resident import ResidentModel
from service.serving.tiling import Tile, assemble, place, plan_tiles, window_of

log = logging.getLogger(__name__)



# (model, (N, 1, h, w) canvas of windows) -> their centres, (N, 1, (h - 2 halo) r, (w - 2 halo) r):
# models.inference.run_network.
RunBatch = Callable[[ResidentModel, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NetworkResult:
    """A request's upscaled plane and what it cost: the wait before its first tile ran and its
    share of device time."""

    plane: torch.Tensor  # (rH, rW) float32 0..255
    queue_s: float
    infer_s: float


@dataclass(eq=False)
class Job:
    """One request's network work: its plane, its tiles, where the result goes."""

    model: ResidentModel
    luma: torch.Tensor  # (H + 2 halo, W + 2 halo) float32 0..255, borders extended, host memory
    tiles: list[Tile]
    output: torch.Tensor  # (rH, rW) float32, filled tile by tile by the worker thread
    future: asyncio.Future[torch.Tensor]
    enqueued_at: float
    deadline: float
    remaining: int = 0
    background: bool = False
    started_at: float | None = None
    infer_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.future.done()


@dataclass(frozen=True)
class TileWork:
    job: Job
    tile: Tile


@dataclass
class BatchStats:
    """What the metrics and the cost model want to know about each batch."""

    model: ResidentModel
    tiles: int
    seconds: float


class _Expired(Exception):
    """Marks a tile skipped on the device thread because its request was over or expired."""


def _deadline_exceeded(job: Job, now: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"the request waited {now - job.enqueued_at:.1f} s for the model")


class _WrongResultCount(RuntimeError):
    """The network returned another number of results than the batch had tiles."""


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc)
    )


class Batcher:
    """The per-device queue, scheduler and worker thread."""

    def __init__(
        self,
        device: torch.device,
        run_batch: RunBatch,
        *,
        max_batch_tiles: int,
        tile_size: int,
        max_batch_delay_s: float,
        on_batch: Callable[[BatchStats], None] | None = None,
        workers: int = 1,
    ) -> None:
        self.device = device
        self.workers = workers
        self.max_batch_tiles = max_batch_tiles
        self.tile_size = tile_size
        self.max_batch_delay_s = max_batch_delay_s
        self._run = run_batch
        self._on_batch = on_batch
        self._queue: collections.deque[TileWork] = collections.deque()
        self._work = asyncio.Event()
        # Batches in flight: one running on each worker, one sealed and waiting behind them.
        self._slots = asyncio.Semaphore(workers + 1)
        self._inflight = 0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"infer-{device}")
        self._task: asyncio.Task[None] | None = None
        self._tiles_per_s = 0.0  # one worker's drain rate, exponentially weighted
        self._running: dict[int, float] = {}  # worker thread -> when its batch started
        self._running_lock = threading.Lock()  # workers write it; the loop and workers read it

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._schedule(), name="batcher")
        self._task.add_done_callback(self._on_scheduler_exit)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for work in self._queue:
            if not work.job.done:
                work.job.future.set_exception(InferenceFailed("the server stopped"))
        self._queue.clear()
        self._executor.shutdown(wait=True)

    @staticmethod
    def _on_scheduler_exit(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("batch scheduler died", exc_info=task.exception())

    # -- the queue ---------------------------------------------------------------------------

    @property
    def queued_tiles(self) -> int:
        return len(self._queue)

    @property
    def running_batches(self) -> int:
        """Batches on the device now (at most ``workers``)."""
        return len(self._running)

    def running_for_s(self) -> float | None:
        """How long the oldest batch on the device has been running; None when it is idle."""
        with self._running_lock:
            started = min(self._running.values(), default=None)
        return None if started is None else time.monotonic() - started

    def expected_wait_s(self) -> float:
        """How long the tiles queued now need to drain, from the measured drain rate."""
        if self._tiles_per_s <= 0:
            return 0.0
        return (len(self._queue) + self._inflight * self.max_batch_tiles) / (self._tiles_per_s * self.workers)

    async def run(
        self,
        model: ResidentModel,
        luma: torch.Tensor,
        deadline: float,
        *,
        abandoned: Callable[[], Awaitable[object]] | None = None,
        background: bool = False,
    ) -> NetworkResult:
        """Upscale an (H, W) plane in 0..255 with ``model``, its tiles batched with everyone's.

        ``deadline`` is the request's (``time.monotonic()``); past it, DeadlineExceeded.
        ``abandoned()`` makes an awaitable that resolves when the caller no longer wants the
        answer (the client hung up); then ClientDisconnected. Either way the request's queued tiles leave the queue.
        ``background``: a job's work, batched only into the slots interactive requests leave.
        """
        job = self._submit(model, luma, deadline, background)
        watcher = asyncio.ensure_future(abandoned()) if abandoned is not None else None
        try:
            waiting: set[asyncio.Future[object]] = {job.future}  # type: ignore[arg-type]
            if watcher is not None:
                waiting.add(watcher)
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if job.future in done:
                plane = job.future.result()
                queue_s = (job.started_at or job.enqueued_at) - job.enqueued_at
                return NetworkResult(plane, queue_s, job.infer_s)
            if watcher is not None and watcher in done:
                raise ClientDisconnected("the client went away; its work was dropped")
            raise _deadline_exceeded(job, time.monotonic())
        finally:
            if watcher is not None:
                watcher.cancel()
            self._cancel(job)

    def _submit(self, model: ResidentModel, luma: torch.Tensor, deadline: float, background: bool = False) -> Job:
        now = time.monotonic()
        padded = extend_borders(luma, model.halo)
        tiles = plan_tiles(padded.shape[0], padded.shape[1], self.tile_size, model.halo)
        r = model.scale
        job = Job(
            model=model,
            luma=padded,
            tiles=tiles,
            output=torch.empty(luma.shape[0] * r, luma.shape[1] * r),
            future=asyncio.get_running_loop().create_future(),
            enqueued_at=now,
            deadline=deadline,
            remaining=len(tiles),
            background=background,
        )
        self._queue.extend(TileWork(job, t) for t in tiles)
        self._work.set()
        return job

    def _cancel(self, job: Job) -> None:
        """Drop a job: its queued tiles leave the queue now; tiles already sealed into a
        batch are skipped on the device thread. Nothing to do for a finished job."""
        if not job.done:
            job.future.cancel()
        elif not job.future.cancelled():
            # Its caller may have been cancelled before reading it (a sibling frame failed
            # first): the outcome is consumed here, so asyncio does not report it as lost.
            job.future.exception()
        if any(w.job is job for w in self._queue):
            self._queue = collections.deque(w for w in self._queue if w.job is not job)

    # -- scheduling --------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._work.wait()
            await self._slots.acquire()
            if self._inflight >= self.workers:
                await self._collect_while_busy()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                if not self._queue:
                    self._work.clear()
                continue
            self._inflight += 1
            started = time.monotonic()
            for work in batch:
                if work.job.started_at is None:
                    work.job.started_at = started
            future = loop.run_in_executor(self._executor, self._execute, batch)
            future.add_done_callback(lambda f, b=batch: self._finish(b, f))

    async def _collect_while_busy(self) -> None:
        """Every worker is busy: let the batch fill until full, the delay, or a worker frees."""
        while len(self._queue) < self.max_batch_tiles and self._inflight >= self.workers and self._queue:
            oldest = self._queue[0].job.enqueued_at
            left = oldest + self.max_batch_delay_s - time.monotonic()
            if left <= 0:
                return
            self._work.clear()
            try:
                await asyncio.wait_for(self._work.wait(), timeout=left)
            except TimeoutError:
                pass

    def _take_batch(self) -> list[TileWork]:
        now = time.monotonic()
        # Drop tiles of cancelled and expired jobs from the head, so they cost nothing.
        while self._queue and self._expired_or_done(self._queue[0].job, now):
            self._queue.popleft()
        if not self._queue:
            return []
        interactive = next((w for w in self._queue if not w.job.background and not w.job.done), None)
        model = (interactive or self._queue[0]).job.model
        # Round robin over the requests of that model, oldest request first: a request of one
        # tile queued behind a video chunk's fifty goes into the next batch, not the ninth.
        # Dicts keep insertion order, so this is queue order.
        by_job: dict[Job, collections.deque[TileWork]] = {}
        for work in self._queue:
            if self._expired_or_done(work.job, now):
                continue
            if work.job.model is model:
                by_job.setdefault(work.job, collections.deque()).append(work)
        batch: list[TileWork] = []
        for background in (False, True):
            queues = [tiles for job, tiles in by_job.items() if job.background is background]
            while queues and len(batch) < self.max_batch_tiles:
                for tiles in queues:
                    if len(batch) < self.max_batch_tiles:
                        batch.append(tiles.popleft())
                queues = [tiles for tiles in queues if tiles]
        taken = {id(work) for work in batch}
        self._queue = collections.deque(
            w for w in self._queue if id(w) not in taken and not w.job.done and w.job.deadline >= now
        )
        return batch

    @staticmethod
    def _expired_or_done(job: Job, now: float) -> bool:
        if job.done:
            return True
        if now > job.deadline:
            job.future.set_exception(_deadline_exceeded(job, now))
            return True
        return False

    # -- the worker thread -------------------------------------------------------------------

    def _execute(self, batch: list[TileWork]) -> list[BaseException | None]:
        """Runs on the device thread: assemble, infer (splitting on OOM), place results."""
        outcome: list[BaseException | None] = [None] * len(batch)
        now = time.monotonic()
        live = []
        for i, work in enumerate(batch):
            # A sealed batch may have waited behind the running one: skip what expired or
            # was cancelled meanwhile (the loop side turns the marker into the answer).
            if work.job.done or now > work.job.deadline:
                outcome[i] = _Expired()
            else:
                live.append(i)
        if live:
            worker = threading.get_ident()
            with self._running_lock:
                self._running[worker] = now
            try:
                self._run_split(batch, live, outcome)
            finally:
                with self._running_lock:
                    del self._running[worker]
        return outcome

    def _run_split(self, batch: list[TileWork], index: list[int], outcome: list[BaseException | None]) -> None:
        works = [batch[i] for i in index]
        model = works[0].job.model
        try:
            canvas = assemble([window_of(w.job.luma, w.tile) for w in works])
            started = time.monotonic()
            result = self._run(model, canvas)
            seconds = time.monotonic() - started
            if result.shape[0] != len(works):
                raise _WrongResultCount(f"{result.shape[0]} results for {len(works)} tiles")
        except Exception as exc:  # noqa: BLE001 - any failure must reach the requests
            if len(index) > 1:
                # Out of memory, or one bad tile: retry in halves, down to single tiles, so only
                # the tiles that fail alone fail (and only their requests).
                if _is_oom(exc) and self.device.type == "cuda":
                    torch.cuda.empty_cache()
                half = len(index) // 2
                log.warning("%s on %d tiles; retrying as %d + %d", "out of memory" if _is_oom(exc)
                            else type(exc).__name__, len(index), half, len(index) - half)
                self._run_split(batch, index[:half], outcome)
                self._run_split(batch, index[half:], outcome)
                return
            log.exception("a tile for %s failed on its own", model.ref)
            for i in index:
                outcome[i] = exc
            return
        share = seconds / len(works)
        for k, work in enumerate(works):
            place(work.job.output, result[k, 0], work.tile, model.scale, model.halo)
            work.job.infer_s += share
        if self._on_batch is not None:
            self._on_batch(BatchStats(model, len(works), seconds))
        rate = len(works) / max(seconds, 1e-6)
        self._tiles_per_s = rate if self._tiles_per_s == 0 else 0.8 * self._tiles_per_s + 0.2 * rate

    def _finish(self, batch: list[TileWork], future: asyncio.Future[list[BaseException | None]]) -> None:
        """Back on the event loop: count finished tiles, resolve finished jobs."""
        self._inflight -= 1
        self._slots.release()
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - the executor itself failed
            outcome = [exc] * len(batch)
        for work, error in zip(batch, outcome, strict=True):
            job = work.job
            if job.done:
                continue
            if isinstance(error, _Expired):
                job.future.set_exception(_deadline_exceeded(job, time.monotonic()))
                continue
            if error is not None:
                detail = "out of memory" if _is_oom(error) else type(error).__name__
                job.future.set_exception(InferenceFailed(f"the model failed on this request: {detail}"))
                continue
            job.remaining -= 1
            if job.remaining == 0:
                job.future.set_result(job.output)
        if self._queue:
            self._work.set()


def retry_after_s(expected_wait_s: float) -> int:
    return max(1, math.ceil(expected_wait_s))
