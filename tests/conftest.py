from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.config import REPO_ROOT, Settings

DATA = Path(__file__).parent / "data"
SHIPPED_STORE = REPO_ROOT / "model_store"


def pattern(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A deterministic test picture: gradients, an edge, and some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 40 + 150 * (xx / max(width - 1, 1)) * (c % 2) + 100 * (yy / max(height - 1, 1)) * ((c + 1) % 2)
        base += 40 * ((xx + 2 * yy + 7 * c) % 9 < 4)
        base += rng.normal(0, 6, size=base.shape)
        planes.append(base)
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


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


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        # Calibration times every method at start-up (seconds); the tests that need the cost
        # model turn it on.
        values: dict[str, Any] = {"model_store": SHIPPED_STORE, "device": "cpu", "codec_threads": 2,
                                  "calibrate": False}
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """One app on the shipped models, shared by a module's read-only tests."""
    settings = Settings(model_store=SHIPPED_STORE, device="cpu", codec_threads=2, calibrate=False)
    with TestClient(create_app(settings)) as c:
        yield c


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.01) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval_s)


class LiveServer:
    """uvicorn on a free port in a thread: real sockets and real HTTP, in this process."""

    def __init__(self, settings: Settings) -> None:
        import socket
        import threading

        import uvicorn

        self.app = create_app(settings)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout_s=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
