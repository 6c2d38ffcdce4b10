"""Admission by cost: a request is priced from its header and admitted against a memory budget,
the request count and its deadline; the codec threads take the smallest job first and start
nothing past its deadline; a hung device turns readiness off."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from service.config import Settings
from service.errors import DeadlineExceeded
from service.imaging.codec import probe
from service.imaging.synthetic import pattern
from service.models.inference import run_network
from service.serving.admission import MemoryBudget, RequestCost, default_budget, estimate_memory
from service.serving.codec_pool import CodecPool

from .helpers import (
    REPO_ROOT,
    SHIPPED_STORE,
    LiveServer,
    ServerProcess,
    assert_problem,
    image_bytes,
    wait_until,
)

GiB = 2**30


def png(width: int, height: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pattern(width, height, seed=seed)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# -- pricing -------------------------------------------------------------------------------------


def test_the_header_is_enough_to_price_a_request() -> None:
    header = probe(png(300, 200), scale=2, max_input_pixels=10**8, max_output_pixels=10**9)
    assert (header.width, header.height, header.channels, header.format) == (300, 200, 3, "png")
    small = estimate_memory(300, 200, 3, 2, learned=True, halo=4, body_bytes=1000)
    assert estimate_memory(600, 400, 3, 2, learned=True, halo=4, body_bytes=1000) > 3 * (small - 30 * 2**20)
    assert estimate_memory(300, 200, 3, 4, learned=True, halo=4, body_bytes=1000) > small
    assert estimate_memory(300, 200, 3, 2, learned=False, halo=0, body_bytes=1000) < small


def test_the_budget_refuses_what_does_not_fit_beside_the_others() -> None:
    budget = MemoryBudget(100)
    budget.reserve(RequestCost(60), retry_after_s=2)
    with pytest.raises(Exception) as full:
        budget.reserve(RequestCost(50), retry_after_s=2)
    assert full.value.status == 503 and full.value.code == "overloaded"  # type: ignore[attr-defined]
    assert full.value.headers["Retry-After"] == "2"  # type: ignore[attr-defined]
    budget.release(RequestCost(60))
    budget.reserve(RequestCost(50), retry_after_s=2)
    with pytest.raises(Exception) as never:
        budget.check_fits_alone(RequestCost(101), "x2 espcn of 10x10")
    assert never.value.status == 413 and never.value.code == "image_too_large"  # type: ignore[attr-defined]


def test_over_http_memory_refusals_are_503_memory_and_413_for_the_impossible() -> None:
    gate = threading.Event()

    def held(model: Any, batch: torch.Tensor) -> torch.Tensor:
        gate.wait(30)
        return run_network(model, batch)

    one = estimate_memory(256, 256, 3, 2, learned=True, halo=8, body_bytes=len(png(256, 256)))
    small = estimate_memory(23, 17, 3, 2, learned=False, halo=0, body_bytes=len(image_bytes()))
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False,
                        memory_budget_bytes=one + small + 2**20)  # one large and one small
    with LiveServer(settings, run_batch=held) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        first = threading.Thread(target=client.post, args=("/v1/upscale?scale=2",),
                                 kwargs={"content": png(256, 256), "headers": {"Content-Type": "image/png"}})
        first.start()
        wait_until(lambda: "sr_inflight_requests 1.0" in client.get("/metrics").text)
        second = client.post("/v1/upscale?scale=2", content=png(256, 256, seed=1),
                             headers={"Content-Type": "image/png"})
        assert_problem(second, 503, "overloaded")
        assert "MiB" in second.json()["detail"] and int(second.headers["Retry-After"]) >= 1
        # Small work still fits beside the held request.
        assert client.post("/v1/upscale?method=bicubic", content=image_bytes(),
                           headers={"Content-Type": "image/png"}).status_code == 200
        huge = client.post("/v1/upscale?scale=4", content=png(1024, 1024), headers={"Content-Type": "image/png"})
        assert_problem(huge, 413, "image_too_large")
        assert "SR_MEMORY_BUDGET_BYTES" in huge.json()["detail"]
        gate.set()  # (and on failure: the fixture's server would wait for it otherwise)
        first.join()
        metrics = client.get("/metrics").text
        assert 'sr_rejected_requests_total{reason="memory"} 1.0' in metrics
        assert "sr_memory_reserved_bytes 0.0" in metrics


def _status_kib(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of a process, in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status)[1])  # type: ignore[index]


def test_a_large_request_peaks_below_its_estimate_and_the_largest_fit_the_pod(tmp_path: Path) -> None:
    """The estimate admission uses is an upper bound of what the server really holds: one
    request of 16.8 M output pixels, measured in a fresh server process by its peak resident
    set. And the defaults' largest legal requests (every scale, RGBA, a network) fit the
    budget that server derives from the shipped Kubernetes memory limit."""
    width = height = 1024
    body = png(width, height)
    with ServerProcess(tmp_path / "log") as server, httpx.Client(timeout=120) as client:
        for _ in range(2):  # lazy initialisation paid, buffers of this shape allocated once
            assert client.post(server.url + "/v1/upscale?scale=4", content=png(64, 64),
                               headers={"Content-Type": "image/png"}).status_code == 200
        idle = _status_kib(server.proc.pid, "VmRSS") * 1024
        answer = client.post(server.url + "/v1/upscale?scale=4&method=espcn", content=body,
                             headers={"Content-Type": "image/png"})
        assert answer.status_code == 200
        grew = _status_kib(server.proc.pid, "VmHWM") * 1024 - idle
    estimate = estimate_memory(width, height, 3, 4, learned=True, halo=4, body_bytes=len(body))
    assert 0 < grew <= estimate, f"grew {grew / 2**20:.0f} MiB, estimated {estimate / 2**20:.0f} MiB"

    settings = Settings()
    deployment = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    budget = default_budget(int(limit[:-2]) * GiB, idle)
    for scale in (2, 3, 4):
        pixels = min(settings.max_input_pixels, settings.max_output_pixels // (scale * scale))
        side = int(pixels**0.5)
        need = estimate_memory(side, side, 4, scale, learned=True, halo=8, body_bytes=settings.max_upload_bytes)
        assert need <= budget, f"x{scale} {side}x{side} needs {need / GiB:.2f} GiB of {budget / GiB:.2f}"


# -- the codec threads ---------------------------------------------------------------------------


def test_the_codec_pool_takes_the_smallest_job_first_and_skips_the_late() -> None:
    async def scenario() -> tuple[list[str], BaseException | None]:
        pool = CodecPool(1)
        order: list[str] = []
        blocker = threading.Event()
        running = pool.run(lambda: blocker.wait(5), size=0)  # occupies the only thread
        task = asyncio.ensure_future(running)
        await asyncio.sleep(0.05)
        large = asyncio.ensure_future(pool.run(lambda: order.append("large"), size=10**7))
        small = asyncio.ensure_future(pool.run(lambda: order.append("small"), size=10))
        late = asyncio.ensure_future(pool.run(lambda: order.append("late"), size=1, deadline=time.monotonic() + 0.1))
        await asyncio.sleep(0.3)
        blocker.set()
        await asyncio.gather(task, large, small)
        error = None
        try:
            await late
        except DeadlineExceeded as exc:
            error = exc
        pool.shutdown()
        return order, error

    order, error = asyncio.run(scenario())
    assert order == ["small", "large"]  # "late" never ran
    assert isinstance(error, DeadlineExceeded)


def test_the_codec_pool_is_busy_while_a_job_runs_or_waits() -> None:
    """What narrows the network to one thread (models.backends.OnnxRunner): other CPU work."""
    async def scenario() -> list[bool]:
        pool = CodecPool(1)
        seen = [pool.busy]
        release = threading.Event()
        running = asyncio.ensure_future(pool.run(lambda: release.wait(5), size=1))
        await asyncio.sleep(0.05)
        seen.append(pool.busy)  # running
        waiting = asyncio.ensure_future(pool.run(lambda: None, size=1))
        await asyncio.sleep(0.05)
        seen.append(pool.busy)  # one running, one waiting
        release.set()
        await asyncio.gather(running, waiting)
        seen.append(pool.busy)
        pool.shutdown()
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False]


def test_a_cancelled_caller_waits_for_its_running_codec_job_to_end() -> None:
    """A job's DELETE cancels its pipeline: the step running on a codec thread finishes before
    the caller goes on (to close the video container that step is writing, say)."""
    async def scenario() -> list[str]:
        pool = CodecPool(1)
        order: list[str] = []
        release = threading.Event()

        def step() -> None:
            release.wait(5)
            order.append("step done")

        caller = asyncio.ensure_future(pool.run(step, size=1))
        await asyncio.sleep(0.05)
        caller.cancel()
        await asyncio.sleep(0.1)
        assert not caller.done()  # still waiting for the step it started
        release.set()
        try:
            await caller
        except asyncio.CancelledError:
            order.append("caller cancelled")
        pool.shutdown()
        return order

    assert asyncio.run(scenario()) == ["step done", "caller cancelled"]


def test_background_work_leaves_a_codec_thread_to_interactive_requests() -> None:
    async def scenario() -> list[str]:
        pool = CodecPool(2)
        order: list[str] = []
        release = threading.Event()

        def job(name: str) -> None:
            order.append(name)
            release.wait(5)

        # Two jobs' work arrives first; a request's small step comes after it.
        background = [asyncio.ensure_future(pool.run(lambda n=n: job(n), size=1, background=True))  # type: ignore[misc]
                      for n in ("job-1", "job-2")]
        await asyncio.sleep(0.1)
        interactive = asyncio.ensure_future(pool.run(lambda: order.append("request"), size=10**9))
        await asyncio.wait_for(interactive, timeout=2)  # at once, on the thread jobs may not take
        release.set()
        await asyncio.gather(*background)
        pool.shutdown()
        return order

    # With two threads, background work holds at most one: job-2 waited for job-1.
    assert asyncio.run(scenario()) == ["job-1", "request", "job-2"]


def test_a_small_request_is_not_stuck_behind_large_ones() -> None:
    """Twelve large network requests queue for the codec threads; a small bicubic request sent
    after them is answered before them."""
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False, codec_threads=1)
    large, finished = png(768, 768), []
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=120) as client:
        def send(name: str, body: bytes, query: str) -> None:
            response = client.post("/v1/upscale?" + query, content=body, headers={"Content-Type": "image/png"})
            assert response.status_code == 200, response.text
            finished.append(name)

        threads = [threading.Thread(target=send, args=(f"large{i}", large, "scale=3")) for i in range(12)]
        for thread in threads:
            thread.start()
        wait_until(lambda: "sr_inflight_requests 12.0" in client.get("/metrics").text, timeout_s=30)
        send("small", png(32, 24), "method=bicubic")
        for thread in threads:
            thread.join()
    assert finished.index("small") < 6, finished


# -- a hung device -------------------------------------------------------------------------------


def test_a_hung_device_turns_readiness_off_until_it_answers() -> None:
    gate = threading.Event()

    def hangs(model: Any, batch: torch.Tensor) -> torch.Tensor:
        gate.wait(30)
        return run_network(model, batch)

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False, watchdog_s=0.4)
    with LiveServer(settings, run_batch=hangs) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        stuck = threading.Thread(target=client.post, args=("/v1/upscale",),
                                 kwargs={"content": image_bytes(), "headers": {"Content-Type": "image/png"}})
        stuck.start()
        wait_until(lambda: client.get("/readyz").status_code == 503, timeout_s=10)
        assert client.get("/readyz").json() == {"status": "device_hung"}
        metrics = client.get("/metrics").text
        assert "sr_device_hung 1.0" in metrics and "sr_device_hangs_total 1.0" in metrics
        gate.set()
        stuck.join()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=10)
        assert "sr_device_hung 0.0" in client.get("/metrics").text


def test_decoded_pixels_agree_with_the_header() -> None:
    """probe() and decode() read the same header: the price is for the image that is decoded."""
    from service.imaging.codec import decode

    for mode, channels in (("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4), ("P", 3)):
        buffer = io.BytesIO()
        Image.fromarray(pattern(20, 10)).convert(mode).save(buffer, format="PNG")
        data = buffer.getvalue()
        header = probe(data, scale=2, max_input_pixels=10**6, max_output_pixels=10**7)
        decoded = decode(data, scale=2, max_input_pixels=10**6, max_output_pixels=10**7)
        assert header.channels == channels == decoded.pixels.shape[2]
        assert (header.width, header.height) == (decoded.width, decoded.height) == (20, 10)
    assert np.asarray(decoded.pixels).dtype == np.uint8


def test_work_that_cannot_finish_before_its_deadline_is_refused_at_once() -> None:
    """With 25 s of predicted work admitted, a second 25 s request could not finish within
    30 s: 503 at once (reason ``deadline``), not a 504 half a minute later. A resampler's
    request, which predicts little work, still gets in."""
    from service.serving.choice import CostModel, LinearCost

    gate = threading.Event()

    def held(model: Any, batch: torch.Tensor) -> torch.Tensor:
        gate.wait(30)
        return run_network(model, batch)

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False,
                        request_timeout_s=30, codec_threads=2)
    with LiveServer(settings, run_batch=held) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        live.app.state.runtime.costs = CostModel(process={
            ("espcn", 2): LinearCost(25_000.0, 0.0), ("bicubic", 2): LinearCost(5.0, 0.0),
        })
        first = threading.Thread(target=client.post, args=("/v1/upscale?scale=2",),
                                 kwargs={"content": image_bytes(), "headers": {"Content-Type": "image/png"}})
        first.start()
        wait_until(lambda: "sr_inflight_requests 1.0" in client.get("/metrics").text)
        started = time.monotonic()
        late = client.post("/v1/upscale?scale=2", content=image_bytes(), headers={"Content-Type": "image/png"})
        assert time.monotonic() - started < 2
        assert_problem(late, 503, "overloaded")
        assert "could not finish within 30" in late.json()["detail"] and int(late.headers["Retry-After"]) >= 10
        assert client.post("/v1/upscale?method=bicubic", content=image_bytes(),
                           headers={"Content-Type": "image/png"}).status_code == 200
        gate.set()
        first.join()
        assert 'sr_rejected_requests_total{reason="deadline"} 1.0' in client.get("/metrics").text
