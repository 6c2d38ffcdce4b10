"""Video throughput, and what a video does to small requests beside it (issue #16's bars).

    python -m benchmarks.video                  # 640x360 -> x3 espcn, 1 s at 24 frames/s
    python -m benchmarks.video --seconds 2 --method ecbsr

A server process (SR_CALIBRATE=false, a 600 s deadline so a slow CPU still finishes) gets the
clip as one request; it prints frames per second of the whole request (decode, network, encode).
Then the p50/p99 of 128x128 x3 espcn single-image requests, one at a time, alone, while the
same video runs as a request, and while it runs as a job (``POST /v1/jobs``: background work,
behind interactive requests in the batcher and the codec pool), with the job's frames/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import httpx

from benchmarks.run import Server, percentile, photo_like
from service.imaging.synthetic import synthetic_video


def _singles(url: str, body: bytes, until: threading.Event | None, count: int) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=120) as client:
        while (until is None and len(latencies) < count) or (until is not None and not until.is_set()):
            started = time.perf_counter()
            response = client.post(url + "/v1/upscale?scale=3", content=body, headers={"Content-Type": "image/png"})
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _run_job(url: str, args: argparse.Namespace, clip: bytes) -> float:
    """Submit the clip as a job and poll it to its end; seconds from submission to success."""
    with httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        submitted = client.post("/v1/jobs", params={"scale": args.scale, "method": args.method}, content=clip,
                                headers={"Content-Type": "video/mp4"})
        submitted.raise_for_status()
        while (job := client.get(submitted.headers["location"]).json())["state"] in ("queued", "running"):
            time.sleep(0.2)
        if job["state"] != "succeeded":
            raise RuntimeError(f"the job ended {job['state']}: {job['error']}")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--method", default="espcn")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    frames = round(args.seconds * args.fps)
    clip = synthetic_video("mp4", frames=frames, size=(width, height), fps=args.fps, audio=True)
    server = Server({"SR_CALIBRATE": "false", "SR_REQUEST_TIMEOUT_S": "600", "SR_BACKEND": args.backend,
                     "SR_JOBS_DIR": tempfile.mkdtemp(prefix="sr-bench-jobs-")})
    try:
        query = f"{server.url}/v1/upscale?scale={args.scale}&method={args.method}"
        with httpx.Client(timeout=600) as client:
            client.post(query, content=synthetic_video("mp4", frames=2, size=(64, 48), fps=args.fps))  # warm
            started = time.perf_counter()
            answer = client.post(query, content=clip, headers={"Content-Type": "video/mp4"})
            seconds = time.perf_counter() - started
        answer.raise_for_status()
        print(f"video {width}x{height} -> x{args.scale} {args.method}, {frames} frames: {seconds:.1f} s, "
              f"{frames / seconds:.2f} frames/s ({answer.headers.get('X-SR-Model')}, "
              f"{len(answer.content) / 2**20:.1f} MiB out)", flush=True)

        small = photo_like(128, 7)
        alone = _singles(server.url, small, None, 30)
        done = threading.Event()
        beside: list[float] = []
        worker = threading.Thread(target=lambda: beside.extend(_singles(server.url, small, done, 0)))
        worker.start()
        with httpx.Client(timeout=600) as client:
            client.post(query, content=clip, headers={"Content-Type": "video/mp4"}).raise_for_status()
        done.set()
        worker.join()

        done = threading.Event()
        beside_job: list[float] = []
        worker = threading.Thread(target=lambda: beside_job.extend(_singles(server.url, small, done, 0)))
        worker.start()
        job_seconds = _run_job(server.url, args, clip)
        done.set()
        worker.join()
        print(f"the same video as a job, beside one-at-a-time requests: {job_seconds:.1f} s, "
              f"{frames / job_seconds:.2f} frames/s", flush=True)
        for label, values in (("alone", alone), ("beside the video request", beside),
                              ("beside the video job", beside_job)):
            print(f"128x128 x3 espcn one at a time, {label}: {len(values)} requests, "
                  f"p50 {statistics.median(values):.0f} ms, p99 {percentile(values, 99):.0f} ms", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
