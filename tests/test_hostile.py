"""Bad and careless clients get clear 4xx answers and are counted as theirs, not as our faults."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings

from .helpers import (
    SHIPPED_STORE,
    LiveServer,
    assert_problem,
    image_bytes,
    read_response,
    wait_until,
)

CHOOSE = {"width": 64, "height": 48, "scale": 3}


def test_a_json_body_over_its_limit_is_refused(make_client: Any) -> None:
    client = make_client(max_json_bytes=1024)
    padded = b'{"width": 10, "height": 10, "scale": 3, "pad": "' + b"x" * 5000 + b'"}'
    declared = client.post("/v1/methods/choose", content=padded, headers={"Content-Type": "application/json"})
    assert_problem(declared, 413, "payload_too_large")

    def chunks() -> Any:  # no Content-Length: the limit holds while the body streams
        yield b'{"width": 10, "pad": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    streamed = client.post("/v1/methods/choose", content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(streamed, 413, "payload_too_large")
    assert client.post("/v1/methods/choose", json=CHOOSE).status_code == 200


def test_json_that_does_not_parse_is_a_400_invalid_body(client: TestClient) -> None:
    for body in (b"{not json", b"\xff\xfe\x00"):
        response = client.post("/v1/methods/choose", content=body, headers={"Content-Type": "application/json"})
        assert_problem(response, 400, "invalid_body")


def test_booleans_are_not_numbers(client: TestClient) -> None:
    for field in ("min_psnr_db", "max_latency_ms", "width"):
        response = client.post("/v1/methods/choose", json={**CHOOSE, field: False})
        assert_problem(response, 422, "invalid_parameter")
        assert field in response.json()["detail"]


def test_a_client_hanging_up_mid_upload_is_a_499_not_a_500() -> None:
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False)
    with LiveServer(settings) as live:
        body = image_bytes(size=(64, 64))
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", live.port))
            raw.sendall(b"POST /v1/upscale?method=bicubic HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
            time.sleep(0.05)
            raw.close()

        wait_until(lambda: 'sr_requests_total{method="bicubic",scale="2",status="499"} 3.0' in _metrics(live.url),
                   timeout_s=10)
        assert 'sr_requests_total{method="bicubic",scale="2",status="500"} 0.0' in _metrics(live.url)


def _metrics(url: str) -> str:
    import httpx

    return httpx.get(url + "/metrics", timeout=5).text


def test_every_outcome_is_timed_and_start_up_is_not_traffic(make_client: Any) -> None:
    from service.models.inference import run_network

    def slow(model: Any, batch: Any) -> Any:
        time.sleep(0.6)
        return run_network(model, batch)

    client = make_client(run_batch=slow, request_timeout_s=0.3, calibrate=True)
    metrics = client.get("/metrics").text
    # Calibration ran every model through the batcher; none of it counts as inference traffic.
    assert 'sr_inference_duration_seconds_count{method="espcn",scale="2"} 0.0' in metrics
    assert 'sr_batch_size_count{method="espcn",scale="2"} 0.0' in metrics
    assert_problem(client.post("/v1/upscale", content=image_bytes(), headers={"Content-Type": "image/png"}),
                   504, "deadline_exceeded")
    assert client.post("/v1/upscale?method=bicubic", content=image_bytes(),
                       headers={"Content-Type": "image/png"}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'sr_request_duration_seconds_count{method="espcn",scale="2",status_class="5xx"} 1.0' in metrics
    assert 'sr_request_duration_seconds_count{method="bicubic",scale="2",status_class="2xx"} 1.0' in metrics


def _answer(raw: socket.socket, timeout_s: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    raw.settimeout(timeout_s)
    data = b""
    while chunk := raw.recv(65536):
        data += chunk
    return data


def _problem_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    import json

    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return int(head.split(b" ")[1]), json.loads(body)


def test_slowloris_headers_and_bodies_are_cut_off_and_good_requests_go_on() -> None:
    """Forty connections that never finish their headers, or their body, are answered 408 and
    closed after their deadline; meanwhile a good request is served at once."""
    import httpx

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False,
                        header_timeout_s=0.5, upload_timeout_s=0.8, max_queue=4)
    with LiveServer(settings) as live:
        started = time.monotonic()
        slow = []
        for i in range(40):
            raw = socket.create_connection(("127.0.0.1", live.port))
            if i % 2:  # headers begun, never finished
                raw.sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:  # headers done, the body trickles and stops
                raw.sendall(b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                            b"Content-Length: 9000\r\n\r\n" + image_bytes()[:50])
            slow.append(raw)
        silent = socket.create_connection(("127.0.0.1", live.port))  # says nothing at all
        with httpx.Client(base_url=live.url, timeout=10) as client:
            good = client.post("/v1/upscale", content=image_bytes(), headers={"Content-Type": "image/png"})
            assert good.status_code == 200
        codes = []
        for raw in [*slow, silent]:
            status, problem = _problem_of(_answer(raw))
            codes.append((status, problem["code"]))
            raw.close()
        assert time.monotonic() - started < 8
        assert set(codes) == {(408, "request_timeout")}
        assert live.app.state.runtime.lifecycle.inflight == 0


def test_connections_past_the_cap_get_503_problem_json() -> None:
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False,
                        max_connections=3, header_timeout_s=5)
    with LiveServer(settings) as live:
        idle = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(3)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", live.port))
        status, problem = _problem_of(_answer(extra))
        assert (status, problem["code"]) == (503, "overloaded")
        for raw in [*idle, extra]:
            raw.close()
        time.sleep(0.2)  # the closed ones leave room again
        again = socket.create_connection(("127.0.0.1", live.port))
        again.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(again).startswith(b"HTTP/1.1 200")
        again.close()


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    b"POST /v1/upscale HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
])
def test_malformed_http_is_a_400_problem_not_text(request_bytes: bytes) -> None:
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False)
    with LiveServer(settings) as live:
        raw = socket.create_connection(("127.0.0.1", live.port))
        raw.sendall(request_bytes)
        status, problem = _problem_of(_answer(raw))
        raw.close()
        assert (status, problem["code"]) == (400, "invalid_body") and problem["detail"]


def test_headers_past_their_limit_get_431_at_once_and_others_are_not_stalled() -> None:
    """httptools' cost grows with the square of a header's length: without a limit one 48 MB
    header stalled every other request for seconds."""
    import httpx

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False,
                        max_header_bytes=16 * 1024)
    with LiveServer(settings) as live:
        raw = socket.create_connection(("127.0.0.1", live.port))
        raw.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ")
        started = time.monotonic()
        try:
            for _ in range(64):  # 4 MiB, far past the limit: the server stops it early
                raw.sendall(b"a" * 65536)
        except OSError:
            pass  # closed on us: that is the point
        status, problem = _problem_of(_answer(raw))
        raw.close()
        assert (status, problem["code"]) == (431, "header_too_large")
        assert time.monotonic() - started < 3
        # A request with headers and a body in one write is not mistaken for large headers.
        with httpx.Client(base_url=live.url, timeout=10) as client:
            body = image_bytes(size=(200, 200))
            assert len(body) > 16 * 1024
            assert client.post("/v1/upscale?method=bicubic", content=body,
                               headers={"Content-Type": "image/png"}).status_code == 200


def test_an_answer_too_large_for_its_format_is_a_413_and_the_connection_lives_on() -> None:
    """WebP holds sides up to 16383 pixels, JPEG up to 65500: past them, 413 before any work
    (it was a 500 from the encoder, found by the fuzz corpus)."""
    import httpx

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        wide = image_bytes(size=(8192, 2))
        answer = client.post("/v1/upscale?method=nearest&format=webp", content=wide,
                             headers={"Content-Type": "image/png"})
        assert_problem(answer, 413, "image_too_large")
        assert "16383" in answer.json()["detail"]
        assert client.post("/v1/upscale?method=nearest&format=webp", content=image_bytes(size=(8191, 2)),
                           headers={"Content-Type": "image/png"}).status_code == 200
        assert client.post("/v1/upscale?method=nearest", content=wide,
                           headers={"Content-Type": "image/png"}).status_code == 200  # PNG holds it


def test_a_fault_is_a_500_problem_and_keep_alive_survives_it() -> None:
    """After a 500 the client's next request on the same connection is answered (Starlette
    re-raised after answering, and uvicorn closed the connection: the next request got a reset)."""
    def boom() -> None:
        raise RuntimeError("an unexpected fault of ours")

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False)
    live = LiveServer(settings)
    live.app.add_api_route("/boom", boom, methods=["GET"])
    with live:
        raw = socket.create_connection(("127.0.0.1", live.port))
        raw.settimeout(10)
        for _ in range(2):  # the same connection, twice
            raw.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, rest = read_response(raw).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 500") and b"application/problem+json" in head
            assert b'"code":"internal_error"' in rest.replace(b" ", b"")
        raw.close()
