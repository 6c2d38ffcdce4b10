"""``make soak``: many mixed requests with hang-ups, and what the server's memory did meanwhile.

    python -m benchmarks.soak                                   # 10,000 requests, 16 at a time
    python -m benchmarks.soak --requests 1500 --concurrency 8
    python -m benchmarks.soak --url http://127.0.0.1:8000 [--pid 1234]

Without ``--url`` it starts its own server (``python -m service`` on a free port, through
``benchmarks.run.Server``) with SR_CALIBRATE=false and whatever ``--env KEY=VALUE`` adds. With
``--url`` the server's process is found from its listening port (or given by ``--pid``) so its
memory can still be read, when it runs on this machine.

The mix (seeded): about 75 % valid uploads (PNG/JPEG/WebP, small 16..64 px and medium 96..256 px
sides, espcn/bicubic/auto/ecbsr at x2/x3/x4, PNG/JPEG/WebP answers), 20 % bad ones (truncated
images, the wrong Content-Type, invalid parameters, garbage, an empty body) and 5 % hang-ups (a
raw socket sends the headers and half the body, then closes). Each worker thread keeps one
keep-alive httpx connection.

It prints the server's VmRSS and VmHWM (``/proc/<pid>/status``) after the warm-up and at the
end (and VmRSS sampled along the way: a leak keeps climbing, a working set levels off), the answers by status, every answer that is neither 200 nor 4xx (status, problem code and
detail; 20 lines at most, then a count), the median and p99 latency of the 200s, the total
time, and ``sr_requests_total`` by status from ``/metrics`` (the hang-ups must show as 499 there,
not 500). The exit status is 1 if any answer was a 5xx, if the server counted a 5xx, or if a
request that was not a hang-up got no answer at all.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image

from benchmarks.run import Server, percentile, photo_like

METHODS = ("espcn", "bicubic", "auto", "ecbsr")
SCALES = (2, 3, 4)
FORMATS = ("png", "jpeg", "webp")
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@dataclass(frozen=True)
class Job:
    kind: str  # "valid", "bad" or "hangup"
    label: str
    params: dict[str, str]
    body: bytes
    content_type: str | None


@dataclass
class Result:
    job: Job
    status: int | None  # None: no answer
    code: str = ""
    detail: str = ""
    seconds: float = 0.0


def _encoded(png: bytes, fmt: str) -> bytes:
    if fmt == "png":
        return png
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format=fmt.upper(), quality=85)
    return buffer.getvalue()


def _pictures(seed: int) -> dict[str, list[bytes]]:
    """A pool of inputs per size class and format: made once, so the client spends its CPU on
    sending, not on encoding."""
    rng = random.Random(seed)
    pool: dict[str, list[bytes]] = {}
    for size_class, sides in (("small", (16, 24, 32, 48, 64)), ("medium", (96, 128, 192, 256))):
        for fmt in FORMATS:
            pool[f"{size_class}-{fmt}"] = [_encoded(photo_like(rng.choice(sides), seed * 100 + i), fmt)
                                           for i in range(6)]
    return pool


def jobs(n: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    pool = _pictures(seed)
    out: list[Job] = []
    for _ in range(n):
        roll = rng.random()
        size_class = "small" if rng.random() < 0.8 else "medium"
        in_fmt = rng.choice(FORMATS)
        body = rng.choice(pool[f"{size_class}-{in_fmt}"])
        method, scale, out_fmt = rng.choice(METHODS), rng.choice(SCALES), rng.choice(FORMATS)
        params = {"method": method, "scale": str(scale), "format": out_fmt}
        if roll < 0.75:
            out.append(Job("valid", f"{size_class} {in_fmt} {method} x{scale} -> {out_fmt}", params, body,
                           MEDIA[in_fmt]))
        elif roll < 0.95:
            bad = rng.choice(("truncated", "content-type", "scale", "method", "quality", "garbage", "empty"))
            if bad == "truncated":
                out.append(Job("bad", f"truncated {in_fmt}", params, body[: rng.randrange(1, len(body))], MEDIA[in_fmt]))
            elif bad == "content-type":
                out.append(Job("bad", "text/plain body", params, body, "text/plain"))
            elif bad == "scale":
                out.append(Job("bad", "scale=5", {**params, "scale": "5"}, body, MEDIA[in_fmt]))
            elif bad == "method":
                out.append(Job("bad", "method=nope", {**params, "method": "nope"}, body, MEDIA[in_fmt]))
            elif bad == "quality":
                out.append(Job("bad", "quality=0", {**params, "format": "jpeg", "quality": "0"}, body, MEDIA[in_fmt]))
            elif bad == "garbage":
                out.append(Job("bad", "garbage bytes", params, rng.randbytes(rng.randint(1, 2000)), "image/png"))
            else:
                out.append(Job("bad", "empty body", params, b"", "image/png"))
        else:
            out.append(Job("hangup", f"hang-up mid-body ({method} x{scale})", params, body, MEDIA[in_fmt]))
    return out


def hang_up(host: str, port: int, job: Job) -> None:
    """The headers and half the body, then close: the server should count a 499."""
    query = "&".join(f"{k}={v}" for k, v in job.params.items())
    head = (f"POST /v1/upscale?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {job.content_type}\r\n"
            f"Content-Length: {len(job.body)}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head + job.body[: len(job.body) // 2])
        time.sleep(0.01)


def run(url: str, work: list[Job], concurrency: int, pid: int | None = None) -> tuple[list[Result], list[tuple[int, int]]]:
    """Every job, ``concurrency`` at a time; and (requests done, VmRSS kB) sampled twice a second."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()
    done = [0]
    samples: list[tuple[int, int]] = []
    finished = threading.Event()

    def sample() -> None:
        while not finished.wait(0.5):
            rss = memory(pid).get("VmRSS")
            if rss is not None:
                samples.append((done[0], rss))

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=120)
            with lock:
                clients.append(local.client)
        return local.client

    def one(job: Job) -> Result:
        try:
            return _one(job)
        finally:
            with lock:
                done[0] += 1

    def _one(job: Job) -> Result:
        if job.kind == "hangup":
            try:
                hang_up(host, port, job)
                return Result(job, 499)
            except OSError as exc:
                return Result(job, None, detail=f"hang-up could not be sent: {exc!r}")
        headers = {"Content-Type": job.content_type} if job.content_type else {}
        started = time.monotonic()
        try:
            r = client().post("/v1/upscale", params=job.params, content=job.body, headers=headers)
        except httpx.HTTPError as exc:
            return Result(job, None, detail=repr(exc), seconds=time.monotonic() - started)
        seconds = time.monotonic() - started
        code = detail = ""
        if r.status_code != 200:
            try:
                problem = r.json()
                code, detail = str(problem.get("code", "")), str(problem.get("detail", ""))
            except ValueError:
                code, detail = "(not json)", f"{r.headers.get('content-type')}: {r.text[:200]}"
        return Result(job, r.status_code, code, detail, seconds)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, work))
    finally:
        finished.set()
        sampler.join()
        for c in clients:
            c.close()
    return results, samples


