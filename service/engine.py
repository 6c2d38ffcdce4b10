"""One inference worker thread per device: the event loop never waits on a network."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from service.inference import run_network
from service.models.resident import ResidentModel


@dataclass(frozen=True)
class InferResult:
    luma: torch.Tensor  # (rH, rW) float32, 0..255
    queue_s: float
    infer_s: float


class InferenceEngine:
    """Runs whole planes, one request at a time, on the device's single worker thread."""

    def __init__(self, device: torch.device) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{device}")

    async def infer(self, model: ResidentModel, luma: torch.Tensor) -> InferResult:
        enqueued = time.monotonic()
        loop = asyncio.get_running_loop()

        def job() -> tuple[torch.Tensor, float, float]:
            started = time.monotonic()
            out = run_network(model, luma[None, None])[0, 0]
            return out, started, time.monotonic()

        out, started, finished = await loop.run_in_executor(self._executor, job)
        return InferResult(out, started - enqueued, finished - started)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
