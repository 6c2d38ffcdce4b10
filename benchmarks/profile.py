"""Where a loaded server's threads spend their time: a sampling profile of every thread.

    python -m benchmarks.profile --concurrency 16 --seconds 8     # 128x128 x3 espcn, onnxruntime

A server process runs with a sampler thread that reads every other thread's stack
(``sys._current_frames``) every 2 ms while the load runs, from this process's client threads.
It prints requests/s and, per thread kind (infer, codec, MainThread), how many samples found
it busy (not waiting on a lock, a queue or the selector) and its busiest innermost frames. A
thread in C code (ONNX Runtime, a torch op) is counted where its Python frame called it. The
event loop runs in uvloop's C code, so MainThread's share is not measured (it shows runners.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.run import REPO_ROOT, photo_like, stat_cpu_s

# Innermost frames of a thread that is waiting, not working.
_IDLE = ("threading.py:wait", "queue.py:get", "selectors.py:select", "thread.py:_worker", "codec_pool.py:_work")


def thread_cpu() -> dict[str, list[float]]:
    """Per kind of thread of this process, [CPU seconds (user + system) used, seconds runnable
    but waiting for a core (schedstat)], from /proc.

    Python threads are named by their thread's name; the others (ONNX Runtime's and torch's
    pools, the sampler excluded) by the kernel's name for them, so nothing running is missed."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    used: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        name = names.get(int(task.name), "native:" + comm)
        if name == "sampler":
            continue
        kind = name.split("-")[0].split("_")[0]
        used[kind][0] += stat_cpu_s(stat)
        try:
            _, waited, _ = (task / "schedstat").read_text().split()
            used[kind][1] += int(waited) / 1e9
        except (OSError, ValueError):
            pass
    return dict(used)


def _serve(port: int, flag: Path, out: Path) -> None:
    """The server, with the sampler beside it; the profile is written when it exits."""
    busy: collections.Counter[str] = collections.Counter()
    frames: collections.Counter[tuple[str, str]] = collections.Counter()
    samples = [0]
    stop = threading.Event()
    cpu: dict[str, dict[str, list[float]]] = {}

    def sample() -> None:
        me = threading.get_ident()
        while not stop.is_set():
            time.sleep(0.002)
            if not flag.exists():
                if "start" in cpu and "end" not in cpu:
                    cpu["end"] = thread_cpu()
                continue
            if "start" not in cpu:
                cpu["start"] = thread_cpu()
            samples[0] += 1
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                kind = names.get(ident, str(ident)).split("-")[0].split("_")[0]
                top = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}"
                if top.startswith(_IDLE):
                    continue
                busy[kind] += 1
                frames[(kind, top)] += 1

    def dump() -> None:
        stop.set()
        start, end = cpu.get("start", {}), cpu.get("end", {})
        used = {kind: [e - s for e, s in zip(end[kind], start.get(kind, [0.0, 0.0]), strict=True)] for kind in end}
        out.write_text(json.dumps({"samples": samples[0], "busy": busy, "cpu_s": used,
                                   "frames": [[k, f, n] for (k, f), n in frames.most_common(40)]}))

    import atexit

    atexit.register(dump)
    threading.Thread(target=sample, daemon=True, name="sampler").start()
    from service.__main__ import main as serve

    serve(["--port", str(port)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "FLAG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        port, flag, out = args.serve
        _serve(int(port), Path(flag), Path(out))
        return

    work = Path(tempfile.mkdtemp(prefix="sr-profile-"))
    flag, out = work / "sampling", work / "profile.json"
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SR_BACKEND": args.backend, "SR_CALIBRATE": "false", "SR_LOG_LEVEL": "WARNING",
           "SR_JOBS_DIR": str(work / "jobs")}
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.profile", "--serve", str(port), str(flag), str(out)],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        body, done, stop = photo_like(args.size, 3), [0], threading.Event()
        query = f"{url}/v1/upscale?scale={args.scale}&method=espcn"

        def client() -> None:
            with httpx.Client(timeout=60) as http:
                while not stop.is_set():
                    http.post(query, content=body, headers={"Content-Type": "image/png"}).raise_for_status()
                    done[0] += 1

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        for thread in threads:
            thread.start()
        time.sleep(2)  # past the first requests
        flag.touch()
        before, client_before = done[0], os.times()
        time.sleep(args.seconds)
        flag.unlink()
        rate = (done[0] - before) / args.seconds
        client_after = os.times()
        client_cpu = (client_after.user - client_before.user) + (client_after.system - client_before.system)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        server.terminate()
        server.wait(60)
    profile = json.loads(out.read_text())
    samples = profile["samples"]
    print(f"{args.size}x{args.size} x{args.scale} espcn, {args.backend}, c={args.concurrency}: "
          f"{rate:.1f} requests/s; {samples} samples")
    # Where the cores went: CPU seconds per wall second (200 % is both cores), per thread kind.
    print("CPU used, % of one core over the window (both cores = 200 %):")
    print(f"  {'client':24s} {100 * client_cpu / args.seconds:6.1f}   (this process: {args.concurrency} httpx threads)")
    used = profile["cpu_s"]
    for kind, (seconds, waited) in sorted(used.items(), key=lambda kv: -kv[1][0]):
        if seconds > 0.01 * args.seconds:
            print(f"  {'server ' + kind:24s} {100 * seconds / args.seconds:6.1f}   "
                  f"(and {100 * waited / args.seconds:5.1f} runnable, waiting for a core)")
    total = sum(seconds for seconds, _ in used.values())
    print(f"  {'server, all threads':24s} {100 * total / args.seconds:6.1f}   "
          f"= {1000 * total / max(rate * args.seconds, 1):.1f} ms of CPU per request")
    for kind, n in sorted(profile["busy"].items(), key=lambda kv: -kv[1]):
        if kind != "MainThread":
            print(f"  {kind:8s} busy in {100 * n / samples:5.1f} % of samples (summed over its threads)")
    print("busiest frames (thread kind, innermost Python frame, % of samples):")
    for kind, frame, n in profile["frames"]:
        if kind != "MainThread" and 100 * n / samples >= 1:
            print(f"  {kind:8s} {frame:48s} {100 * n / samples:5.1f}")


if __name__ == "__main__":
    main()
