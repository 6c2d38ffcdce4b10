"""Peak memory of one large request against admission's estimate, in a fresh server each.

    python -m benchmarks.memory                         # 1024 x4, 2048 x2, 2048 x4 espcn; 1024 x4 bicubic
    python -m benchmarks.memory --cases 4096:2:espcn    # the largest legal x2 request (~35 s on 2 cores)

For each case a server process starts (SR_CALIBRATE=false and a 600 s deadline, so nothing refuses
it), answers two 64x64 requests of that scale and method (lazy initialisation paid), then the
large one; it prints the resident set before, the growth of its peak (VmHWM) and the estimate
``serving.admission.estimate_memory`` gives, and the budget the server would derive from a
4 GiB container limit. The estimate must stay above the growth; tests/test_admission.py holds
one case of this in the suite.
"""

from __future__ import annotations

import argparse
import io

import httpx
from PIL import Image

from benchmarks.run import Server, photo_like
from benchmarks.soak import memory
from service.config import Settings
from service.imaging.resamplers import CLASSICAL_METHODS
from service.serving.admission import default_budget, estimate_memory

DEFAULT_CASES = ["1024:4:espcn", "1024:4:bicubic", "2048:2:espcn", "2048:4:espcn"]


def _body(side: int) -> bytes:
    """The synthetic picture as PNG, or as JPEG when the PNG would pass SR_MAX_UPLOAD_BYTES."""
    body = photo_like(side, seed=1)
    if len(body) <= Settings().max_upload_bytes:
        return body
    buffer = io.BytesIO()
    Image.open(io.BytesIO(body)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def measure(side: int, scale: int, method: str, env: dict[str, str]) -> str:
    body = _body(side)
    # No deadline check and a long deadline: the point is the memory of the largest requests,
    # which take longer than SR_REQUEST_TIMEOUT_S's default on a 2-core CPU.
    server = Server({"SR_CALIBRATE": "false", "SR_REQUEST_TIMEOUT_S": "600", **env})
    try:
        with httpx.Client(timeout=600) as client:
            query = f"{server.url}/v1/upscale?scale={scale}&method={method}"
            for _ in range(2):
                client.post(query, content=photo_like(64, seed=2), headers={"Content-Type": "image/png"})
            before = memory(server.proc.pid)["VmRSS"] * 1024
            answer = client.post(query, content=body, headers={"Content-Type": "application/octet-stream"})
            grew = memory(server.proc.pid)["VmHWM"] * 1024 - before
    finally:
        server.stop()
    estimate = estimate_memory(side, side, 3, scale, learned=method not in CLASSICAL_METHODS, halo=4,
                               body_bytes=len(body))
    budget = default_budget(4 * 2**30, before)
    mib = 2**20
    return (f"{side}x{side} x{scale} {method:8s} {answer.status_code} ({len(body) / 2**20:.0f} MiB body)  rss before {before / mib:5.0f} MiB  "
            f"peak growth {grew / mib:5.0f} MiB  estimate {estimate / mib:5.0f} MiB "
            f"({estimate / max(grew, 1):.2f}x)  budget at 4 GiB {budget / mib:5.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="SIDE:SCALE:METHOD")
    parser.add_argument("--backend", default="auto", help="SR_BACKEND of the server")
    args = parser.parse_args(argv)
    for case in args.cases:
        side, scale, method = case.split(":")
        print(measure(int(side), int(scale), method, {"SR_BACKEND": args.backend}), flush=True)


if __name__ == "__main__":
    main()
