"""Fixtures: settings and clients made per test (factories), one shared read-only client."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.serving.batching import RunBatch

from .helpers import SHIPPED_STORE

# Every app and server process of the suite runs torch unless a test asks for another backend:
# SR_BACKEND=auto exports and times every model at start-up (seconds each on 2 cores), and the
# backends' own tests (tests/test_backends.py) hold them equal.
os.environ.setdefault("SR_BACKEND", "torch")
# Job state and files of every app the suite starts go to a temporary folder, never the
# checkout's jobs/; tests of jobs give each app a folder of its own (make_settings does).
os.environ.setdefault("SR_JOBS_DIR", tempfile.mkdtemp(prefix="sr-test-jobs-"))


@pytest.fixture(autouse=True)
def _seeded_random() -> None:
    # Tests draw their inputs from torch's and numpy's global generators: seeded per test, a
    # failure is the same failure on a rerun, and no test's outcome hangs on the order before it.
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        # Calibration times every method at start-up (seconds); the tests that need the cost
        # model turn it on.
        values: dict[str, Any] = {"model_store": SHIPPED_STORE, "device": "cpu", "codec_threads": 2,
                                  "calibrate": False, "jobs_dir": tmp_path / "jobs"}
        values.update(overrides)
        return Settings(**values)

    return factory


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """``make_client(run_batch=..., **settings)``: an app per call; ``run_batch`` replaces the
    network that runs each batch (a slow or failing one)."""
    clients: list[TestClient] = []

    def factory(run_batch: RunBatch | None = None, **overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        app = create_app(settings) if run_batch is None else create_app(settings, run_batch=run_batch)
        client = TestClient(app)
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
