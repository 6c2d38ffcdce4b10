"""What ``/v1/upscale`` and ``/v1/jobs`` both take: the query parameters, and the body (raw
bytes of an image or video, or multipart/form-data with a file field ``image``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service.config import OUTPUT_FORMATS, SCALES
from service.errors import (
    ClientDisconnected,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from service.imaging.video import VIDEO_MEDIA_TYPES, looks_like_video
from service.serving.upscaler import UpscaleParams

# x-www-form-urlencoded is what `curl --data-binary` sends unless told otherwise.
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")


async def upscale_params(
    request: Request,
    # Enums and bounds are documented here and checked by UpscaleParams.check, whose messages
    # say what came and what was expected ("scale must be one of 2, 3, 4 for espcn, got 5").
    scale: int = Query(2, description="upscaling factor", json_schema_extra={"enum": list(SCALES)}),
    # Its enum is what the loaded store offers, written into the schema by api.openapi.
    method: str = Query(
        "espcn", description="the method (GET /v1/methods lists them); auto chooses per image"
    ),
    format: str | None = Query(
        None, description="output format; default from Accept (q-values), else the input's",
        json_schema_extra={"enum": [*OUTPUT_FORMATS, "jpg"]},
    ),
    quality: int | None = Query(
        None, description="JPEG/WebP quality", json_schema_extra={"minimum": 1, "maximum": 100}
    ),
    align_corners: bool = Query(False, description="bilinear/bicubic corner alignment"),
    max_latency_ms: float | None = Query(None, gt=0, description="auto: latency budget"),
    min_psnr_db: float | None = Query(None, ge=0, description="auto: quality floor (Set14 PSNR)"),
    objective: Literal["quality", "speed"] = Query("quality", description="auto: what to maximise"),
    model: str | None = Query(
        None, description="a model version, name or name@version (GET /v2/models/{name}); it sets "
        "method and scale (any given must agree). Default: the newest of the method at the scale",
        max_length=200,
    ),
) -> UpscaleParams:
    given = request.query_params
    return UpscaleParams(
        scale if "scale" in given else None, method if "method" in given else None, format, quality,
        align_corners, max_latency_ms, min_psnr_db, objective, model,
    )


UpscaleParamsDep = Annotated[UpscaleParams, Depends(upscale_params)]


def content_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_video(content_type: str, head: bytes) -> bool:
    """A video by its media type, or by its first bytes when the type does not say image/*."""
    return content_type in VIDEO_MEDIA_TYPES or (not content_type.startswith("image/") and looks_like_video(head))


def _check_content_type(content_type: str) -> None:
    if content_type.startswith(("image/", "multipart/form-data")) or content_type in _RAW_TYPES \
            or content_type in VIDEO_MEDIA_TYPES:
        return
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not accepted; send image/*, video/mp4, video/webm, "
        "video/quicktime, application/octet-stream or multipart/form-data with a field 'image'"
    )


async def _chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives, cut off at ``limit`` bytes (413)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # Answer from the header: no need to read a body we are going to refuse.
        raise PayloadTooLarge(f"the upload is {declared} bytes; the limit is {limit}")
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the upload exceeds the limit of {limit} bytes")
            yield chunk
    except ClientDisconnect:
        # The client's doing, not a fault of ours: a 499 in the metrics and one log line.
        raise ClientDisconnected(f"the client went away after {size} bytes of the body") from None


async def _image_field(request: Request, body: AsyncIterator[bytes]) -> UploadFile:
    """The multipart body's file field ``image`` (Starlette spools a large one to disk)."""
    try:
        form = await MultiPartParser(request.headers, body, max_files=1, max_fields=16).parse()
    except MultiPartException as exc:
        raise InvalidImage(f"the multipart body cannot be parsed: {exc.message}") from None
    field = form.get("image")
    if isinstance(field, UploadFile):
        return field
    await form.close()
    if field is None:
        raise InvalidParameter("the multipart body has no file field named 'image'")
    raise InvalidParameter("the multipart field 'image' must be a file, not text")


def _upload_timeout(timeout_s: float, *, stalled: bool = False) -> RequestTimeout:
    if stalled:
        return RequestTimeout(f"the body stopped arriving for {timeout_s} s (SR_UPLOAD_TIMEOUT_S)")
    return RequestTimeout(f"the body did not arrive within {timeout_s} s (SR_UPLOAD_TIMEOUT_S)")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The image or video in memory: a request's. The body arrives before admission, under its
    own timeout: a client trickling it holds a connection, never an admission slot."""
    content_type = content_type_of(request)
    _check_content_type(content_type)
    try:
        async with asyncio.timeout(timeout_s):
            data = b"".join([chunk async for chunk in _chunks(request, limit)])
            if not content_type.startswith("multipart/form-data"):
                return data
            field = await _image_field(request, _single(data))
            try:
                return await field.read()
            finally:
                await field.close()
    except TimeoutError:
        raise _upload_timeout(timeout_s) from None


async def save_body(request: Request, path: Path, limit: int, idle_timeout_s: float, *, multipart_limit: int) -> int:
    """The image or video streamed to ``path`` (a job's input, never held whole); its size.
    A large upload may take long: the timeout is for the body to stall, not to finish.
    Multipart bodies are held to ``multipart_limit``: the parser spools the part to the
    temporary directory first, which is not the jobs volume (send a large video raw)."""
    content_type = content_type_of(request)
    _check_content_type(content_type)
    multipart = content_type.startswith("multipart/form-data")
    chunks = _stalling_after(_chunks(request, min(limit, multipart_limit) if multipart else limit), idle_timeout_s)
    if multipart:
        field = await _image_field(request, chunks)
        try:
            with path.open("wb") as out:
                while block := await field.read(1 << 20):
                    await asyncio.to_thread(out.write, block)
        finally:
            await field.close()
    else:
        with path.open("wb") as out:
            pending: list[bytes] = []
            async for chunk in chunks:
                pending.append(chunk)
                if sum(map(len, pending)) >= 1 << 20:  # write in MiB, off the event loop
                    await asyncio.to_thread(out.write, b"".join(pending))
                    pending = []
            await asyncio.to_thread(out.write, b"".join(pending))
    return path.stat().st_size


async def _stalling_after(chunks: AsyncIterator[bytes], timeout_s: float) -> AsyncIterator[bytes]:
    iterator = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _upload_timeout(timeout_s, stalled=True) from None
        yield chunk


def answer_headers(method: str, scale: int, model: str | None, auto_note: str | None, frames: int) -> dict[str, str]:
    """The ``X-SR-*`` headers of an upscaled answer, a request's or a job's result alike."""
    headers = {"X-SR-Method": method, "X-SR-Scale": str(scale)}
    if auto_note:
        headers["X-SR-Auto"] = auto_note
    if model:
        headers["X-SR-Model"] = model
    if frames > 1:
        headers["X-SR-Frames"] = str(frames)
    return headers


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data
