"""``make bench``: in-process pipeline vs the HTTP service, batching on and off.

    python -m benchmarks.run                      # everything, ~5 minutes on 2 cores
    python -m benchmarks.run --seconds 4 --concurrency 1 16 --out bench-results/quick.json

For each input size (PNG, x3, espcn): the server's pipeline called in process, one request at a
time (``serving.upscaler.upscale`` on a Runtime of its own: no HTTP) and the service over real HTTP (uvicorn in a
subprocess, httpx client here) at each concurrency, with batching on (the settings' default)
and off (SR_MAX_BATCH_SIZE=1). Then a mixed-size workload (64..1024 px sides). Reported:
requests/s, output megapixels/s, p50/p95/p99 latency, the service/in-process throughput
ratio, and the median stage split from Server-Timing. The client shares the machine's cores
with the server; on 2 cores that costs the service a few percent, and the numbers say so.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from service.config import Settings
from service.imaging.synthetic import pattern
from service.models.device import resolve_device
from service.serving import upscaler
from service.serving.runtime import Runtime

REPO_ROOT = Path(__file__).resolve().parents[1]


def photo_like(size: int, seed: int) -> bytes:
    """The synthetic test picture (``imaging.synthetic``) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pattern(size, size, 3, seed)).save(buffer, format="PNG")
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summarise(latencies: list[float], wall_s: float, out_pixels: int) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall_s,
        "out_mpix_s": out_pixels / wall_s / 1e6,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


# -- in process ---------------------------------------------------------------------------------


def in_process(body: bytes, scale: int, seconds: float) -> dict[str, float]:
    return asyncio.run(_in_process(body, scale, seconds))


async def _in_process(body: bytes, scale: int, seconds: float) -> dict[str, float]:
    runtime = Runtime.start(Settings(model_store=REPO_ROOT / "model_store", calibrate=False))
    request = upscaler.UpscaleRequest(scale=scale, method="espcn", format="png")

    async def once() -> int:
        deadline = time.monotonic() + runtime.settings.request_timeout_s
        result = await upscaler.upscale(runtime, body, request, deadline)
        return result.output_size[0] * result.output_size[1]

    try:
        await runtime.in_codec_pool(runtime.warm_up)
        await once()
        latencies, pixels = [], 0
        started = time.monotonic()
        while time.monotonic() - started < seconds or len(latencies) < 3:
            t = time.monotonic()
            pixels += await once()
            latencies.append(time.monotonic() - t)
        return summarise(latencies, time.monotonic() - started, pixels)
    finally:
        await runtime.close()


# -- over HTTP ----------------------------------------------------------------------------------


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(self.port)],
            cwd=REPO_ROOT, env={**os.environ, "SR_LOG_LEVEL": "WARNING", **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            stages[name] = float(dur)
    return stages


async def load(url: str, bodies: list[tuple[bytes, int]], concurrency: int, seconds: float,
               scale: int) -> dict[str, Any]:
    latencies: list[float] = []
    stages: list[dict[str, float]] = []
    pixels = 0
    errors = 0
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker(index: int) -> None:
            nonlocal pixels, errors
            i = index
            while time.monotonic() < stop_at:
                body, side = bodies[i % len(bodies)]
                i += concurrency
                t = time.monotonic()
                r = await client.post(f"/v1/upscale?scale={scale}&method=espcn&format=png", content=body,
                                      headers={"Content-Type": "image/png"})
                if r.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.monotonic() - t)
                stages.append(_timing(r.headers.get("server-timing", "")))
                pixels += side * side * scale * scale

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.monotonic() - started
    result: dict[str, Any] = summarise(latencies, wall, pixels)
    result["errors"] = errors
    result["stages_ms_median"] = {
        k: statistics.median(s[k] for s in stages if k in s) for k in ("queue", "infer", "encode", "total")
    } if stages else {}
    return result


