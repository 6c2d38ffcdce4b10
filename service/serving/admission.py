"""Admission by cost: what a request will hold in memory and how long it will take, known from
its header before a pixel is decoded, admitted against a memory budget, a request count and its
own deadline, or refused at once.

The memory estimate is an upper bound written from the pipeline's own allocations (the stages
are in ``serving.upscaler``; the colour planes work in strips, ``imaging.planes``), and
``tests/test_admission.py`` holds it against the measured peak of the largest legal request.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from service.errors import ImageTooLarge, Overloaded

log = logging.getLogger(__name__)

# Working memory that does not grow with the image: a strip of float planes (about six planes of
# planes.STRIP_OUTPUT_PIXELS floats), a share of a batch canvas, the codec's buffers.
FIXED_BYTES = 8 * 2**20
# PIL keeps RGB(A) at 4 bytes a pixel, and decoding may hold the file's image, the upright one
# and the converted one at once before the numpy copy.
_DECODE_COPIES = 3
_ALLOCATOR_SLACK = 1.25


@dataclass(frozen=True)
class RequestCost:
    """What one request will hold at its peak and, where the cost model knows, how long it takes."""

    memory_bytes: int
    work_s: float | None = None
    learned: bool = True  # waits for the device; a resampler only for the codec threads


def estimate_memory(
    width: int, height: int, channels: int, scale: int, *, learned: bool, halo: int, body_bytes: int
) -> int:
    """Peak bytes of one request, from the sizes of what the pipeline allocates.

    Decode: the body, PIL's images and the (H, W, C) uint8 pixels. A network: the (H, W) float
    luma, the padded copy the batcher cuts tiles from, Cb/Cr/alpha at input size, the padded
    float (rH, rW) output. Both: the uint8 answer and its encoding. The strips' and tiles'
    working sets are ``FIXED_BYTES``. ``tests/test_admission.py`` measures a real request's
    peak against it.
    """
    pixels = width * height
    out = pixels * scale * scale
    decode = body_bytes + _DECODE_COPIES * 4 * pixels + pixels * channels
    # The uint8 answer, its encoding (at most about the raw size) and the socket's copy of the
    # part the kernel has not taken yet.
    answer = 3 * out * channels
    network = 0
    if learned:
        padded = (width + 2 * halo) * (height + 2 * halo)
        network = 4 * pixels + 4 * padded + 4 * pixels * (channels - 1) + 4 * padded * scale * scale
    # The allocator does not hand every freed block back at once (several threads, several
    # arenas), and a batch's activations come and go beside it: measured peaks ran 5-22 % over
    # the sum of the live buffers (1024x1024 x4, 2048x2048 x2 and x4; torch and onnxruntime).
    return int(_ALLOCATOR_SLACK * (decode + network + answer)) + FIXED_BYTES


def container_memory_limit() -> int | None:
    """The cgroup's memory limit (v2, then v1) in bytes, or None when there is none."""
    for path in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 says "no limit" with a huge number
            return int(text)
    return None


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def default_budget(limit: int, resident: int) -> int:
    """Three quarters of what the container may use beyond what the process holds already;
    the rest is slack for allocator fragmentation and Python's own objects."""
    return max(64 * 2**20, int(0.75 * (limit - resident)))


class MemoryBudget:
    """Bytes reserved by admitted requests, against a fixed budget. Event-loop only."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.reserved_bytes = 0

    def check_fits_alone(self, cost: RequestCost, describe: str) -> None:
        """A request larger than the whole budget can never run here: 413, not 503."""
        if cost.memory_bytes > self.budget_bytes:
            raise ImageTooLarge(
                f"{describe} needs about {cost.memory_bytes / 2**20:.0f} MiB; this server's "
                f"memory budget (SR_MEMORY_BUDGET_BYTES) is {self.budget_bytes / 2**20:.0f} MiB"
            )

    def reserve(self, cost: RequestCost, retry_after_s: int) -> None:
        if self.reserved_bytes + cost.memory_bytes > self.budget_bytes:
            raise MemoryFull(
                f"the request needs about {cost.memory_bytes / 2**20:.0f} MiB and "
                f"{self.reserved_bytes / 2**20:.0f} of {self.budget_bytes / 2**20:.0f} MiB are "
                "held by requests in progress",
                retry_after_s=retry_after_s,
            )
        self.reserved_bytes += cost.memory_bytes

    def release(self, cost: RequestCost) -> None:
        self.reserved_bytes -= cost.memory_bytes


class MemoryFull(Overloaded):
    """503 ``overloaded``, counted apart: the memory budget, not the request count, is full."""

    reason = "memory"


class TooLateToStart(Overloaded):
    """503 ``overloaded``, counted apart: the work ahead of it leaves no time before its deadline."""

    reason = "deadline"
