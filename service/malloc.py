"""glibc's malloc told to hand large buffers back to the system when they are freed.

By default glibc raises its mmap threshold each time a large mmapped block is freed (up to
32 MiB), after which image-sized buffers come from the heap, where a small live object above
them keeps the freed memory from going back: the server's resident set then grows with what
requests once held, and admission's estimate of a request's peak (``serving.admission``) stops
being an upper bound. A fixed threshold of 1 MiB keeps every plane, tile batch and encoded
answer in its own mapping, returned at free. Measured on a 1024x1024 x4 request in a fresh
server (tests/test_admission.py's case): peak growth 324 -> 228 MiB, idle RSS 416 -> 390 MiB.

Fixing that threshold also fixes the trim threshold at its default 128 KiB, so each freed
strip temporary at the top of a thread's heap went back to the system and the next strip
faulted its pages in again (a 128x128 x3 merge: 556 page faults and 1.4-1.5 ms of CPU). A trim
threshold of 4 MiB keeps a few strips' worth of heap per thread (0 faults, 0.7 ms); what is
larger than 1 MiB is still mapped apart and returned at free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # from <malloc.h>
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 20
TRIM_BYTES = 4 << 20


def release_large_buffers() -> bool:
    """Set the fixed threshold; False where the C library is not glibc (nothing to do there)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
