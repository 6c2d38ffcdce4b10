"""What the tests share that is not a fixture: paths, test pictures, HTTP helpers, a live server."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from service.__main__ import uvicorn_config
from service.app import create_app
from service.config import Settings
from service.imaging.synthetic import pattern
from service.serving.batching import RunBatch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SHIPPED_STORE = REPO_ROOT / "model_store"

__all__ = ["pattern"]


def image_bytes(
    mode: str = "RGB", size: tuple[int, int] = (23, 17), fmt: str = "PNG", **save: Any
) -> bytes:
    width, height = size
    if mode in ("RGB", "RGBA"):
        img = Image.fromarray(pattern(width, height, len(mode)))
    elif mode in ("L", "LA"):
        arr = pattern(width, height, len(mode))
        img = Image.fromarray(arr[:, :, 0] if mode == "L" else arr)
    elif mode == "P":
        img = Image.fromarray(pattern(width, height, 3)).quantize(64)
    else:
        raise ValueError(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def post(client: TestClient, data: bytes, content_type: str = "image/png", **params: object):  # type: ignore[no-untyped-def]
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(f"/v1/upscale?{query}", content=data, headers={"Content-Type": content_type})


def assert_problem(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"].endswith(code) and body["title"] and body["detail"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval_s)


def read_response(raw: socket.socket) -> bytes:
    """One HTTP/1.1 response off a raw socket: headers and the whole body (they may arrive in
    separate segments); the connection stays open for the next request."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += raw.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += raw.recv(65536)
    return head + b"\r\n\r\n" + body


class LiveServer:
    """uvicorn on a free port in a thread: real sockets and real HTTP, in this process."""

    def __init__(self, settings: Settings, *, run_batch: RunBatch | None = None) -> None:
        self.app = create_app(settings) if run_batch is None else create_app(settings, run_batch=run_batch)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        # The server's own uvicorn options (header deadline, connection cap), on our socket.
        self.server = uvicorn.Server(uvicorn_config(self.app, settings, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout_s=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


class ServerProcess:
    """``python -m service`` in a process of its own on a free port: the server users run."""

    def __init__(self, log_path: Path, **env: str) -> None:
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        environment = {**os.environ, "SR_LOG_LEVEL": "WARNING", "SR_CALIBRATE": "false",
                       "SR_MODEL_STORE": str(SHIPPED_STORE), **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(self.port)],
                                     cwd=REPO_ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT)

    def __enter__(self) -> ServerProcess:
        import httpx

        def ready() -> bool:
            try:
                return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=90, interval_s=0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self._log.close()
