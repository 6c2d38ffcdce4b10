"""A Python client for the subpixel API, on httpx, sync and async.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as sr:
        sr.upscale("photo.png", scale=3, method="auto").save("photo-x3.png")
        job = sr.wait_job(sr.submit_job("clip.mp4", scale=2), on_progress=print)  # a job: polled
        sr.job_result(job, "clip.x2.mp4")                                          # streamed to a file

Errors come back as typed exceptions built from the problem+json body (``code``, ``status``,
``title``, ``detail``). A 503 (overloaded, draining) is retried a bounded number of times,
waiting what ``Retry-After`` says (capped); nothing else is retried, because every other error
would answer the same again. A job (``POST /v1/jobs``: videos, or anything long) is
uploaded from a file as a stream and its result streamed to a file, so a video is never held
whole; ``wait_job`` polls at the pace the server's ``Retry-After`` sets and raises the job's
own problem when it failed. The client imports nothing of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, overload

import httpx

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_URL = "http://127.0.0.1:8000"
_SNIFF = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}
# A video's type is told by its suffix (the server refuses other containers anyway); its first
# bytes say it when there is no suffix to go by.
VIDEO_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
              **{media: suffix for suffix, media in VIDEO_TYPES.items()}}
_CHUNK = 1 << 20  # uploads and downloads of jobs go by MiB


class APIError(Exception):
    """An error answer of the API, from its problem+json body."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class InvalidImage(APIError):
    """400: the body is not a decodable image."""


class Unauthorized(APIError):
    """401: a valid API key is required."""


class TooLarge(APIError):
    """413: the upload or the image is over the server's limits."""


class UnsupportedMediaType(APIError):
    """415: a content type or image format the server does not take."""


class NotFound(APIError):
    """404: no such resource (a job may have expired: the server keeps them a while)."""


class JobNotFinished(APIError):
    """409: the job has no result (yet): it is queued, running, failed or cancelled."""


class JobCancelled(APIError):
    """The job waited on was cancelled (a DELETE, from here or elsewhere): it has no result.
    A 409, as asking for its result would answer."""

    def __init__(self, job_id: str) -> None:
        super().__init__(409, "job_cancelled", "The job was cancelled", f"job {job_id} was cancelled")


class InvalidParameter(APIError):
    """422: a parameter is invalid (the detail says which and what was expected)."""


class Unavailable(APIError):
    """503: overloaded or draining, still so after the retries."""


class DeadlineExceeded(APIError):
    """504: the request could not finish before the server's deadline."""


class ServerError(APIError):
    """5xx: a fault of the server."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidImage, 401: Unauthorized, 404: NotFound, 409: JobNotFinished, 413: TooLarge,
    415: UnsupportedMediaType, 422: InvalidParameter, 503: Unavailable, 504: DeadlineExceeded,
}


def _error_class(status: int) -> type[APIError]:
    return _BY_STATUS.get(status, ServerError if status >= 500 else APIError)


def _retry_after(response: httpx.Response) -> float | None:
    retry = response.headers.get("retry-after")
    return float(retry) if retry and retry.isdigit() else None


def error_from(response: httpx.Response) -> APIError:
    """The typed exception for an error response (problem+json, or whatever a proxy sent)."""
    try:
        body = response.json()
        code, title, detail = str(body["code"]), str(body["title"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code, title, detail = "http_error", response.reason_phrase, response.text[:500]
    return _error_class(response.status_code)(response.status_code, code, title, detail, _retry_after(response))


def problem_error(problem: Mapping[str, Any]) -> APIError:
    """The typed exception for a problem the server stored (a failed job's ``error``)."""
    status = int(problem.get("status") or 500)
    return _error_class(status)(status, str(problem.get("code", "job_failed")), str(problem.get("title", "")),
                                str(problem.get("detail", "")))


@dataclass(frozen=True)
class Upscaled:
    """An upscaled image as the server sent it."""

    content: bytes
    media_type: str
    method: str
    scale: int
    model: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    frames: int = 1  # of a video

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.media_type, ".bin")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.content)
        return path

    def image(self) -> Image.Image:
        from PIL import Image

        return Image.open(io.BytesIO(self.content))


ImageSource = str | Path | bytes | Any  # a path, encoded bytes, or a PIL image


