"""The Python client and the ``subpixel`` command line, against a real server process."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from PIL import Image

from service.client import (
    AsyncClient,
    Client,
    InvalidImage,
    InvalidParameter,
    RetryPolicy,
    Unauthorized,
    Unavailable,
)
from service.config import Settings
from service.imaging.synthetic import pattern
from service.models.inference import run_network

from .helpers import SHIPPED_STORE, LiveServer, ServerProcess, decode, image_bytes, wait_until

SUBPIXEL = str(Path(sys.executable).parent / "subpixel")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server") / "log") as running:
        yield running


def test_the_client_takes_a_path_bytes_or_a_pil_image(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(image_bytes(size=(21, 13)))
    with Client(server.url) as sr:
        from_path = sr.upscale(path, scale=3, method="espcn")
        from_bytes = sr.upscale(path.read_bytes(), scale=3, method="espcn")
        from_pil = sr.upscale(Image.open(path), scale=3, method="espcn")
    assert from_path.content == from_bytes.content == from_pil.content
    assert from_path.image().size == (63, 39)
    assert (from_path.method, from_path.scale, from_path.media_type) == ("espcn", 3, "image/png")
    assert from_path.model is not None and from_path.model.startswith("espcn-x3@")
    assert {"decode", "infer", "encode", "total"} <= set(from_path.timings_ms)
    saved = from_path.save(tmp_path / "out.png")
    assert decode(saved.read_bytes()).size == (63, 39)


def test_the_client_lists_and_chooses(server: ServerProcess) -> None:
    with Client(server.url) as sr:
        assert "espcn" in {m["name"] for m in sr.methods()["methods"]}
        assert {m["method"] for m in sr.models()["models"]} >= {"espcn", "deconv"}
        choice = sr.choose(64, 64, 3, min_psnr_db=20.0, objective="speed")
        assert choice["method"] is not None


def test_errors_are_typed_from_the_problem(server: ServerProcess) -> None:
    with Client(server.url) as sr:
        with pytest.raises(InvalidImage) as corrupt:
            sr.upscale(image_bytes()[:30])
        assert (corrupt.value.status, corrupt.value.code) == (400, "invalid_image")
        with pytest.raises(InvalidParameter, match="scale must be one of"):
            sr.upscale(image_bytes(), scale=5)


def test_the_async_client_runs_requests_concurrently(server: ServerProcess) -> None:
    async def main() -> list[tuple[int, int]]:
        async with AsyncClient(server.url) as sr:
            results = await asyncio.gather(*(sr.upscale(image_bytes(size=(10 + i, 9)), scale=2) for i in range(6)))
            with pytest.raises(InvalidImage):
                await sr.upscale(b"not an image")
        return [r.image().size for r in results]

    assert asyncio.run(main()) == [(2 * (10 + i), 18) for i in range(6)]


def test_an_api_key_is_sent(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "log", SR_API_KEYS="k1") as keyed:
        with Client(keyed.url) as anonymous, pytest.raises(Unauthorized):
            anonymous.methods()
        with Client(keyed.url, api_key="k1") as sr:
            assert sr.upscale(image_bytes(), method="bicubic").scale == 2


def test_the_client_retries_503_until_the_server_has_room() -> None:
    gate = threading.Event()

    def held(model: Any, batch: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        gate.wait(30)  # the one admitted request holds the only slot until the gate opens
        return run_network(model, batch, mask)

    settings = Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False, max_queue=1)
    with LiveServer(settings, run_batch=held) as full:
        holder = threading.Thread(target=httpx.post, args=(full.url + "/v1/upscale",),
                                  kwargs={"content": image_bytes(), "timeout": 30})
        holder.start()
        wait_until(lambda: "sr_inflight_requests 1.0" in httpx.get(full.url + "/metrics").text)
        with Client(full.url, retry=RetryPolicy(attempts=1)) as impatient, pytest.raises(Unavailable) as refused:
            impatient.upscale(image_bytes(), method="bicubic")
        assert refused.value.code == "overloaded" and refused.value.retry_after_s is not None
        threading.Timer(1.5, gate.set).start()  # the slot frees while the client waits
        started = time.monotonic()
        with Client(full.url, retry=RetryPolicy(attempts=10, max_wait_s=0.5)) as patient:
            assert patient.upscale(image_bytes(), method="bicubic").scale == 2
        assert time.monotonic() - started >= 1.0  # it waited, retried, then got through
        holder.join()
        metrics = httpx.get(full.url + "/metrics").text
        refusals = float(re.search(r'sr_rejected_requests_total\{reason="overloaded"\} (\S+)', metrics)[1])
        assert refusals >= 2  # the impatient client's one, and at least one the patient one retried


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SUBPIXEL, *args], capture_output=True, text=True, timeout=300)


def test_the_command_line_upscales_a_folder_past_a_bad_file(server: ServerProcess, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    Image.fromarray(pattern(30, 20)).save(photos / "a.png")
    Image.fromarray(pattern(16, 16, seed=1)).save(photos / "nested" / "b.jpg", quality=95)
    (photos / "broken.png").write_bytes(image_bytes()[:40])
    (photos / "notes.txt").write_text("not an image, not picked up")
    out = tmp_path / "big"

    first = _run("upscale", str(photos), "-o", str(out), "--scale", "2", "--method", "bicubic",
                 "--url", server.url, "--quiet")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "done 2, skipped 0" in first.stdout and "failed 1 (invalid_image x1)" in first.stdout
    assert decode((out / "a.x2.png").read_bytes()).size == (60, 40)
    assert decode((out / "nested" / "b.x2.jpg").read_bytes()).size == (32, 32)
    assert not (out / "broken.x2.png").exists()

    again = _run("upscale", str(photos), "-o", str(out), "--scale", "2", "--method", "bicubic",
                 "--url", server.url, "--quiet")
    assert "done 0, skipped 2" in again.stdout and again.returncode == 1

    (photos / "broken.png").unlink()
    redo = _run("upscale", str(photos), "-o", str(out), "--scale", "2", "--method", "bicubic",
                "--url", server.url, "--overwrite", "--format", "webp", "--quiet")
    assert redo.returncode == 0 and "done 2, skipped 0" in redo.stdout and "failed 0" in redo.stdout
    assert decode((out / "a.x2.webp").read_bytes()).format == "WEBP"


def test_the_command_line_says_when_the_server_is_unreachable(tmp_path: Path) -> None:
    Image.fromarray(pattern(8, 8)).save(tmp_path / "a.png")
    result = _run("upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"),
                  "--url", "http://127.0.0.1:9", "--quiet")
    assert result.returncode == 1
    assert "failed 1 (ConnectError x1)" in result.stdout


def test_the_command_line_prints_the_methods(server: ServerProcess) -> None:
    listing = _run("methods", "--url", server.url)
    assert listing.returncode == 0, listing.stderr
    assert "espcn" in listing.stdout and "bicubic" in listing.stdout and "x3" in listing.stdout


def test_the_command_line_is_installed() -> None:
    assert shutil.which(SUBPIXEL)
