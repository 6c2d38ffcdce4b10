"""``/v1/jobs``: long work as a resource that outlives the request, and the server's restarts."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.imaging.synthetic import synthetic_video
from service.jobs.files import JobFiles
from service.jobs.store import SqliteJobStore
from service.models.inference import run_network

from .helpers import ServerProcess, assert_problem, image_bytes, post, wait_until


def submit(client: TestClient | httpx.Client, data: bytes, content_type: str, **params: object) -> httpx.Response:
    return client.post("/v1/jobs", params=params, content=data, headers={"content-type": content_type})


def finished(client: TestClient | httpx.Client, location: str, timeout_s: float = 60.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(client.get(location).json())
        return seen["state"] not in ("queued", "running")

    wait_until(done, timeout_s=timeout_s, interval_s=0.05)
    return seen


def slow_network(seconds: float) -> Callable[..., torch.Tensor]:
    def run(model: Any, canvas: torch.Tensor) -> torch.Tensor:
        time.sleep(seconds)
        return run_network(model, canvas)

    return run


def video_facts(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"size": (stream.codec_context.width, stream.codec_context.height), "frames": frames,
                "audio": [a.codec_context.name for a in container.streams.audio]}


def test_an_image_job_answers_202_and_its_result_is_what_the_request_would_answer(make_client: Any) -> None:
    client = make_client()
    source = image_bytes(size=(40, 30))
    response = submit(client, source, "image/png", scale=3, method="espcn")
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location == f"/v1/jobs/{response.json()['id']}" and response.json()["state"] in ("queued", "running")
    job = finished(client, location)
    assert job["state"] == "succeeded" and job["attempts"] == 1
    assert job["progress"] == {"frames_done": 1, "frames_total": 1, "fraction": 1.0, "eta_s": None}
    assert job["result"]["url"] == f"{location}/result" and job["result"]["output"] == "120x90"
    result = client.get(job["result"]["url"])
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert result.headers["X-SR-Model"].startswith("espcn-x3@") and len(result.content) == job["result"]["bytes"]
    direct = post(client, source, "image/png", scale=3, method="espcn")
    got, expected = (np.asarray(Image.open(io.BytesIO(r.content)), dtype=int) for r in (result, direct))
    # Other batches, same network: equal to within rounding.
    assert got.shape == expected.shape == (90, 120, 3) and np.abs(got - expected).max() <= 1


def test_a_video_job_reports_its_progress_and_keeps_frames_and_audio(make_client: Any) -> None:
    client = make_client(run_batch=slow_network(0.01), video_chunk_frames=4)
    source = synthetic_video("mp4", frames=24, size=(64, 48))
    response = submit(client, source, "video/mp4", scale=2)
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    progress: list[dict[str, Any]] = []

    def done() -> bool:
        job = client.get(location).json()
        progress.append(job["progress"])
        return job["state"] == "succeeded"

    wait_until(done, timeout_s=60, interval_s=0.02)
    done_counts = [p["frames_done"] for p in progress]
    assert done_counts == sorted(done_counts) and done_counts[-1] == 24
    assert any(0 < n < 24 for n in done_counts), "progress was only ever 0 or all"
    assert all(p["frames_total"] == 24 for p in progress)
    assert any(p["eta_s"] is not None for p in progress)
    result = client.get(f"{location}/result")
    assert result.headers["content-type"] == "video/mp4" and result.headers["X-SR-Frames"] == "24"
    assert video_facts(result.content) == {"size": (128, 96), "frames": 24, "audio": ["aac"]}


def test_bad_jobs_are_refused_at_submission_with_the_requests_problems(make_client: Any, tmp_path: Path) -> None:
    client = make_client(jobs_dir=tmp_path, max_video_duration_s=0.5, max_job_video_duration_s=1.0,
                         max_upload_bytes=20_000, max_job_upload_bytes=400_000)
    assert_problem(submit(client, image_bytes(), "image/png", scale=5), 422, "invalid_parameter")
    assert_problem(submit(client, b"{}", "application/json"), 415, "unsupported_media_type")
    video = synthetic_video("mp4", frames=24, audio=False)  # 2 s: over the job's limit of 1 s
    too_long = submit(client, video, "video/mp4", scale=2)
    assert_problem(too_long, 413, "video_too_large")
    assert "SR_MAX_VIDEO_DURATION_S" in too_long.json()["detail"]
    assert_problem(submit(client, video[: len(video) // 3], "video/mp4", scale=2), 400, "invalid_image")
    # An image format for a video is a mistake to say, not to ignore: the video keeps its container.
    assert_problem(submit(client, video, "video/mp4", scale=2, format="png"), 422, "invalid_parameter")
    big_image = image_bytes(size=(200, 200))
    assert len(big_image) > 20_000
    assert_problem(submit(client, big_image, "image/png", scale=2), 413, "payload_too_large")
    assert_problem(submit(client, bytes(500_000), "video/mp4"), 413, "payload_too_large")
    # A GIF with a huge logical screen: refused from its header.
    bomb = bytearray(image_bytes(fmt="GIF"))
    bomb[6:10] = (60000).to_bytes(2, "little") * 2
    assert submit(client, bytes(bomb), "image/gif", scale=2).status_code in (400, 413)
    # Nothing was queued and nothing was left on disk; the server still works.
    assert JobFiles(tmp_path).folders() == set()
    assert SqliteJobStore(tmp_path / "jobs.sqlite3").counts()["queued"] == 0
    # A job under the job's duration limit is accepted although a request could not take it.
    short = synthetic_video("mp4", frames=9, audio=False)
    assert_problem(post(client, short, "video/mp4", scale=2), 413, "video_too_large")
    assert finished(client, submit(client, short, "video/mp4", scale=2).headers["location"])["state"] == "succeeded"


def test_a_job_the_network_fails_on_is_failed_with_its_problem_and_no_result(make_client: Any) -> None:
    def broken(model: Any, canvas: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the device fell over")

    client = make_client(run_batch=broken)
    job = finished(client, submit(client, image_bytes(), "image/png", scale=2).headers["location"])
    assert job["state"] == "failed" and job["error"]["code"] == "inference_failed"
    assert job["result"] is None
    assert_problem(client.get(f"{job['url']}/result"), 409, "job_not_finished")
    assert post(client, image_bytes(), "image/png", scale=2, method="bicubic").status_code == 200


def test_delete_cancels_queued_and_running_jobs_and_deletes_finished_ones(make_client: Any, tmp_path: Path) -> None:
    client = make_client(run_batch=slow_network(0.2), jobs_dir=tmp_path, job_workers=1, video_chunk_frames=2)
    video = synthetic_video("mp4", frames=24, audio=False)
    running = submit(client, video, "video/mp4", scale=2).headers["location"]
    queued = submit(client, video, "video/mp4", scale=2).headers["location"]
    wait_until(lambda: client.get(running).json()["progress"]["frames_done"] > 0, timeout_s=30)
    assert client.get(queued).json()["state"] == "queued"

    cancelled = client.delete(queued)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    stopping = client.delete(running)
    assert stopping.status_code == 202 and stopping.json()["cancel_requested"] is True
    job = finished(client, running, timeout_s=10)
    assert job["state"] == "cancelled" and job["progress"]["frames_done"] < 24
    assert_problem(client.get(f"{running}/result"), 409, "job_not_finished")
    assert JobFiles(tmp_path).folders() == set()  # inputs and partial results gone

    assert client.delete(running).status_code == 204
    assert_problem(client.get(running), 404, "not_found")
    assert_problem(client.get("/v1/jobs/../../etc/passwd"), 404, "not_found")
    assert_problem(client.get("/v1/jobs/not-a-job"), 404, "not_found")


def test_a_finished_result_survives_a_restart(make_client: Any, tmp_path: Path) -> None:
    first = make_client(jobs_dir=tmp_path)
    job = finished(first, submit(first, image_bytes(), "image/png", scale=2).headers["location"])
    before = first.get(job["result"]["url"]).content
    first.__exit__(None, None, None)
    second = make_client(jobs_dir=tmp_path)
    assert second.get(job["url"]).json()["state"] == "succeeded"
    assert second.get(job["result"]["url"]).content == before


def test_a_clean_stop_hands_a_running_job_back_and_the_next_start_runs_it(make_client: Any, tmp_path: Path) -> None:
    slow = make_client(run_batch=slow_network(0.2), jobs_dir=tmp_path, video_chunk_frames=2)
    location = submit(slow, synthetic_video("mp4", frames=24, audio=False), "video/mp4", scale=2).headers["location"]
    wait_until(lambda: slow.get(location).json()["progress"]["frames_done"] > 0, timeout_s=30)
    slow.__exit__(None, None, None)
    row = SqliteJobStore(tmp_path / "jobs.sqlite3").get(location.rsplit("/", 1)[1])
    assert row is not None and row.state == "queued" and row.attempts == 0 and row.owner is None

    fast = make_client(jobs_dir=tmp_path)
    job = finished(fast, location)
    assert job["state"] == "succeeded" and job["attempts"] == 1


def test_a_job_whose_server_was_killed_runs_again_after_its_lease(tmp_path: Path) -> None:
    env = {"SR_JOBS_DIR": str(tmp_path / "jobs"), "SR_JOB_LEASE_S": "2", "SR_VIDEO_CHUNK_FRAMES": "2",
           "SR_WARMUP": "false"}
    video = synthetic_video("mp4", frames=120, size=(160, 120), audio=False)
    with ServerProcess(tmp_path / "first.log", **env) as server, httpx.Client(base_url=server.url) as http:
        location = submit(http, video, "video/mp4", scale=4).headers["location"]
        wait_until(lambda: http.get(location).json()["progress"]["frames_done"] > 0, timeout_s=60)
        server.proc.kill()  # no clean stop: the job stays "running" under a lease nobody renews
        server.proc.wait()
    with ServerProcess(tmp_path / "second.log", **env) as server, httpx.Client(base_url=server.url) as http:
        job = finished(http, location, timeout_s=120)
        assert job["state"] == "succeeded" and job["attempts"] == 2
        assert video_facts(http.get(job["result"]["url"]).content)["frames"] == 120


def test_finished_jobs_are_deleted_with_their_files_after_the_retention(make_client: Any, tmp_path: Path) -> None:
    client = make_client(jobs_dir=tmp_path, job_retention_s=1.0)
    job = finished(client, submit(client, image_bytes(), "image/png", scale=2).headers["location"])
    assert job["expires_at"] - job["finished_at"] == 1.0
    wait_until(lambda: client.get(job["url"]).status_code == 404, timeout_s=10)
    assert JobFiles(tmp_path).folders() == set()


def test_jobs_are_counted_in_the_metrics(make_client: Any) -> None:
    client = make_client()
    finished(client, submit(client, synthetic_video("mp4", frames=6, audio=False), "video/mp4", scale=2).headers["location"])
    wait_until(lambda: 'sr_jobs{state="succeeded"} 1.0' in client.get("/metrics").text, timeout_s=10)
    text = client.get("/metrics").text
    assert 'sr_jobs_finished_total{state="succeeded"} 1.0' in text
    assert "sr_job_frames_total 6.0" in text
    assert "sr_job_duration_seconds_count 1.0" in text


def test_jobs_can_be_turned_off(make_client: Any) -> None:
    client = make_client(jobs=False)
    assert_problem(submit(client, image_bytes(), "image/png"), 404, "not_found")


def test_sigterm_hands_a_running_job_back_at_once_not_after_the_request_timeout(tmp_path: Path) -> None:
    env = {"SR_JOBS_DIR": str(tmp_path / "jobs"), "SR_VIDEO_CHUNK_FRAMES": "2", "SR_WARMUP": "false",
           "SR_REQUEST_TIMEOUT_S": "30", "SR_DRAIN_DELAY_S": "5"}  # up, not ready, 5 s after the drain
    video = synthetic_video("mp4", frames=120, size=(160, 120), audio=False)
    with ServerProcess(tmp_path / "log", **env) as server, httpx.Client(base_url=server.url) as http:
        location = submit(http, video, "video/mp4", scale=4).headers["location"]
        wait_until(lambda: http.get(location).json()["progress"]["frames_done"] > 0, timeout_s=60)
        store = SqliteJobStore(tmp_path / "jobs" / "jobs.sqlite3")
        job_id = location.rsplit("/", 1)[1]
        signalled = time.monotonic()
        server.proc.terminate()

        def handed_back() -> bool:
            job = store.get(job_id)
            return job is not None and job.state == "queued"

        wait_until(handed_back, timeout_s=10)
        assert time.monotonic() - signalled < 5  # a drain that waited for it would take 30 s
        # Still draining: polls are answered, new jobs refused.
        assert http.get(location).json()["state"] == "queued"
        assert_problem(submit(http, image_bytes(), "image/png"), 503, "draining")


def test_a_server_whose_job_database_is_down_still_upscales(make_client: Any) -> None:
    client = make_client(jobs_database_url="postgresql://sr@127.0.0.1:1/nowhere")
    assert post(client, image_bytes(), "image/png", scale=2).status_code == 200
    refused = submit(client, image_bytes(), "image/png", scale=2)
    assert_problem(refused, 503, "jobs_unavailable")
    assert "Retry-After" in refused.headers