# -- the server's side --------------------------------------------------------------------------


def memory(pid: int | None) -> dict[str, int]:
    """VmRSS and VmHWM in kB from /proc/<pid>/status ({} when unknown)."""
    if pid is None:
        return {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: int(value) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def pid_listening_on(port: int) -> int | None:
    """The process holding the listening socket on ``port`` (this machine, readable /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def requests_by_status(url: str) -> Counter[str]:
    text = httpx.get(url + "/metrics", timeout=30).text
    totals: Counter[str] = Counter()
    for labels, value in re.findall(r"^sr_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        status = re.search(r'status="(\d+)"', labels)
        if status:
            totals[status.group(1)] += int(float(value))
    return totals


def warm_up(url: str) -> None:
    """Every method and scale once, in every answer format, before memory is first read."""
    body = photo_like(32, 1)
    with httpx.Client(base_url=url, timeout=120) as c:
        for method in METHODS:
            for scale in SCALES:
                for fmt in FORMATS:
                    c.post("/v1/upscale", params={"method": method, "scale": scale, "format": fmt}, content=body,
                           headers={"Content-Type": "image/png"})


def _kb(value: int | None) -> str:
    return f"{value / 1024:.1f} MiB" if value is not None else "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--url", help="a running server; default: start one")
    p.add_argument("--pid", type=int, help="with --url: the server's process (default: found from the port)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="for the server this starts (SR_CALIBRATE=false unless given)")
    p.add_argument("--seed", type=int, default=15)
    args = p.parse_args(argv)

    server = None
    if args.url:
        url = args.url.rstrip("/")
        pid = args.pid or pid_listening_on(urlsplit(url).port or 80)
    else:
        env = {"SR_CALIBRATE": "false", **dict(item.split("=", 1) for item in args.env)}
        print(f"starting python -m service with {env}", flush=True)
        started = time.monotonic()
        server = Server(env)
        url, pid = server.url, server.proc.pid
        print(f"ready on {url} (pid {pid}) after {time.monotonic() - started:.1f} s", flush=True)
    try:
        work = jobs(args.requests, args.seed)
        warm_up(url)
        before = requests_by_status(url)
        start_mem = memory(pid)
        print(f"server RSS after warm-up: VmRSS {_kb(start_mem.get('VmRSS'))}, VmHWM {_kb(start_mem.get('VmHWM'))}",
              flush=True)
        kinds = Counter(job.kind for job in work)
        print(f"sending {len(work)} requests ({dict(kinds)}) at concurrency {args.concurrency}", flush=True)
        t0 = time.monotonic()
        results, samples = run(url, work, args.concurrency, pid)
        total_s = time.monotonic() - t0
        hangups = kinds["hangup"]
        deadline = time.monotonic() + 10  # hang-ups are counted when the server notices them
        after = requests_by_status(url)
        while after["499"] - before["499"] < hangups and time.monotonic() < deadline:
            time.sleep(0.2)
            after = requests_by_status(url)
        end_mem = memory(pid)
    finally:
        if server is not None:
            server.stop()

    by_status = Counter("no answer" if r.status is None else
                        ("499 (hang-up, not read)" if r.job.kind == "hangup" else str(r.status)) for r in results)
    print(f"\nserver RSS at the end:     VmRSS {_kb(end_mem.get('VmRSS'))}, VmHWM {_kb(end_mem.get('VmHWM'))}")
    if start_mem.get("VmRSS") and end_mem.get("VmRSS"):
        print(f"RSS change: {(end_mem['VmRSS'] - start_mem['VmRSS']) / 1024:+.1f} MiB")
    if samples:  # a leak keeps climbing; an allocator's working set levels off
        picks = [samples[round(i * (len(samples) - 1) / 10)] for i in range(11)]
        print("VmRSS during the soak (requests done: MiB): "
              + ", ".join(f"{n}: {rss / 1024:.0f}" for n, rss in picks))
    print(f"answers by status: {dict(sorted(by_status.items()))}")
    odd = [r for r in results if r.job.kind != "hangup" and (r.status is None or not (r.status == 200 or 400 <= r.status < 500))]
    print(f"answers neither 200 nor 4xx: {len(odd)}")
    for r in odd[:20]:
        print(f"  {r.status if r.status is not None else 'no answer'} {r.code} {r.detail[:160]!r}  [{r.job.label}]")
    if len(odd) > 20:
        print(f"  ... and {len(odd) - 20} more")
    valid_not_ok = Counter((r.status, r.code) for r in results if r.job.kind == "valid" and r.status != 200)
    if valid_not_ok:
        print(f"valid requests not answered 200: {dict(valid_not_ok)}")
    ok = [r.seconds for r in results if r.status == 200]
    if ok:
        print(f"latency of the {len(ok)} 200s: median {statistics.median(ok) * 1000:.1f} ms, "
              f"p99 {percentile(ok, 99) * 1000:.1f} ms")
    print(f"total: {total_s:.1f} s ({len(results) / total_s:.1f} requests/s)")
    delta = {s: after[s] - before.get(s, 0) for s in sorted(after) if after[s] - before.get(s, 0)}
    print(f"server sr_requests_total by status, at the end: {dict(sorted(after.items()))}")
    print(f"  of which this soak: {delta} (hang-ups sent: {hangups}, counted as 499: {delta.get('499', 0)})")

    fives = sum(1 for r in results if r.status is not None and r.status >= 500)
    server_fives = sum(n for s, n in delta.items() if s.startswith("5"))
    lost = sum(1 for r in results if r.status is None)
    failed = fives or server_fives or lost
    print("FAIL: " + ", ".join(f"{n} {what}" for n, what in ((fives, "5xx answers"), (server_fives, "5xx counted by the server"),
                                                           (lost, "requests without an answer")) if n)
          if failed else "OK: no 5xx, every request answered")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
