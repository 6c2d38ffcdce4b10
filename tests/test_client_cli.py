"""The Python client and the ``subpixel`` command line, against a real server process."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import torch
from PIL import Image

from service.client import (
    AsyncClient,
    Client,
    InvalidImage,
    InvalidParameter,
    Job,
    JobCancelled,
    JobNotFinished,
    NotFound,
    RetryPolicy,
    ServerError,
    Unauthorized,
    Unavailable,
)
from service.config import Settings
from service.imaging.synthetic import pattern, synthetic_video
from service.jobs.store import SqliteJobStore
from service.models.inference import run_network

from .helpers import SHIPPED_STORE, LiveServer, ServerProcess, decode, image_bytes, wait_until

SUBPIXEL = str(Path(sys.executable).parent / "subpixel")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("server")
    with ServerProcess(folder / "log", SR_JOBS_DIR=str(folder / "jobs")) as running:
        yield running


def live_settings(jobs_dir: Path, **overrides: Any) -> Settings:
    """A LiveServer's settings, its jobs in a folder of its own."""
    return Settings(model_store=SHIPPED_STORE, device="cpu", warmup=False, calibrate=False, codec_threads=2,
                    jobs_dir=jobs_dir, **overrides)


def slow_network(seconds: float) -> Callable[..., torch.Tensor]:
    def run(model: Any, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(seconds)
        return run_network(model, batch)

    return run


def broken_network(model: Any, batch: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("the device fell over")


def video_facts(path: Path) -> tuple[tuple[int, int], int]:
    """(width, height) and the frames PyAV decodes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return (stream.codec_context.width, stream.codec_context.height), sum(1 for _ in container.decode(stream))


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
    with ServerProcess(tmp_path / "log", SR_API_KEYS="k1", SR_JOBS_DIR=str(tmp_path / "jobs")) as keyed:
        with Client(keyed.url) as anonymous, pytest.raises(Unauthorized):
            anonymous.methods()
        with Client(keyed.url, api_key="k1") as sr:
            assert sr.upscale(image_bytes(), method="bicubic").scale == 2


def test_the_client_retries_503_until_the_server_has_room(tmp_path: Path) -> None:
    gate = threading.Event()

    def held(model: Any, batch: torch.Tensor) -> torch.Tensor:
        gate.wait(30)  # the one admitted request holds the only slot until the gate opens
        return run_network(model, batch)

    settings = live_settings(tmp_path / "jobs", max_queue=1)
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


def test_the_client_runs_a_video_job_follows_its_progress_and_streams_the_result(
        server: ServerProcess, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(synthetic_video("mp4", frames=12, size=(64, 48)))
    seen: list[Job] = []
    with Client(server.url) as sr:
        job = sr.submit_job(clip, scale=2)
        assert job.state in ("queued", "running") and job.frames_total == 12
        assert job.poll_after_s == 1.0 and job.url == f"/v1/jobs/{job.id}"
        done = sr.wait_job(job, on_progress=seen.append, timeout_s=120)  # at the server's pace
        assert done.state == "succeeded" and done.result is not None
        assert (done.result["frames"], done.result["output"], done.result["media_type"]) == (12, "128x96", "video/mp4")
        frames_done = [j.frames_done for j in seen]
        assert frames_done == sorted(frames_done) and frames_done[-1] == 12
        assert {j.frames_total for j in seen} == {12}
        assert sr.job(job.id).state == sr.job(server.url + job.url).state == "succeeded"

        saved = sr.job_result(done, tmp_path / "clip.x2.mp4")
        assert video_facts(saved) == ((128, 96), 12)
        assert not list(tmp_path.glob("*.part"))
        in_memory = sr.job_result(job.id)
        assert (in_memory.media_type, in_memory.frames, in_memory.extension) == ("video/mp4", 12, ".mp4")
        assert in_memory.content == saved.read_bytes() and in_memory.model is not None
        with pytest.raises(ValueError, match="neither a job id"):
            sr.job("http://elsewhere.example/v1/jobs/" + job.id)  # the key is never sent elsewhere


def test_the_async_client_runs_jobs_from_open_files_and_deletes_them(server: ServerProcess, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(synthetic_video("mp4", frames=12, size=(64, 48), audio=False))
    progress: list[int] = []

    async def note(job: Job) -> None:
        progress.append(job.frames_done)

    async def main() -> tuple[Path, tuple[int, int]]:
        async with AsyncClient(server.url) as sr:
            with clip.open("rb") as file:  # streamed; its type from its name
                video = await sr.submit_job(file, scale=2, method="bicubic")
            image = await sr.submit_job(image_bytes(size=(20, 10)), scale=3)
            video, image = await asyncio.gather(sr.wait_job(video, poll_s=0.05, on_progress=note, timeout_s=60),
                                                sr.wait_job(image.id, poll_s=0.05, timeout_s=60))
            saved = await sr.job_result(video, tmp_path / "out.mp4")
            upscaled = await sr.job_result(image)
            assert await sr.cancel_job(image) is None  # finished: deleted with its result
            with pytest.raises(NotFound):
                await sr.job(image)
            return saved, upscaled.image().size

    saved, size = asyncio.run(main())
    assert size == (60, 30) and video_facts(saved) == ((128, 96), 12)
    assert progress == sorted(progress) and progress[-1] == 12


def test_a_retried_job_upload_is_sent_whole_again() -> None:
    """A 503 at submission is retried like any other; a streamed body starts over each time."""
    bodies: list[tuple[str, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append((request.headers["content-type"], request.content))
        if len(bodies) % 2:
            return httpx.Response(503, headers={"Retry-After": "1"}, json={
                "code": "overloaded", "title": "Overloaded", "detail": "retry later"})
        return httpx.Response(202, json={"id": "a" * 32, "state": "queued", "url": "/v1/jobs/" + "a" * 32})

    video = synthetic_video("mp4", frames=2, audio=False)
    patient = RetryPolicy(attempts=2, max_wait_s=0.01)
    with Client(retry=patient, transport=httpx.MockTransport(answer)) as sr:
        source = io.BytesIO(video)
        source.name = "clip.mov"  # type: ignore[attr-defined]  # what open() files have
        source.read(5)  # sent from where the file stands
        assert sr.submit_job(source).state == "queued"

    async def main() -> None:
        async with AsyncClient(retry=patient, transport=httpx.MockTransport(answer)) as sr:
            assert (await sr.submit_job(video)).id == "a" * 32

    asyncio.run(main())
    assert bodies == [("video/quicktime", video[5:])] * 2 + [("video/mp4", video)] * 2


def test_a_failed_job_raises_its_problem_and_the_command_line_counts_it(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    Image.fromarray(pattern(30, 20)).save(media / "a.png")
    (media / "clip.mp4").write_bytes(synthetic_video("mp4", frames=6, audio=False))
    with LiveServer(live_settings(tmp_path / "jobs"), run_batch=broken_network) as live:
        with Client(live.url) as sr:
            job = sr.submit_job(media / "a.png", scale=2)
            with pytest.raises(ServerError) as failed:
                sr.wait_job(job, poll_s=0.05, timeout_s=60)
            assert (failed.value.status, failed.value.code) == (500, "inference_failed")
            with pytest.raises(JobNotFinished) as no_result:
                sr.job_result(job, tmp_path / "x.png")
            assert no_result.value.code == "job_not_finished" and not (tmp_path / "x.png").exists()
        # Both as jobs: the video by its suffix, the image by --job.
        result = _run("upscale", str(media), "-o", str(tmp_path / "out"), "--video", "--job",
                      "--url", live.url, "--quiet")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "done 0, skipped 0" in result.stdout and "failed 2 (inference_failed x2)" in result.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_cancel_stops_jobs_and_ctrl_c_cancels_the_command_lines_job(tmp_path: Path) -> None:
    settings = live_settings(tmp_path / "jobs", job_workers=1, video_chunk_frames=2)
    video = synthetic_video("mp4", frames=24, audio=False)
    with LiveServer(settings, run_batch=slow_network(0.2)) as live, Client(live.url) as sr:
        running, queued = sr.submit_job(video, scale=2), sr.submit_job(video, scale=2)
        wait_until(lambda: sr.job(running).frames_done > 0, timeout_s=30)
        cancelled = sr.cancel_job(queued)
        assert cancelled is not None and cancelled.state == "cancelled"
        stopping = sr.cancel_job(running)
        assert stopping is not None and stopping.state == "running" and stopping.cancel_requested
        for job in (queued, running):
            with pytest.raises(JobCancelled) as why:
                sr.wait_job(job, poll_s=0.05, timeout_s=10)
            assert why.value.code == "job_cancelled"

        clip = tmp_path / "clip.mp4"
        clip.write_bytes(video)
        cli = subprocess.Popen([SUBPIXEL, "upscale", str(clip), "-o", str(tmp_path / "out"), "--url", live.url,
                                "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        store = SqliteJobStore(tmp_path / "jobs" / "jobs.sqlite3")
        wait_until(lambda: bool(store.ids() - {running.id, queued.id}), timeout_s=30)
        (theirs,) = store.ids() - {running.id, queued.id}
        wait_until(lambda: sr.job(theirs).frames_done > 0, timeout_s=30)  # it is waiting on it
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 130, out + err
        assert f"cancelled job {theirs}" in err
        job = sr.job(theirs)
        assert job.cancel_requested and job.state in ("running", "cancelled")
        with pytest.raises(JobCancelled):
            sr.wait_job(job, poll_s=0.05, timeout_s=10)
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


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


def test_the_command_line_upscales_videos_as_jobs_beside_the_images(server: ServerProcess, tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "clips").mkdir(parents=True)
    Image.fromarray(pattern(30, 20)).save(media / "a.png")
    (media / "clips" / "clip.mp4").write_bytes(synthetic_video("mp4", frames=12, size=(64, 48)))
    broken = synthetic_video("mp4", frames=12, audio=False)
    (media / "broken.mp4").write_bytes(broken[: len(broken) // 3])
    out = tmp_path / "big"

    images = _run("upscale", str(media), "-o", str(out), "--url", server.url, "--quiet")
    assert images.returncode == 0 and "done 1, skipped 0" in images.stdout  # a folder's videos need --video
    assert not (out / "clips").exists()

    both = _run("upscale", str(media), "-o", str(out), "--video", "--url", server.url)  # with the bars
    assert both.returncode == 1, both.stdout + both.stderr
    assert "done 1, skipped 1" in both.stdout and "failed 1 (invalid_image x1)" in both.stdout
    assert video_facts(out / "clips" / "clip.x2.mp4") == ((128, 96), 12)
    assert decode((out / "a.x2.png").read_bytes()).size == (60, 40)
    assert "clip.mp4" in both.stderr  # its bar of frames
    assert not list(out.rglob("*.part")) and not (out / "broken.x2.mp4").exists()


def test_the_command_line_follows_and_deletes_a_job_by_its_id(server: ServerProcess, tmp_path: Path) -> None:
    with Client(server.url) as sr:
        job = sr.submit_job(image_bytes(size=(20, 10)), scale=2, method="bicubic")
    fetched = _run("job", "result", job.id, "-o", str(tmp_path / "r.png"), "--wait", "--url", server.url)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert decode((tmp_path / "r.png").read_bytes()).size == (40, 20)
    status = _run("job", "status", job.id, "--url", server.url)
    assert json.loads(status.stdout)["state"] == "succeeded"
    deleted = _run("job", "cancel", job.id, "--url", server.url)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    gone = _run("job", "status", job.id, "--url", server.url)
    assert gone.returncode == 2 and "404 not_found" in gone.stderr


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
