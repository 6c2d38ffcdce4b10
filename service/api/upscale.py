"""``POST /v1/upscale``: bytes in, upscaled bytes out. HTTP only: the query, the body, the
admission slot, the answer's headers; the work is ``serving.upscaler``'s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service.api.access import (
    INVALID_LABELS,
    AccessLoggedRoute,
    record_fault,
    record_refusal,
    record_success,
)
from service.api.deps import ApiKey, RuntimeDep
from service.api.openapi import problem_responses, upscale_ok_response, upscale_request_body
from service.api.request_id import request_id_of
from service.config import OUTPUT_FORMATS, SCALES
from service.errors import (
    ClientDisconnected,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UnsupportedMediaType,
)
from service.imaging.video import VIDEO_MEDIA_TYPES, looks_like_video
from service.rounding import ms
from service.serving import upscaler
from service.serving.runtime import Runtime
from service.serving.upscaler import AutoParams, UpscaleRequest

router = APIRouter(prefix="/v1", tags=["upscale"], route_class=AccessLoggedRoute)

# x-www-form-urlencoded is what `curl --data-binary` sends unless told otherwise.
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # Answer from the header: no need to read a body we are going to refuse.
        raise PayloadTooLarge(f"the upload is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the upload exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client's doing, not a fault of ours: a 499 in the metrics and one log line.
        raise ClientDisconnected(f"the client went away after {size} bytes of the body") from None
    return b"".join(chunks)


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _image_bytes(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("multipart/form-data"):
        data = await _read_body(request, limit)
        try:
            form = await MultiPartParser(request.headers, _single(data), max_files=1, max_fields=16).parse()
        except MultiPartException as exc:
            raise InvalidImage(f"the multipart body cannot be parsed: {exc.message}") from None
        try:
            field = form.get("image")
            if isinstance(field, UploadFile):
                return await field.read()
            if field is None:
                raise InvalidParameter("the multipart body has no file field named 'image'")
            raise InvalidParameter("the multipart field 'image' must be a file, not text")
        finally:
            await form.close()
    if content_type.startswith("image/") or content_type in _RAW_TYPES or content_type in VIDEO_MEDIA_TYPES:
        return await _read_body(request, limit)
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not accepted; send image/*, video/mp4, video/webm, "
        "video/quicktime, application/octet-stream or multipart/form-data with a field 'image'"
    )


async def _read_upload(runtime: Runtime, request: Request) -> bytes:
    # The body arrives before admission, under its own timeout: a client trickling its body
    # holds a connection, never an admission slot or memory reserved for the work.
    timeout = runtime.settings.upload_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await _image_bytes(request, runtime.settings.max_upload_bytes)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout} s (SR_UPLOAD_TIMEOUT_S)") from None


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next message can only be the client's disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _server_timing(stages: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in stages.items())


@router.post(
    "/upscale",
    operation_id="upscale",
    dependencies=[ApiKey],
    response_class=Response,
    openapi_extra=upscale_request_body(),
    responses={200: upscale_ok_response(), **problem_responses(400, 408, 413, 415, 422, 500, 503, 504)},
)
async def upscale(
    request: Request,
    runtime: RuntimeDep,
    # Enums and bounds are documented here and checked by upscaler.validate, whose messages
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
) -> Response:
    """Upscale the image in the body (raw bytes or multipart field ``image``)."""
    started = time.monotonic()
    labels = INVALID_LABELS
    metrics = runtime.metrics
    record: dict[str, object] = {
        "request_id": request_id_of(request.scope), "method": method, "scale": scale
    }
    try:
        card = None
        if model is not None:
            given = request.query_params
            card, scale, method = upscaler.resolve_model(
                runtime.models, model, scale if "scale" in given else None,
                method if "method" in given else None,
            )
        params = upscaler.validate(runtime.offered(), scale, method, format, quality, align_corners,
                                   AutoParams(max_latency_ms, min_psnr_db, objective))
        if card is not None:
            params = upscaler.with_model(params, card)
        labels = {"method": params.method, "scale": str(params.scale)}
        data = await _read_upload(runtime, request)
        read_s = time.monotonic() - started
        accept = request.headers.get("accept", "")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in VIDEO_MEDIA_TYPES or (not content_type.startswith("image/") and looks_like_video(data)):
            video, cost = upscaler.price_video(runtime, data, params)
            describe = f"x{params.scale} {params.method} of a {video.width}x{video.height} video"
            async with runtime.admission(cost, describe) as deadline:
                result = await upscaler.upscale_video(
                    runtime, data, params, deadline, abandoned=lambda: _disconnected(request),
                )
        else:
            header, cost = upscaler.price(runtime, data, params, accept)
            describe = f"x{params.scale} {params.method} of {header.width}x{header.height}"
            async with runtime.admission(cost, describe) as deadline:
                result = await upscaler.upscale(
                    runtime, data, params, deadline, accept=accept, abandoned=lambda: _disconnected(request),
                )
    except ServiceError as error:
        record_refusal(metrics, labels, record, error, started)
        raise
    except Exception:
        record_fault(metrics, labels, record, started)
        raise
    response = _response(params, result, read_s, time.monotonic() - started, record)
    record_success(metrics, labels, record, started, result.output_size[0] * result.output_size[1] * result.frames)
    return response


def _response(
    params: UpscaleRequest, result: upscaler.Upscaled, read_s: float, total_s: float,
    record: dict[str, object],
) -> Response:
    headers = {"X-SR-Method": result.method, "X-SR-Scale": str(params.scale)}
    if result.auto_note is not None:
        headers["X-SR-Auto"] = result.auto_note
        record["chosen"] = result.method
    if result.model_ref is not None:
        headers["X-SR-Model"] = result.model_ref
    if result.frames > 1:
        headers["X-SR-Frames"] = str(result.frames)
    headers["Server-Timing"] = _server_timing({"read": read_s, **result.stages, "total": total_s})
    (w, h), (ow, oh) = result.input_size, result.output_size
    record.update(
        input=f"{w}x{h}", output=f"{ow}x{oh}", output_pixels=ow * oh * result.frames, format=result.format,
        frames=result.frames,
        decode_ms=ms(result.stages["decode"]), queue_ms=ms(result.stages["queue"]),
        infer_ms=ms(result.stages["infer"]), encode_ms=ms(result.stages["encode"]),
    )
    return Response(result.body, media_type=result.media_type, headers=headers)