def image_body(image: ImageSource) -> tuple[bytes, str]:
    """Bytes and content type of what ``upscale`` was given."""
    if isinstance(image, str | Path):
        data = Path(image).read_bytes()
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
    elif hasattr(image, "save"):  # a PIL image: sent as PNG, which keeps every pixel
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise TypeError(f"upscale takes a path, bytes or a PIL image, not {type(image).__name__}")
    return data, sniff(data[:16])


def sniff(head: bytes) -> str:
    """The media type the first bytes say: PNG, JPEG, WebP; an ISO BMFF video (MP4, or
    QuickTime by its brand) or Matroska's (WebM); else octet-stream (the server sniffs too)."""
    kind = next((media for magic, media in _SNIFF.items() if head.startswith(magic)), None)
    if kind is not None:
        return kind
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return "application/octet-stream"


JobSource = str | Path | bytes | IO[bytes] | Any  # a path, bytes, an open binary file, or a PIL image


class _Upload:
    """A job's body: a path or a file is streamed from where it starts, never read whole, and
    is sent again from there when a 503 is retried; a file that cannot seek is sent once."""

    def __init__(self, source: JobSource) -> None:
        self._data: bytes | None = None
        self._path: Path | None = None
        self._file: IO[bytes] | None = None
        self._start = 0
        self.replayable = True
        size: int | None
        suffix = ""
        if isinstance(source, str | Path):
            self._path = Path(source)
            with self._path.open("rb") as file:
                head = file.read(16)
            size, suffix = self._path.stat().st_size, self._path.suffix
        elif isinstance(source, bytes | bytearray | memoryview):
            self._data = bytes(source)
            head, size = self._data[:16], len(self._data)
        elif hasattr(source, "read"):
            self._file = source
            suffix = Path(str(getattr(source, "name", ""))).suffix
            if getattr(source, "seekable", lambda: False)():
                self._start = source.tell()
                head = source.read(16)
                size = source.seek(0, os.SEEK_END) - self._start
                source.seek(self._start)
            else:
                head, size, self.replayable = b"", None, False
        elif hasattr(source, "save"):
            self._data, _ = image_body(source)
            head, size = self._data[:16], len(self._data)
        else:
            raise TypeError(f"submit_job takes a path, bytes, a binary file or a PIL image, not {type(source).__name__}")
        self.headers = {"Content-Type": VIDEO_TYPES.get(suffix.lower()) or sniff(head)}
        if size is not None:  # so that the server can refuse a body over its limit before it comes
            self.headers["Content-Length"] = str(size)

    def _rewound(self) -> IO[bytes] | None:
        if self._file is not None and self.replayable:
            self._file.seek(self._start)
        return self._file

    @contextlib.contextmanager
    def opened(self) -> Iterator[bytes | Iterator[bytes]]:
        if self._data is not None:
            yield self._data
        elif self._path is not None:
            with self._path.open("rb") as file:
                yield _chunks(file)
        else:
            yield _chunks(self._rewound())

    @contextlib.asynccontextmanager
    async def aopened(self) -> AsyncIterator[bytes | AsyncIterator[bytes]]:
        if self._data is not None:
            yield self._data
        elif self._path is not None:
            with self._path.open("rb") as file:
                yield _achunks(file)
        else:
            yield _achunks(self._rewound())


def _chunks(file: IO[bytes] | None) -> Iterator[bytes]:
    while file is not None and (block := file.read(_CHUNK)):
        yield block


