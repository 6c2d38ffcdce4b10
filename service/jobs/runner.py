"""Jobs: long work (a video, a large batch of frames) taken as a request, run in the background
through the same pipeline, its state in the job store and its result on disk.

The app's lifespan owns one :class:`JobRunner`. Submitting checks the parameters and the
input's header (the same 4xx as ``/v1/upscale``, at once), files the input and queues a row.
``SR_JOB_WORKERS`` worker tasks per replica claim the oldest queued job from the store (any
replica's), run it with ``serving.upscaler`` as background work (behind every interactive
request in the codec pool and the batcher), write the result beside the input, and record
the outcome. While a job runs, a heartbeat renews its lease and its progress every second or
so, and picks up a DELETE made on any replica. A sweeper deletes finished jobs past
``SR_JOB_RETENTION_S`` with their files, and refreshes the job gauges.

Restarts: a finished result is a file and a row, so it outlives the process. A replica that
stops cleanly hands its running jobs back to the queue; one that dies leaves them to run out
their lease, after which any replica runs them again from the start (``SR_JOB_MAX_ATTEMPTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from service.errors import (
    Draining,
    JobsUnavailable,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
)
from service.jobs.files import JobFiles
from service.jobs.store import Job, JobStore, SqliteJobStore
from service.serving import upscaler
from service.serving.admission import RequestCost
from service.serving.runtime import Runtime
from service.serving.upscaler import UpscaleParams, UpscaleRequest

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often a running job reports; its lease is several of these.
_HEARTBEAT_S = 1.0
# How often an idle worker looks for a job another replica queued (a local submit wakes it).
_POLL_S = 1.0
_SWEEP_S = 5.0
_DATABASE_RETRY_S = 5.0
_DATABASE_TIMEOUT_S = 15.0
# The sweeper looks for orphaned files (no row) this often, in sweeps.
_ORPHAN_SWEEPS = 60


def _database_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    with contextlib.suppress(ImportError):
        import psycopg

        errors.append(psycopg.Error)
    return tuple(errors)


@dataclass(frozen=True)
class JobParams:
    """What a job was asked: ``/v1/upscale``'s parameters, the Accept header, what the body is."""

    asked: UpscaleParams
    accept: str = ""
    video: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobParams:
        return cls(UpscaleParams(**data["asked"]), data.get("accept", ""), bool(data.get("video")))

    def request(self, runtime: Runtime) -> UpscaleRequest:
        """Checked against this replica's models (another replica may have queued it)."""
        return self.asked.check(runtime.offered(), runtime.models)


def store_opener(database_url: str, jobs_dir: Path) -> Callable[[], JobStore]:
    """How to connect to the job store the URL names, checked now (a wrong URL is a start-up
    error, not a 500 per request later): ``postgresql://...`` -> PostgreSQL; empty -> SQLite
    at ``jobs_dir/jobs.sqlite3``; ``sqlite:///path`` -> SQLite there."""
    if database_url.startswith(("postgresql://", "postgres://")):
        from service.jobs.postgres import PostgresJobStore  # psycopg loads only when it is used

        return functools.partial(PostgresJobStore, database_url)
    if database_url.startswith("sqlite:///"):
        return functools.partial(SqliteJobStore, Path(database_url.removeprefix("sqlite:///")))
    if database_url:
        raise ValueError(f"SR_JOBS_DATABASE_URL must be postgresql://... or sqlite:///..., got {database_url!r}")
    return functools.partial(SqliteJobStore, jobs_dir / "jobs.sqlite3")


def open_store(database_url: str, jobs_dir: Path) -> JobStore:
    return store_opener(database_url, jobs_dir)()


