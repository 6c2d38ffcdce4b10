"""Admission, deadlines, disconnects and draining, through real HTTP where it matters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.config import Settings
from service.models.inference import run_network
from service.serving.runtime import Runtime

from .helpers import (
    REPO_ROOT,
    SHIPPED_STORE,
    LiveServer,
    assert_problem,
    decode,
    image_bytes,
    post,
    read_response,
    wait_until,
)


class Gate(threading.Event):
    """Holds every batch on the device until set: a slow model on demand (its ``run_batch``)."""

    def run_batch(self, model: Any, batch: torch.Tensor) -> torch.Tensor:
        self.wait(30)
        return run_network(model, batch)


@pytest.fixture
def gate() -> Iterator[Gate]:
    opened = Gate()
    yield opened
    opened.set()  # never leave a device thread waiting


def runtime_of(client: TestClient) -> Runtime:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def test_concurrent_mixed_sizes_return_the_sequential_pixels(client: TestClient) -> None:
    sizes = [(7, 5), (130, 90), (1, 1), (64, 64), (33, 201), (96, 96), (2, 40), (150, 149)]
    bodies = [image_bytes("RGB", s) for s in sizes]
    sequential = [post(client, b, scale=3, method="espcn").content for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda b: post(client, b, scale=3, method="espcn").content, bodies))
    differing, values = 0, 0
    for a, b, size in zip(sequential, concurrent, sizes, strict=True):
        pa, pb = np.asarray(decode(a)).astype(int), np.asarray(decode(b)).astype(int)
        assert pa.shape[:2] == (size[1] * 3, size[0] * 3)
        assert np.abs(pa - pb).max() <= 1  # rounding of equal sums, never more
        differing, values = differing + int((pa != pb).sum()), values + pa.size
    # Counted over all the images: on the 7x5 one (945 values) a single flip is already 0.106 %.
    assert differing / values < 1e-3


def test_full_queue_answers_503_at_once(gate: Gate, make_client: Callable[..., TestClient]) -> None:
    client = make_client(run_batch=gate.run_batch, max_queue=2)
    runtime = runtime_of(client)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, client, image_bytes(), scale=2) for _ in range(2)]
        wait_until(lambda: runtime.lifecycle.inflight == 2)
        started = time.monotonic()
        refused = post(client, image_bytes(size=(300, 300)), scale=2)
        assert time.monotonic() - started < 1.0
        assert_problem(refused, 503, "overloaded")
        assert int(refused.headers["retry-after"]) >= 1
        gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
    assert post(client, image_bytes()).status_code == 200  # and it recovers
    metrics = client.get("/metrics").text
    assert 'sr_rejected_requests_total{reason="overloaded"} 1.0' in metrics


def test_deadline_answers_504_and_the_server_goes_on(
    gate: Gate, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(run_batch=gate.run_batch, request_timeout_s=0.3)
    assert_problem(post(client, image_bytes(), scale=2), 504, "deadline_exceeded")
    gate.set()
    assert post(client, image_bytes(), scale=2).status_code == 200
    assert runtime_of(client).batcher.queued_tiles == 0


def test_classical_methods_need_no_device(gate: Gate, make_client: Callable[..., TestClient]) -> None:
    client = make_client(run_batch=gate.run_batch, request_timeout_s=0.3)
    assert post(client, image_bytes(), method="bicubic").status_code == 200


@pytest.fixture
def live_server(gate: Gate) -> Iterator[tuple[str, Runtime]]:
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False)
    with LiveServer(settings, run_batch=gate.run_batch) as live:
        yield live.url, live.app.state.runtime
        gate.set()


def test_disconnect_drops_queued_work(live_server: tuple[str, Runtime], gate: Gate) -> None:
    url, runtime = live_server
    host, port = url.removeprefix("http://").split(":")
    body = image_bytes(size=(400, 300))
    # Two requests: the first holds the device (gated), the second waits in the queue.
    with httpx.Client(base_url=url, timeout=30) as keeper:
        holder = threading.Thread(
            target=lambda: keeper.post("/v1/upscale?scale=2", content=image_bytes(), headers={"Content-Type": "image/png"})
        )
        holder.start()
        wait_until(lambda: runtime.lifecycle.inflight == 1)
        raw = socket.create_connection((host, int(port)))
        head = (
            f"POST /v1/upscale?scale=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        raw.sendall(head + body)
        wait_until(lambda: runtime.batcher.queued_tiles > 0)
        raw.close()  # the client hangs up while its tiles wait
        wait_until(lambda: runtime.batcher.queued_tiles == 0)
        wait_until(lambda: runtime.lifecycle.inflight == 1)
        metrics = httpx.get(url + "/metrics").text
        assert 'sr_requests_total{method="espcn",scale="2",status="499"} 1.0' in metrics
        gate.set()
        holder.join(30)


def test_sigterm_drains_then_exits(tmp_path: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "SR_LOG_LEVEL": "WARNING", "SR_DRAIN_DELAY_S": "0.5"}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ok(url + "/readyz"), timeout_s=60)
        # Twenty requests in flight when SIGTERM arrives: x4 of 400x400 each (about 8 s of work
        # together on 2 cores, so none finishes before the last is admitted), PNG.
        bodies = [image_bytes(size=(400, 400))] * 20
        results: list[httpx.Response] = []

        def send(body: bytes) -> None:
            results.append(httpx.post(url + "/v1/upscale?scale=4", content=body,
                                      headers={"Content-Type": "image/png"}, timeout=60))

        senders = [threading.Thread(target=send, args=(body,)) for body in bodies]
        for sender in senders:
            sender.start()
        wait_until(lambda: "sr_inflight_requests 20.0" in httpx.get(url + "/metrics").text, timeout_s=20)
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 503)
        refused = httpx.post(url + "/v1/upscale", content=image_bytes(), headers={"Content-Type": "image/png"})
        assert_problem(refused, 503, "draining")
        for sender in senders:
            sender.join(60)
        assert [r.status_code for r in results] == [200] * 20
        assert all(decode(r.content).size == (1600, 1600) for r in results)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_model_fault_is_a_500_problem_and_counted(make_client: Callable[..., TestClient]) -> None:
    def broken(model: Any, batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("injected fault")

    client = make_client(run_batch=broken)
    response = post(client, image_bytes(), scale=2)
    assert_problem(response, 500, "inference_failed")
    assert post(client, image_bytes(), method="bicubic").status_code == 200  # the rest still works
    metrics = client.get("/metrics").text
    assert 'sr_requests_total{method="espcn",scale="2",status="500"} 1.0' in metrics


def test_a_trickled_body_gets_408_and_never_holds_an_admission_slot() -> None:
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False,
                        upload_timeout_s=0.5, max_queue=1)
    with LiveServer(settings) as live:
        raw = socket.create_connection(("127.0.0.1", live.port))
        raw.sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 5000\r\n\r\n" + image_bytes()[:100])  # and then nothing
        raw.settimeout(10)
        started = time.monotonic()
        # While it trickles, the one admission slot is free for a request whose body is here.
        with httpx.Client(base_url=live.url, timeout=10) as client:
            assert post(client, image_bytes(), scale=2).status_code == 200
        answer = read_response(raw).decode("latin-1")
        raw.close()
        assert time.monotonic() - started < 5
        assert answer.startswith("HTTP/1.1 408") and "request_timeout" in answer
        assert live.app.state.runtime.lifecycle.inflight == 0