async def prediction_accuracy(url: str, scale: int, concurrency: int, requests: int = 50) -> dict[str, Any]:
    """Ask /v1/methods/choose for espcn's predicted latency, then time the request itself."""
    rng = random.Random(concurrency)
    sides = [rng.choice([64, 96, 128, 192, 256, 384, 512]) for _ in range(requests)]
    bodies = [(photo_like(s, 1000 + i), s) for i, s in enumerate(sides)]
    errors: list[float] = []
    queue = list(range(requests))
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            while queue:
                body, side = bodies[queue.pop()]
                choice = (await client.post("/v1/methods/choose", json={
                    "width": side, "height": side, "scale": scale, "objective": "quality"})).json()
                predicted = next(c["predicted_latency_ms"] for c in choice["candidates"] if c["method"] == "espcn")
                t = time.monotonic()
                r = await client.post(f"/v1/upscale?scale={scale}&method=espcn&format=png", content=body,
                                      headers={"Content-Type": "image/png"})
                measured = (time.monotonic() - t) * 1000
                if r.status_code == 200 and predicted:
                    errors.append(abs(predicted - measured) / measured)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": len(errors), "median_relative_error": statistics.median(errors),
            "p90_relative_error": percentile(errors, 90)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 512])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench-results/bench.json"))
    p.add_argument("--prediction-only", action="store_true",
                   help="only the latency-prediction check (issue: method choice)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.prediction_only:
        server = Server({})
        try:
            for c in (1, 8):
                acc = asyncio.run(prediction_accuracy(server.url, args.scale, c))
                print(f"latency prediction, 50 mixed-size requests, c={c}: median |pred-meas|/meas "
                      f"{acc['median_relative_error']:.1%} (p90 {acc['p90_relative_error']:.1%})", flush=True)
        finally:
            server.stop()
        return
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                           "device": str(resolve_device("auto"))},
                               "in_process": {}, "service": {}, "mixed": {}}
    bodies = {size: photo_like(size, size) for size in args.sizes}
    for size in args.sizes:
        results["in_process"][size] = in_process(bodies[size], args.scale, args.seconds)
        print(f"in-process {size}x{size} x{args.scale}: {_fmt(results['in_process'][size])}", flush=True)

    rng = random.Random(0)
    mixed_sides = [rng.choice([64, 96, 128, 200, 256, 384, 512, 768, 1024]) for _ in range(24)]
    mixed = [(photo_like(s, i), s) for i, s in enumerate(mixed_sides)]
    for label, env in (("batching_on", {}), ("batching_off", {"SR_MAX_BATCH_SIZE": "1"})):
        server = Server(env)
        try:
            for size in args.sizes:
                for c in args.concurrency:
                    r = asyncio.run(load(server.url, [(bodies[size], size)], c, args.seconds, args.scale))
                    r["vs_in_process"] = r["rps"] / results["in_process"][size]["rps"]
                    results["service"].setdefault(label, {}).setdefault(str(size), {})[str(c)] = r
                    print(f"{label} {size}x{size} c={c}: {_fmt(r)} ratio {r['vs_in_process']:.2f} "
                          f"stages {r['stages_ms_median']}", flush=True)
            r = asyncio.run(load(server.url, mixed, 16, args.seconds * 2, args.scale))
            results["mixed"][label] = r
            print(f"{label} mixed 64..1024 c=16: {_fmt(r)}", flush=True)
            if label == "batching_on":
                for c in (1, 8):
                    acc = asyncio.run(prediction_accuracy(server.url, args.scale, c))
                    results.setdefault("prediction", {})[str(c)] = acc
                    print(f"latency prediction, 50 mixed-size requests, c={c}: median |pred-meas|/meas "
                          f"{acc['median_relative_error']:.1%} (p90 {acc['p90_relative_error']:.1%})", flush=True)
        finally:
            server.stop()

    on, off = results["service"]["batching_on"], results["service"]["batching_off"]
    print(f"\nsummary (x{args.scale}, PNG, espcn)")
    print("| size | concurrency | on rps | off rps | on/off | on/in-process | on p50 ms | on p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for c in args.concurrency:
            a, b = on[str(size)][str(c)], off[str(size)][str(c)]
            print(f"| {size} | {c} | {a['rps']:.1f} | {b['rps']:.1f} | {a['rps'] / b['rps']:.2f} | "
                  f"{a['vs_in_process']:.2f} | {a['p50_ms']:.0f} | {a['p99_ms']:.0f} |")
    mo, mf = results["mixed"]["batching_on"], results["mixed"]["batching_off"]
    print(f"| mixed | 16 | {mo['rps']:.1f} | {mf['rps']:.1f} | {mo['rps'] / mf['rps']:.2f} | - | "
          f"{mo['p50_ms']:.0f} | {mo['p99_ms']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def _fmt(r: dict[str, float]) -> str:
    return (f"{r['rps']:.1f} req/s, {r['out_mpix_s']:.2f} MP/s out, "
            f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")


if __name__ == "__main__":
    main()
