"""``make bench``: the service over HTTP, per backend, against the reference in-process pipeline.

    python -m benchmarks.run                      # everything, ~6 minutes on 2 cores
    python -m benchmarks.run --seconds 4 --configs torch --out bench-results/quick.json

The reference is ``../shared/tools/ref_pipeline.py`` run in the same window: Pillow decode, torch
eager ESPCN, Pillow PNG level 1, the best of 1, 2 and 4 worker threads (no HTTP); its single
image latency is the bar for concurrency 1. Then, for each configuration (``torch``,
``onnxruntime``: SR_BACKEND; ``torch-nobatch``: SR_MAX_BATCH_SIZE=1) a server process (uvicorn)
and a client here (``--client raw``, the default: benchmarks.client, keep-alive HTTP/1.1 on
asyncio streams; ``httpx``: httpx.AsyncClient), x3 espcn PNG at each size and concurrency: images/s, p50/p95/p99, the
ratio to the reference, and the median stage split from Server-Timing (decode, queue, infer,
post, and within it the colour split and merge, encode). Also the server's pipeline in process, one request at a time
(``serving.upscaler.upscale``, no HTTP), a mixed-size workload (64..1024 px sides), and every
learned method's calibrated ms per output megapixel. The client shares the machine's cores with
the server, so each run prints the client's own CPU per request: what the server did not get.
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

from benchmarks.client import RawClient
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


def stat_cpu_s(stat: str) -> float:
    """User + system CPU seconds from a /proc/<pid>/stat (or task/<tid>/stat) line; the name in
    parentheses may hold spaces, so the fields are counted after its closing one."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) the server process has used so far."""
        return stat_cpu_s(Path(f"/proc/{self.proc.pid}/stat").read_text())

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
               scale: int, client: str = "raw") -> dict[str, Any]:
    """``concurrency`` connections each posting one request after another for ``seconds``,
    through ``client`` (``raw``: benchmarks.client, ``httpx``: httpx.AsyncClient)."""
    latencies: list[float] = []
    sizes: list[int] = []
    stages: list[dict[str, float]] = []
    pixels = 0
    errors = 0
    stop_at = time.monotonic() + seconds
    target = f"/v1/upscale?scale={scale}&method=espcn&format=png"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as shared:
        async def worker(index: int) -> None:
            nonlocal pixels, errors
            own = RawClient(url) if client == "raw" else None
            i = index
            try:
                while time.monotonic() < stop_at:
                    body, side = bodies[i % len(bodies)]
                    i += concurrency
                    t = time.monotonic()
                    r = await (own or shared).post(target, content=body, headers={"Content-Type": "image/png"})
                    if r.status_code != 200:
                        errors += 1
                        continue
                    latencies.append(time.monotonic() - t)
                    sizes.append(len(r.content))
                    stages.append(_timing(r.headers.get("server-timing", "")))
                    pixels += side * side * scale * scale
            finally:
                if own is not None:
                    await own.aclose()

        started, cpu_started = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall, cpu = time.monotonic() - started, time.process_time() - cpu_started
    result: dict[str, Any] = summarise(latencies, wall, pixels)
    result["wall_s"] = wall
    result["client"] = client
    # The client's own CPU (this process, every thread), which the server did not get.
    result["client_cpu_ms_per_request"] = cpu * 1000 / max(1, len(latencies) + errors)
    result["errors"] = errors
    result["response_kb_median"] = statistics.median(sizes) / 1024 if sizes else float("nan")
    result["stages_ms_median"] = {
        k: statistics.median(s[k] for s in stages if k in s) for k in STAGES if any(k in s for s in stages)
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


CONFIGS = {
    # What `make serve` runs: every setting at its default (SR_BACKEND=auto times both per model).
    "defaults": {},
    "torch": {"SR_BACKEND": "torch"},
    "onnxruntime": {"SR_BACKEND": "onnxruntime"},
    # One inference thread: the other core is left to decode, colour work and encode.
    "onnxruntime-1thread": {"SR_BACKEND": "onnxruntime", "SR_TORCH_THREADS": "1"},
    # Torch's intra-op pool left at the two cores for the codec threads' colour work (what the
    # server did before it set that pool to one thread when every network runs on ONNX Runtime).
    "onnxruntime-torchpool2": {"SR_BACKEND": "onnxruntime", "SR_TORCH_THREADS": "2"},
    "torch-nobatch": {"SR_BACKEND": "torch", "SR_MAX_BATCH_SIZE": "1"},
    # The PNG encoder's share: every PNG through Pillow at SR_PNG_COMPRESS_LEVEL instead of fpng.
    "torch-pillowpng": {"SR_BACKEND": "torch", "SR_PNG_ENCODER": "pillow"},
}
REFERENCE = REPO_ROOT.parent / "shared" / "tools" / "ref_pipeline.py"
STAGES = ("decode", "queue", "infer", "post", "split", "merge", "encode", "total")


def reference(body: bytes, scale: int, n: int) -> dict[str, Any] | None:
    """``ref_pipeline.py`` on this image, in a process of its own: best images/s and ms/image."""
    if not REFERENCE.exists():
        return None
    path = Path("bench-results") / f"ref-{len(body)}.png"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(body)
    out = subprocess.run([sys.executable, str(REFERENCE), str(path), "--scale", str(scale), "--n", str(n)],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _network_counters(url: str, method: str, scale: int) -> tuple[float, float]:
    """(seconds the device spent on batches, tiles run) for one model, from /metrics."""
    text = httpx.get(url + "/metrics", timeout=30).text
    labels = f'{{method="{method}",scale="{scale}"}}'
    values = []
    for family in ("sr_inference_duration_seconds_sum", "sr_batch_size_sum"):
        line = next(line for line in text.splitlines() if line.startswith(family + labels))
        values.append(float(line.rsplit(" ", 1)[1]))
    return values[0], values[1]


def network_gflops(url: str, before: tuple[float, float], size: int, scale: int, wall_s: float,
                   tile: int = 128) -> tuple[float, float]:
    """The network's GFLOP/s over a load run, (per batch, delivered): 2 x multiply-adds per LR
    pixel x the canvas each tile ran on (its window: the tile or the whole padded image, and the
    halo) x tiles, over the seconds batches ran (summed over workers running side by side:
    what one batch reaches) and over the run's wall time (what the cores delivered), from the
    server's own counters (sr_inference_duration, sr_batch_size)."""
    seconds, tiles = (a - b for a, b in zip(_network_counters(url, "espcn", scale), before, strict=True))
    model = next(m for m in httpx.get(url + "/v1/models", timeout=30).json()["models"]
                 if m["method"] == "espcn" and m["scale"] == scale)
    side = min(size, tile) + 2 * model["halo"]
    gflop = 2 * model["macs_per_lr_pixel"] * side * side * tiles / 1e9
    return gflop / max(seconds, 1e-9), gflop / max(wall_s, 1e-9)


def method_costs(url: str) -> dict[str, dict[str, float | None]]:
    listing = httpx.get(url + "/v1/methods", timeout=30).json()["methods"]
    return {m["name"]: m["ms_per_megapixel"] for m in listing if m["learned"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 512])
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="the load generator's HTTP client (benchmarks.client says why raw)")
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
                               "reference": {}, "in_process": {}, "service": {}, "mixed": {}, "ms_per_megapixel": {}}
    bodies = {size: photo_like(size, size) for size in args.sizes}
    for size in args.sizes:
        ref = reference(bodies[size], args.scale, n=64 if size <= 256 else 8)
        results["reference"][size] = ref
        if ref:
            print(f"reference {size}x{size} x{args.scale}: {ref['images_per_s']:.1f} images/s "
                  f"({ref['workers']} workers), {ref['ms_per_image']:.1f} ms per image alone", flush=True)
        results["in_process"][size] = in_process(bodies[size], args.scale, args.seconds)
        print(f"pipeline in process {size}x{size}: {_fmt(results['in_process'][size])}", flush=True)

    rng = random.Random(0)
    mixed_sides = [rng.choice([64, 96, 128, 200, 256, 384, 512, 768, 1024]) for _ in range(24)]
    mixed = [(photo_like(s, i), s) for i, s in enumerate(mixed_sides)]
    for label in args.configs:
        server = Server(CONFIGS[label])
        try:
            results["ms_per_megapixel"][label] = method_costs(server.url)
            for size in args.sizes:
                ref = results["reference"][size]
                for c in args.concurrency:
                    before = _network_counters(server.url, "espcn", args.scale)
                    cpu_before = server.cpu_s()
                    r = asyncio.run(load(server.url, [(bodies[size], size)], c, args.seconds, args.scale, args.client))
                    # Less noisy than images/s on a shared machine: neighbours take wall time, not this.
                    r["server_cpu_ms_per_request"] = (server.cpu_s() - cpu_before) * 1000 / max(1, r["requests"])
                    r["network_gflops"], r["network_gflops_delivered"] = network_gflops(
                        server.url, before, size, args.scale, r["wall_s"])
                    if ref:
                        r["vs_reference"] = r["rps"] / ref["images_per_s"]
                        r["p50_vs_reference_single"] = r["p50_ms"] / ref["ms_per_image"]
                    results["service"].setdefault(label, {}).setdefault(str(size), {})[str(c)] = r
                    print(f"{label} {size}x{size} c={c}: {_fmt(r)} ratio {r.get('vs_reference', float('nan')):.2f} "
                          f"network {r['network_gflops']:.0f} GFLOP/s a batch, {r['network_gflops_delivered']:.0f} delivered; CPU a request: server {r['server_cpu_ms_per_request']:.2f} ms, client {r['client_cpu_ms_per_request']:.2f} ms; stages {r['stages_ms_median']}", flush=True)
            if label == args.configs[0]:
                r = asyncio.run(load(server.url, mixed, 16, args.seconds * 2, args.scale, args.client))
                results["mixed"][label] = r
                print(f"{label} mixed 64..1024 c=16: {_fmt(r)}", flush=True)
        finally:
            server.stop()

    print(f"\nsummary (x{args.scale}, PNG, espcn; reference = ref_pipeline.py, best of 1/2/4 threads; "
          f"client {args.client})")
    print("| config | size | c | images/s | ratio to reference | p50 ms | p99 ms | p50 / reference single "
          "| network GFLOP/s a batch | network GFLOP/s delivered | CPU ms a request: server | client |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        ref = results["reference"][size]
        if ref:
            print(f"| reference | {size} | best | {ref['images_per_s']:.1f} | 1.00 | {ref['ms_per_image']:.0f} (alone) | - | 1.00 | - | - | - | - |")
        for label in args.configs:
            for c in args.concurrency:
                r = results["service"][label][str(size)][str(c)]
                print(f"| {label} | {size} | {c} | {r['rps']:.1f} | {r.get('vs_reference', float('nan')):.2f} | "
                      f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r.get('p50_vs_reference_single', float('nan')):.2f} "
                      f"| {r['network_gflops']:.0f} | {r['network_gflops_delivered']:.0f} | {r['server_cpu_ms_per_request']:.2f} | {r['client_cpu_ms_per_request']:.2f} |")
    print("\nmedian ms per image by stage (Server-Timing; post = all but the device between decode and "
          "encode, of which split and merge are the colour work itself)")
    print("| config | size | c | " + " | ".join(STAGES) + " | answer KB |")
    print("|---|---|---|" + "---|" * (len(STAGES) + 1))
    for label in args.configs:
        for size in args.sizes:
            for c in args.concurrency:
                r = results["service"][label][str(size)][str(c)]
                st = r["stages_ms_median"]
                print(f"| {label} | {size} | {c} | " + " | ".join(f"{st.get(k, float('nan')):.1f}" for k in STAGES)
                      + f" | {r['response_kb_median']:.0f} |")
    print("\nms per output megapixel, calibrated by each server at start-up (processing + PNG encode)")
    for label, costs in results["ms_per_megapixel"].items():
        for method, per_scale in sorted(costs.items()):
            cells = ", ".join(f"x{s} {v:.0f}" for s, v in per_scale.items() if v is not None)
            print(f"  {label:<14} {method:<12} {cells}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def _fmt(r: dict[str, float]) -> str:
    return (f"{r['rps']:.1f} req/s, {r['out_mpix_s']:.2f} MP/s out, "
            f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")


if __name__ == "__main__":
    main()