async def _achunks(file: IO[bytes] | None) -> AsyncIterator[bytes]:
    while file is not None and (block := await asyncio.to_thread(file.read, _CHUNK)):
        yield block


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[IO[bytes]]:
    """``path`` whole or not at all: a download cut short leaves no file that looks finished
    (the command line skips outputs that exist)."""
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as out:
            yield out
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _params(scale: int | None, method: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The query of an upscale or a job: what is None is left to the server."""
    params: dict[str, Any] = {}
    for name, value in {"scale": scale, "method": method, **options}.items():
        if value is not None:
            params[name] = str(value).lower() if isinstance(value, bool) else value
    return params


def _upscale_request(image: ImageSource, scale: int, method: str, **options: Any) -> dict[str, Any]:
    """The keyword arguments of ``httpx`` ``request`` for an upscale (sync and async alike)."""
    data, kind = image_body(image)
    return {"params": _params(scale, method, options), "content": data, "headers": {"Content-Type": kind}}


def _choose_body(width: int, height: int, scale: int, constraints: dict[str, Any]) -> dict[str, Any]:
    return {"width": width, "height": height, "scale": scale,
            **{k: v for k, v in constraints.items() if v is not None}}


def _upscaled(response: httpx.Response) -> Upscaled:
    timings = {}
    for part in response.headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return Upscaled(
        content=response.content,
        media_type=response.headers.get("content-type", "").split(";")[0],
        method=response.headers.get("x-sr-method", ""),
        scale=int(response.headers.get("x-sr-scale", "0")),
        model=response.headers.get("x-sr-model"),
        timings_ms=timings,
        frames=int(response.headers.get("x-sr-frames", "1")),
    )


JobState = str  # queued, running, succeeded, failed, cancelled
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Job:
    """A job as its last status said (``GET /v1/jobs/{id}``); ask again for a fresher one."""

    id: str
    state: JobState
    url: str  # the server's path of the job
    frames_done: int = 0
    frames_total: int = 0  # from the input's header; 1 for an image
    fraction: float = 0.0
    eta_s: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    created_at: float | None = None  # Unix seconds
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None  # when the server deletes the job and its result
    result: dict[str, Any] | None = None  # url, media_type, bytes, method, model, scale, frames, input, output
    error: dict[str, Any] | None = None  # the problem that failed it
    poll_after_s: float | None = None  # the server's Retry-After: its polling pace, while unfinished

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def _job(response: httpx.Response) -> Job:
    body = response.json()
    progress = body.get("progress") or {}
    return Job(
        id=body["id"], state=body["state"], url=body["url"], frames_done=int(progress.get("frames_done", 0)),
        frames_total=int(progress.get("frames_total", 0)), fraction=float(progress.get("fraction", 0.0)),
        eta_s=progress.get("eta_s"), attempts=int(body.get("attempts", 0)),
        cancel_requested=bool(body.get("cancel_requested")), created_at=body.get("created_at"),
        started_at=body.get("started_at"), finished_at=body.get("finished_at"), expires_at=body.get("expires_at"),
        result=body.get("result"), error=body.get("error"), poll_after_s=_retry_after(response),
    )


def _settled(job: Job) -> Job:
    """A finished job that succeeded; else the error that says why it has no result."""
    if job.state == "failed":
        raise problem_error(job.error or {"status": 500, "code": "job_failed", "detail": f"job {job.id} failed"})
    if job.state == "cancelled":
        raise JobCancelled(job.id)
    return job


def _pause(job: Job, poll_s: float | None, deadline: float | None, cap_s: float) -> float:
    """Seconds until the next poll: ``poll_s``, else the server's pace; TimeoutError past the deadline."""
    pause = poll_s if poll_s is not None else min(cap_s, job.poll_after_s or 1.0)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {job.id} is still {job.state} ({job.frames_done}/{job.frames_total} frames)")
        pause = min(pause, left)
    return pause


ProgressCallback = Callable[[Job], object]


@dataclass(frozen=True)
class RetryPolicy:
    """503 retries: at most ``attempts`` tries in all, each wait ``Retry-After`` (or
    ``default_wait_s``) but never more than ``max_wait_s``."""

    attempts: int = 4
    default_wait_s: float = 1.0
    max_wait_s: float = 30.0

    def wait_or_raise(self, response: httpx.Response, attempt: int) -> float:
        """Seconds to wait before retrying this failed ``attempt`` (1-based), or its typed error
        when it must not be retried (not a 503, or the last attempt)."""
        error = error_from(response)
        if response.status_code != 503 or attempt >= self.attempts:
            raise error
        return min(self.max_wait_s, error.retry_after_s or self.default_wait_s)


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, retry: RetryPolicy) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.retry = retry

    def _job_url(self, job: Job | str) -> str:
        """A job's path from the job, its id, its path or its URL on this server (never another
        server's: the API key goes with every request)."""
        if isinstance(job, Job):
            return job.url
        if job.startswith(self.base_url + "/"):
            job = job[len(self.base_url):]
        if job.startswith("/"):
            return job
        if "/" in job or ":" in job:
            raise ValueError(f"{job!r} is neither a job id nor a job's URL on {self.base_url}")
        return f"/v1/jobs/{job}"

    def _result_url(self, job: Job | str) -> str:
        if isinstance(job, Job) and job.result and job.result.get("url"):
            return str(job.result["url"])
        return self._job_url(job) + "/result"

    def _policy(self, upload: _Upload | None) -> RetryPolicy:
        return self.retry if upload is None or upload.replayable else dataclasses.replace(self.retry, attempts=1)