class StoreThread:
    """The store's blocking calls, made one at a time from one thread off the event loop; a
    database that cannot be reached is a 503 ``jobs_unavailable``, and is connected to again at
    the next call: a server whose database is down still serves ``/v1/upscale``."""

    def __init__(self, connect: Callable[[], JobStore]) -> None:
        self._connect = connect
        self._store: JobStore | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="jobs-db")
        self._errors = _database_errors()

    def _with_store(self, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        if self._store is None:
            self._store = self._connect()
        return func(self._store, *args, **kwargs)

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(store, *args, **kwargs)`` on the database thread (``func``: a JobStore
        method), answered within ``_DATABASE_TIMEOUT_S`` or JobsUnavailable: a database that
        hangs must not hang the API (the thread itself is bounded by the driver's timeouts)."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._thread, self._with_store, func, args, kwargs), timeout=_DATABASE_TIMEOUT_S
            )
        except TimeoutError:
            log.error("job database: no answer within %s s", _DATABASE_TIMEOUT_S)
            raise JobsUnavailable(f"the job database did not answer within {_DATABASE_TIMEOUT_S} s") from None
        except self._errors as exc:
            log.error("job database: %s", exc)
            raise JobsUnavailable(f"the job database failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._store is not None:
            self._store.close()


@dataclass
class _Running:
    job: Job
    token: str  # this claim's owner in the database: this process, and this start of the job
    frames_done: int = 0
    frames_total: int = 0
    cancelled: bool = False  # by DELETE
    lost: bool = False  # the lease ran out and another replica took the job


class JobRunner:
    def __init__(self, runtime: Runtime, connect: Callable[[], JobStore], files: JobFiles) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.db = StoreThread(connect)
        self.files = files
        # Who claims: unique per process, readable in the database.
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._stopped: asyncio.Future[None] | None = None

    @classmethod
    def open(cls, runtime: Runtime) -> JobRunner:
        settings = runtime.settings
        return cls(runtime, store_opener(settings.jobs_database_url, settings.jobs_dir), JobFiles(settings.jobs_dir))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work_loop(), name=f"job-worker-{i}")
                       for i in range(self.settings.job_workers)]
        self._tasks.append(loop.create_task(self._sweep_loop(), name="job-sweeper"))

    async def stop(self) -> None:
        """Stop taking jobs; hand the running ones back to the queue for another replica (or
        this one, restarted) to run from the start. A second call waits for the first."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for running in list(self._running.values()):
            with contextlib.suppress(ServiceError):
                await self.db.call(JobStore.release, running.job.id, running.token, time.time(),
                                   self.settings.job_retention_s)
            log.info("job %s handed back to the queue", running.job.id)
        self._running.clear()

    async def close(self) -> None:
        """After :meth:`stop`, once nothing polls any more: the database connection."""
        await asyncio.to_thread(self.db.close)

    # -- the API's side ----------------------------------------------------------------------

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def input_path(self, job_id: str) -> Path:
        path = self.files.input(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    async def submit(self, job_id: str, params: JobParams, size: int) -> Job:
        """Check the filed input against the limits (the same 4xx as a request), then queue it.
        The caller has written the body to :meth:`input_path`; on a refusal it is removed."""
        runtime, settings = self.runtime, self.settings
        try:
            if runtime.lifecycle.draining:
                raise Draining()
            request = params.request(runtime)
            source = self.files.input(job_id)
            if params.video:
                header, _ = await asyncio.to_thread(upscaler.price_video, runtime, source, request, job=True)
                frames = header.frames
            else:
                if size > settings.max_upload_bytes:
                    raise PayloadTooLarge(f"an image job's upload is {size} bytes; the limit for images is "
                                          f"{settings.max_upload_bytes} (SR_MAX_UPLOAD_BYTES)")
                data = await asyncio.to_thread(source.read_bytes)
                image, _ = upscaler.price(runtime, data, request, params.accept)
                frames = image.frames
            counts = await self.db.call(JobStore.counts)
            active = counts["queued"] + counts["running"]
            if active >= settings.max_queued_jobs:
                raise Overloaded(f"{active} jobs are queued or running (SR_MAX_QUEUED_JOBS="
                                 f"{settings.max_queued_jobs}); retry later", retry_after_s=30)
            job = await self.db.call(JobStore.create, job_id, params.to_json(), frames, size, time.time())
        except BaseException:
            await asyncio.to_thread(self.files.remove, job_id)
            raise
        self._wake.set()
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.db.call(JobStore.get, job_id)
        if job is None:
            raise NotFound(f"no job {job_id} (it may have expired: SR_JOB_RETENTION_S)")
        running = self._running.get(job_id)
        if running is not None and job.state == "running":
            # Fresher than the last heartbeat.
            job = dataclasses.replace(job, frames_done=running.frames_done, frames_total=running.frames_total)
        return job

    async def cancel(self, job_id: str) -> Job | None:
        """DELETE: a queued job is cancelled, a running one asked to stop (its replica does so
        within a heartbeat), a finished one deleted with its result (None)."""
        job = await self.get(job_id)
        if job.finished:
            await self.db.call(JobStore.delete, job_id)
            await asyncio.to_thread(self.files.remove, job_id)
            return None
        job = await self.db.call(JobStore.cancel, job_id, time.time(), self.settings.job_retention_s)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.state == "cancelled":
            await asyncio.to_thread(self.files.remove, job_id)
        running = self._running.get(job_id)
        if running is not None:
            running.cancelled = True
            self._wake.set()
        return job

    def result_path(self, job: Job) -> Path:
        return self.files.result(job.id)

    # -- workers -----------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        settings = self.settings
        while not self._stopping:
            token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
            self._wake.clear()  # before looking: a submission from now on wakes us
            try:
                job = await self.db.call(JobStore.claim, token, time.time(), settings.job_lease_s,
                                         settings.job_max_attempts, settings.job_retention_s)
            except JobsUnavailable:
                await asyncio.sleep(_DATABASE_RETRY_S)  # logged once per try, not once a second
                continue
            except Exception:  # a bug of ours must not stop this worker for good
                log.exception("job worker: claiming failed")
                await asyncio.sleep(_DATABASE_RETRY_S)
                continue
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=_POLL_S)
                continue
            try:
                await self._run(job, token)
            except Exception:
                log.exception("job %s: the runner failed; its lease will return it", job.id)

    async def _run(self, job: Job, token: str) -> None:
        running = _Running(job, token, frames_total=job.frames_total)
        self._running[job.id] = running
        started = time.monotonic()
        log.info("job %s started (attempt %d)", job.id, job.attempts)
        work = asyncio.ensure_future(self._execute(running))
        beat = asyncio.ensure_future(self._heartbeat(running, work))
        outcome: tuple[str, dict[str, Any] | None, dict[str, Any] | None]
        try:
            result = await work
            outcome = ("succeeded", result, None)
        except asyncio.CancelledError:
            if self._stopping:
                raise  # stop() hands it back to the queue
            if running.lost:  # another replica runs it now, from the start; its files are its
                del self._running[job.id]
                return
            outcome = ("cancelled", None, None)
        except Draining:
            # SIGTERM came between the claim and admission: hand it back, do not fail it.
            with contextlib.suppress(ServiceError):
                await self.db.call(JobStore.release, job.id, token, time.time(), self.settings.job_retention_s)
            del self._running[job.id]
            return
        except ServiceError as error:
            outcome = ("failed", None, error.problem())
        except Exception:
            log.exception("job %s failed", job.id)
            outcome = ("failed", None, ServiceError("the job failed on an unexpected fault; see the server log").problem())
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        state, result, error = outcome
        recorded = await self._record(running, state, result, error)
        del self._running[job.id]
        if not recorded:
            return  # not ours any more (or not written): its files are its new owner's
        self.runtime.metrics.jobs_finished.labels(state=state).inc()
        self.runtime.metrics.job_duration.observe(time.monotonic() - started)
        log.info("job %s %s after %.1f s", job.id, state, time.monotonic() - started)
        if state != "succeeded":
            await asyncio.to_thread(self.files.remove, job.id)
        else:
            await asyncio.to_thread(self.files.remove_input, job.id, token)

    async def _record(self, running: _Running, state: str, result: dict[str, Any] | None,
                      error: dict[str, Any] | None) -> bool:
        # The outcome must reach the database: retried while it is unreachable.
        for attempt in range(10):
            try:
                return await self.db.call(
                    JobStore.finish, running.job.id, running.token, state, time.time(),  # type: ignore[arg-type]
                    self.settings.job_retention_s, result=result, error=error, frames_done=running.frames_done,
                )
            except JobsUnavailable:
                await asyncio.sleep(min(30.0, 2.0 ** attempt))
        log.error("job %s: its outcome (%s) could not be recorded; its lease will return it", running.job.id, state)
        return False

    async def _heartbeat(self, running: _Running, work: asyncio.Future[Any]) -> None:
        lease_s = self.settings.job_lease_s
        interval = min(_HEARTBEAT_S, lease_s / 3)
        renewed = time.monotonic()
        while not work.done():
            await asyncio.wait({work}, timeout=interval)  # the job's own outcome is _run's to read
            if work.done():
                return
            if running.cancelled:  # DELETE on this replica
                work.cancel()
                return
            try:
                beat = await self.db.call(JobStore.heartbeat, running.job.id, running.token, running.frames_done,
                                          running.frames_total, time.time(), lease_s)
            except JobsUnavailable:
                if time.monotonic() - renewed < lease_s:
                    continue  # the lease is longer than a heartbeat: try again next time
                # Not renewed for a whole lease: another replica may be running it by now.
                log.warning("job %s: its lease could not be renewed for %s s; stopping here", running.job.id, lease_s)
                running.lost = True
                work.cancel()
                return
            renewed = time.monotonic()
            if not beat.owned:
                log.warning("job %s: lease lost to another replica; stopping here", running.job.id)
                running.lost = True
                work.cancel()
                return
            if beat.cancel:
                running.cancelled = True
                work.cancel()
                return

    async def _execute(self, running: _Running) -> dict[str, Any]:
        """Run one job through the pipeline as background work; the result file and its headers."""
        runtime, job = self.runtime, running.job
        params = JobParams.from_json(job.params)
        request = params.request(runtime)
        source, partial = self.files.input(job.id), self.files.partial(job.id, running.token)

        def progress(frames: int) -> None:
            runtime.metrics.job_frames.inc(frames - running.frames_done)
            running.frames_done = frames

        if params.video:
            header, cost = await asyncio.to_thread(upscaler.price_video, runtime, source, request, job=True)
            running.frames_total = header.frames
            describe = f"a job's x{request.scale} {request.method} of a {header.width}x{header.height} video"
            async with self._admitted(cost, describe) as deadline:
                upscaled = await upscaler.upscale_video(runtime, source, request, deadline, destination=partial,
                                                        progress=progress, job=True)
        else:
            data = await asyncio.to_thread(source.read_bytes)
            image, cost = upscaler.price(runtime, data, request, params.accept)
            describe = f"a job's x{request.scale} {request.method} of {image.width}x{image.height}"
            async with self._admitted(cost, describe) as deadline:
                upscaled = await upscaler.upscale(runtime, data, request, deadline, accept=params.accept,
                                                  background=True)
            await asyncio.to_thread(partial.write_bytes, upscaled.body)
            progress(upscaled.frames)
        await asyncio.to_thread(os.replace, partial, self.files.result(job.id))
        (w, h), (ow, oh) = upscaled.input_size, upscaled.output_size
        return {
            "media_type": upscaled.media_type, "format": upscaled.format, "method": upscaled.method,
            "model": upscaled.model_ref, "scale": request.scale, "frames": upscaled.frames,
            "auto_note": upscaled.auto_note, "input": f"{w}x{h}", "output": f"{ow}x{oh}",
            "bytes": self.files.result(job.id).stat().st_size,
        }

    @contextlib.asynccontextmanager
    async def _admitted(self, cost: RequestCost, describe: str) -> AsyncIterator[float]:
        """Admission as a request gets it, with the job's timeout; where a request would get a
        503 (busy, memory, queue), the job waits and tries again instead. Only the admission
        is retried: what the job itself raises passes through."""
        give_up = time.monotonic() + self.settings.job_timeout_s
        async with contextlib.AsyncExitStack() as stack:
            while True:
                try:
                    deadline = await stack.enter_async_context(
                        self.runtime.admission(cost, describe, timeout_s=self.settings.job_timeout_s)
                    )
                    break
                except Overloaded as busy:
                    if self.runtime.lifecycle.draining or time.monotonic() > give_up:
                        raise
                    await asyncio.sleep(min(5.0, float(busy.headers.get("Retry-After", 1))))
            yield deadline

    # -- the sweeper -------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        sweeps = 0
        while not self._stopping:
            try:
                await self._sweep(orphans=sweeps % _ORPHAN_SWEEPS == 0)
                sweeps += 1
            except JobsUnavailable:
                pass
            except Exception:  # a bug of ours must not end the sweeping for good
                log.exception("job sweeper failed")
            # Often enough that a result outlives its retention by at most half of it.
            await asyncio.sleep(min(_SWEEP_S, self.settings.job_retention_s / 2))

    async def _sweep(self, *, orphans: bool = False) -> None:
        for job_id in await self.db.call(JobStore.expired, time.time()):
            await asyncio.to_thread(self.files.remove, job_id)
            log.info("job %s expired (SR_JOB_RETENTION_S)", job_id)
        if orphans:
            # Files with no row: a submission cut off between filing its input and its row.
            # Untouched for an upload's timeout, so not another replica's upload in progress.
            known = await self.db.call(JobStore.ids)
            for job_id in await asyncio.to_thread(self.files.folders) - known:
                if await asyncio.to_thread(self.files.idle_s, job_id) > 10 * self.settings.upload_timeout_s:
                    await asyncio.to_thread(self.files.remove, job_id)
        for state, count in (await self.db.call(JobStore.counts)).items():
            self.runtime.metrics.jobs.labels(state=state).set(count)
