"""The threads that decode, convert colour, resample and encode: smallest job first, and no job
started for a request already past its deadline.

A FIFO pool made a 32x24 bicubic request wait 31 s behind twelve large ones (issue #15). Here
each job carries its request's size (output pixels), and a free thread takes the smallest
queued job; the large ones wait a little longer, bounded by their own deadlines, which are
checked when a job would start.

Background work (the jobs of ``/v1/jobs``) queues behind every interactive job and holds at
most ``threads - 1`` threads at once, so one thread is always free for interactive requests
(with one thread, background work only runs when nothing interactive waits).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from service.errors import DeadlineExceeded

T = TypeVar("T")


class CodecPool:
    def __init__(self, threads: int, *, name: str = "codec", initializer: Callable[[], None] | None = None) -> None:
        # (background?, size, order): interactive before background, then smallest first.
        self._heap: list[tuple[bool, float, int, Future[object], Callable[[], object]]] = []
        self._background_running = 0
        self._running = 0
        self._max_background = max(1, threads - 1)
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._initializer = initializer
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        return len(self._heap)

    @property
    def busy(self) -> bool:
        """A job is running or waiting: the cores have other work than the network's. Read
        without the lock (a hint, read once per batch)."""
        return self._running > 0 or bool(self._heap)

    def submit(self, size: float, job: Callable[[], T], *, background: bool = False) -> Future[T]:
        """Queue ``job``; among queued jobs the smallest ``size`` runs first, ties in order,
        interactive before ``background``."""
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the codec pool is shut down")
            heapq.heappush(self._heap, (background, size, next(self._order), future, job))  # type: ignore[arg-type]
            self._ready.notify()
        return future

    async def run(
        self, job: Callable[[], T], *, size: float = 0.0, deadline: float | None = None, background: bool = False
    ) -> T:
        """Run ``job`` on a pool thread and await it. Past ``deadline`` (monotonic s) a job that
        has not started is dropped and DeadlineExceeded raised at once; one that has started
        runs to its end (its memory is still held), then DeadlineExceeded."""
        def guarded() -> T:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("the request's deadline passed before its next step could start")
            return job()

        future = self.submit(size, guarded, background=background)
        waiter = asyncio.wrap_future(future)
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=timeout)
        except TimeoutError:
            await self._settle(future, waiter)
            raise DeadlineExceeded("the request's deadline passed while it waited for a codec thread") from None
        except asyncio.CancelledError:
            # The caller was cancelled (a job's DELETE, a lost lease): a queued job is dropped;
            # a running one finishes first, so the caller's next step (closing a video
            # container, say) never runs beside it on another thread.
            await self._settle(future, waiter)
            raise

    @staticmethod
    async def _settle(future: Future[T], waiter: asyncio.Future[T]) -> None:
        if not future.cancel():  # running: let it finish, so what it holds is released first
            await asyncio.wait([waiter])
            if not waiter.cancelled():
                waiter.exception()  # retrieved: its outcome is superseded by the caller's

    def shutdown(self) -> None:
        """Cancel the queued jobs, let the running ones finish, stop the threads."""
        with self._ready:
            self._closed = True
            for *_, future, _ in self._heap:
                future.cancel()
            self._heap.clear()
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            with self._ready:
                while not self._closed and not self._can_take():
                    self._ready.wait()
                if not self._heap:
                    return
                background, _, _, future, job = heapq.heappop(self._heap)
                self._background_running += background
                self._running += 1
            try:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = job()
                except BaseException as exc:  # noqa: BLE001 - the awaiting request gets it
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            finally:
                with self._ready:
                    self._running -= 1
                    if background:
                        self._background_running -= 1
                        self._ready.notify()

    def _can_take(self) -> bool:
        """A queued job may start: interactive always; background while under its share."""
        if not self._heap:
            return False
        return not self._heap[0][0] or self._background_running < self._max_background