class Client(_Base):
    """Synchronous client; a context manager (one connection pool)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s, retry or RetryPolicy())
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, *, upload: _Upload | None = None, stream: bool = False,
              **kwargs: Any) -> httpx.Response:
        """The answer, after 503 retries; ``stream``: its body not read yet (close it)."""
        policy = self._policy(upload)
        for attempt in range(1, policy.attempts + 1):
            with upload.opened() if upload is not None else contextlib.nullcontext(None) as content:
                if content is not None:
                    kwargs["content"] = content
                response = self._http.send(self._http.build_request(method, url, **kwargs), stream=stream)
            if response.is_success:
                return response
            response.read()
            response.close()
            time.sleep(policy.wait_or_raise(response, attempt))
        raise AssertionError("unreachable")

    def upscale(self, image: ImageSource, scale: int = 2, method: str = "espcn", *, format: str | None = None,
                quality: int | None = None, max_latency_ms: float | None = None, min_psnr_db: float | None = None,
                objective: str | None = None, align_corners: bool | None = None) -> Upscaled:
        request = _upscale_request(image, scale, method, format=format, quality=quality,
                                   max_latency_ms=max_latency_ms, min_psnr_db=min_psnr_db,
                                   objective=objective, align_corners=align_corners)
        return _upscaled(self._send("POST", "/v1/upscale", **request))

    def submit_job(self, source: JobSource, scale: int | None = None, method: str | None = None, *,
                   format: str | None = None, quality: int | None = None, model: str | None = None,
                   max_latency_ms: float | None = None, min_psnr_db: float | None = None,
                   objective: str | None = None, align_corners: bool | None = None) -> Job:
        """Queue an image or a video (``POST /v1/jobs``, streamed from a path or a file); what is
        None is the server's default (x2 espcn, or what ``model`` names)."""
        params = _params(scale, method, {"format": format, "quality": quality, "model": model,
                                         "max_latency_ms": max_latency_ms, "min_psnr_db": min_psnr_db,
                                         "objective": objective, "align_corners": align_corners})
        upload = _Upload(source)
        return _job(self._send("POST", "/v1/jobs", upload=upload, params=params, headers=upload.headers))

    def job(self, job: Job | str) -> Job:
        """The job's status now, from the job, its id or its URL."""
        return _job(self._send("GET", self._job_url(job)))

    def wait_job(self, job: Job | str, poll_s: float | None = None, on_progress: ProgressCallback | None = None,
                 timeout_s: float | None = None) -> Job:
        """Poll until the job finishes (at the server's ``Retry-After`` pace unless ``poll_s``),
        calling ``on_progress(job)`` with each status; the succeeded job, or the failed job's own
        problem raised (``APIError``), or ``JobCancelled``; ``TimeoutError`` after ``timeout_s``
        (the job goes on: cancel it if it is not wanted)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        current = job if isinstance(job, Job) else self.job(job)
        while True:
            if on_progress is not None:
                on_progress(current)
            if current.finished:
                return _settled(current)
            time.sleep(_pause(current, poll_s, deadline, self.retry.max_wait_s))
            current = self.job(current)

    @overload
    def job_result(self, job: Job | str) -> Upscaled: ...

    @overload
    def job_result(self, job: Job | str, path: str | Path) -> Path: ...

    def job_result(self, job: Job | str, path: str | Path | None = None) -> Upscaled | Path:
        """A succeeded job's output: streamed to ``path`` (whole or not at all), or in memory."""
        if path is None:
            return _upscaled(self._send("GET", self._result_url(job)))
        path = Path(path)
        response = self._send("GET", self._result_url(job), stream=True)
        try:
            with _writing(path) as out:
                for block in response.iter_bytes(_CHUNK):
                    out.write(block)
        finally:
            response.close()
        return path

    def cancel_job(self, job: Job | str) -> Job | None:
        """``DELETE``: a queued job is cancelled, a running one asked to stop (it does within a
        second or so: ``cancel_requested``), a finished one deleted with its result (None)."""
        response = self._send("DELETE", self._job_url(job))
        return None if response.status_code == 204 else _job(response)

    def choose(self, width: int, height: int, scale: int, **constraints: Any) -> dict[str, Any]:
        """``constraints``: max_latency_ms, min_psnr_db, objective, format."""
        body = _choose_body(width, height, scale, constraints)
        result: dict[str, Any] = self._send("POST", "/v1/methods/choose", json=body).json()
        return result

    def methods(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send("GET", "/v1/methods").json()
        return result

    def models(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send("GET", "/v1/models").json()
        return result


class AsyncClient(_Base):
    """The same, for asyncio; ``async with AsyncClient(...) as sr: await sr.upscale(...)``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, max_connections: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s, retry or RetryPolicy())
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                       limits=limits, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, url: str, *, upload: _Upload | None = None, stream: bool = False,
                    **kwargs: Any) -> httpx.Response:
        policy = self._policy(upload)
        for attempt in range(1, policy.attempts + 1):
            async with upload.aopened() if upload is not None else contextlib.nullcontext(None) as content:
                if content is not None:
                    kwargs["content"] = content
                response = await self._http.send(self._http.build_request(method, url, **kwargs), stream=stream)
            if response.is_success:
                return response
            await response.aread()
            await response.aclose()
            await asyncio.sleep(policy.wait_or_raise(response, attempt))
        raise AssertionError("unreachable")

    async def upscale(self, image: ImageSource, scale: int = 2, method: str = "espcn", *,
                      format: str | None = None, quality: int | None = None, max_latency_ms: float | None = None,
                      min_psnr_db: float | None = None, objective: str | None = None,
                      align_corners: bool | None = None) -> Upscaled:
        request = _upscale_request(image, scale, method, format=format, quality=quality,
                                   max_latency_ms=max_latency_ms, min_psnr_db=min_psnr_db,
                                   objective=objective, align_corners=align_corners)
        return _upscaled(await self._send("POST", "/v1/upscale", **request))

    async def submit_job(self, source: JobSource, scale: int | None = None, method: str | None = None, *,
                         format: str | None = None, quality: int | None = None, model: str | None = None,
                         max_latency_ms: float | None = None, min_psnr_db: float | None = None,
                         objective: str | None = None, align_corners: bool | None = None) -> Job:
        params = _params(scale, method, {"format": format, "quality": quality, "model": model,
                                         "max_latency_ms": max_latency_ms, "min_psnr_db": min_psnr_db,
                                         "objective": objective, "align_corners": align_corners})
        upload = _Upload(source)
        return _job(await self._send("POST", "/v1/jobs", upload=upload, params=params, headers=upload.headers))

    async def job(self, job: Job | str) -> Job:
        return _job(await self._send("GET", self._job_url(job)))

    async def wait_job(self, job: Job | str, poll_s: float | None = None,
                       on_progress: Callable[[Job], object | Awaitable[object]] | None = None,
                       timeout_s: float | None = None) -> Job:
        """As ``Client.wait_job``; ``on_progress`` may be a coroutine function."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        current = job if isinstance(job, Job) else await self.job(job)
        while True:
            if on_progress is not None and asyncio.iscoroutine(called := on_progress(current)):
                await called
            if current.finished:
                return _settled(current)
            await asyncio.sleep(_pause(current, poll_s, deadline, self.retry.max_wait_s))
            current = await self.job(current)

    @overload
    async def job_result(self, job: Job | str) -> Upscaled: ...

    @overload
    async def job_result(self, job: Job | str, path: str | Path) -> Path: ...

    async def job_result(self, job: Job | str, path: str | Path | None = None) -> Upscaled | Path:
        if path is None:
            return _upscaled(await self._send("GET", self._result_url(job)))
        path = Path(path)
        response = await self._send("GET", self._result_url(job), stream=True)
        try:
            with _writing(path) as out:
                async for block in response.aiter_bytes(_CHUNK):
                    out.write(block)  # a MiB to a local file: short enough to block the loop for
        finally:
            await response.aclose()
        return path

    async def cancel_job(self, job: Job | str) -> Job | None:
        response = await self._send("DELETE", self._job_url(job))
        return None if response.status_code == 204 else _job(response)

    async def choose(self, width: int, height: int, scale: int, **constraints: Any) -> dict[str, Any]:
        body = _choose_body(width, height, scale, constraints)
        result: dict[str, Any] = (await self._send("POST", "/v1/methods/choose", json=body)).json()
        return result

    async def methods(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._send("GET", "/v1/methods")).json()
        return result

    async def models(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._send("GET", "/v1/models")).json()
        return result
