"""``/v1/jobs``: long work as a resource. HTTP only: the upload to a file, the job's JSON, the
result's bytes; the jobs themselves are ``jobs.runner``'s."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from service.api.deps import ApiKey, RuntimeDep
from service.api.openapi import problem_responses, upscale_request_body
from service.api.params import (
    UpscaleParamsDep,
    answer_headers,
    content_type_of,
    is_video,
    save_body,
)
from service.errors import Draining, JobNotFinished, NotFound
from service.jobs.files import JOB_ID
from service.jobs.runner import JobParams, JobRunner
from service.jobs.store import Job

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[ApiKey])


class JobProgress(BaseModel):
    frames_done: int
    frames_total: int = Field(description="from the input's header; 1 for a still image")
    fraction: float = Field(ge=0, le=1)
    eta_s: float | None = Field(description="at the rate so far; null before the first frames")


class JobResult(BaseModel):
    url: str = Field(description="GET it for the output")
    media_type: str
    bytes: int
    method: str = Field(description="what ran (auto resolved)")
    model: str | None = Field(description="name@version of the network, when one ran")
    scale: int
    frames: int
    input: str = Field(description="WxH")
    output: str = Field(description="WxH")


class JobStatus(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    url: str
    created_at: float = Field(description="Unix seconds")
    started_at: float | None
    finished_at: float | None
    expires_at: float | None = Field(description="when the job and its result are deleted (SR_JOB_RETENTION_S)")
    attempts: int = Field(description="starts so far: more than one after an interruption")
    cancel_requested: bool
    progress: JobProgress
    result: JobResult | None = None
    error: dict[str, Any] | None = Field(None, description="the problem (RFC 9457) that failed it")


async def _runner(request: Request) -> JobRunner:
    jobs: JobRunner | None = request.app.state.jobs
    if jobs is None:
        raise NotFound("jobs are off on this server (SR_JOBS=false)")
    return jobs


RunnerDep = Annotated[JobRunner, Depends(_runner)]
JobId = Annotated[str, Path(description="the id POST /v1/jobs answered", max_length=64)]


def _checked(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"no job {job_id!r}: job ids are 32 hexadecimal digits")
    return job_id


def _status(job: Job) -> JobStatus:
    url = f"/v1/jobs/{job.id}"
    total = max(job.frames_total, job.frames_done)
    eta = None
    if job.state == "running" and job.started_at is not None and 0 < job.frames_done < total:
        elapsed = max(0.0, time.time() - job.started_at)
        eta = round(elapsed / job.frames_done * (total - job.frames_done), 1)
    done = total if job.state == "succeeded" else job.frames_done
    result = None
    if job.state == "succeeded" and job.result is not None:
        fields = {k: job.result[k] for k in JobResult.model_fields if k in job.result}
        result = JobResult(url=f"{url}/result", **fields)
    return JobStatus(
        id=job.id, state=job.state, url=url, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, expires_at=job.expires_at, attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        progress=JobProgress(frames_done=done, frames_total=total, fraction=done / total if total else 0.0, eta_s=eta),
        result=result, error=job.error,
    )


def _answer(job: Job, status_code: int, **headers: str) -> JSONResponse:
    if not job.finished:
        headers.setdefault("Retry-After", "1")  # a polling client's pace
    return JSONResponse(_status(job).model_dump(mode="json"), status_code=status_code, headers=headers)


@router.post(
    "/jobs",
    operation_id="create_job",
    status_code=202,
    response_model=JobStatus,
    openapi_extra=upscale_request_body(),
    responses={**problem_responses(400, 408, 413, 415, 422, 503)},
)
async def create_job(request: Request, runtime: RuntimeDep, jobs: RunnerDep, asked: UpscaleParamsDep) -> Response:
    """Queue the upscaling of the body (an image or a video; the same parameters and body types
    as ``POST /v1/upscale``). Answers 202 with the job and its ``Location``; poll that."""
    asked.check(runtime.offered(), runtime.models)  # a 422 before the upload, not after it
    if runtime.lifecycle.draining:
        raise Draining()  # before the upload, too
    settings = runtime.settings
    job_id = jobs.new_id()
    path = jobs.input_path(job_id)
    try:
        size = await save_body(request, path, settings.max_job_upload_bytes, settings.upload_timeout_s,
                               multipart_limit=settings.max_upload_bytes)
        with path.open("rb") as head:
            video = is_video(content_type_of(request), head.read(16))
    except BaseException:
        jobs.files.remove(job_id)
        raise
    job = await jobs.submit(job_id, JobParams(asked, request.headers.get("accept", ""), video), size)
    return _answer(job, 202, Location=f"/v1/jobs/{job.id}")


@router.get("/jobs/{job_id}", operation_id="get_job", response_model=JobStatus,
            responses={**problem_responses(404, 503)})
async def get_job(job_id: JobId, jobs: RunnerDep) -> Response:
    """The job's state, progress (frames done of total, ETA) and, once succeeded, its result."""
    return _answer(await jobs.get(_checked(job_id)), 200)


@router.get(
    "/jobs/{job_id}/result",
    operation_id="get_job_result",
    response_class=FileResponse,
    responses={200: {"description": "the output, as POST /v1/upscale would have answered it",
                     "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
               409: {"description": "the job has not succeeded (queued, running, failed or cancelled)",
                     "content": problem_responses(404)[404]["content"]},
               **problem_responses(404, 503)},
)
async def get_job_result(job_id: JobId, jobs: RunnerDep) -> Response:
    """The output file (byte ranges supported), once the job has succeeded."""
    job = await jobs.get(_checked(job_id))
    if job.state != "succeeded" or job.result is None:
        why = f": {job.error['detail']}" if job.error else ""
        raise JobNotFinished(f"job {job.id} is {job.state}{why}")
    result = job.result
    headers = answer_headers(str(result["method"]), int(result["scale"]), result.get("model"),
                             result.get("auto_note"), int(result.get("frames", 1)))
    path = jobs.result_path(job)
    try:
        # Stat once, here: a DELETE or the sweeper removing it from now on is a 404, not a 500.
        found = path.stat()
    except FileNotFoundError:
        raise NotFound(f"job {job.id}'s result was deleted") from None
    extension = "jpg" if result["format"] == "jpeg" else result["format"]
    return FileResponse(path, media_type=str(result["media_type"]), headers=headers, stat_result=found,
                        filename=f"{job.id}.{extension}", content_disposition_type="inline")


@router.delete(
    "/jobs/{job_id}",
    operation_id="delete_job",
    response_model=JobStatus,
    responses={202: {"description": "running: asked to stop (within a second or so)"},
               204: {"description": "it had finished: deleted with its result"},
               **problem_responses(404, 503)},
)
async def delete_job(job_id: JobId, jobs: RunnerDep) -> Response:
    """Cancel a queued job (200) or a running one (202); delete a finished one and its result (204)."""
    job = await jobs.cancel(_checked(job_id))
    if job is None:
        return Response(status_code=204)
    return _answer(job, 202 if job.state == "running" else 200)
