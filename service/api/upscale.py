"""``POST /v1/upscale``: bytes in, upscaled bytes out. HTTP only: the query, the body, the
admission slot, the answer's headers; the work is ``serving.upscaler``'s."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from service.api.access import (
    INVALID_LABELS,
    AccessLoggedRoute,
    record_fault,
    record_refusal,
    record_success,
)
from service.api.deps import ApiKey, RuntimeDep
from service.api.openapi import problem_responses, upscale_ok_response, upscale_request_body
from service.api.params import (
    UpscaleParamsDep,
    answer_headers,
    content_type_of,
    is_video,
    read_body,
)
from service.api.request_id import request_id_of
from service.errors import ServiceError
from service.rounding import ms
from service.serving import upscaler
from service.serving.upscaler import UpscaleRequest

router = APIRouter(prefix="/v1", tags=["upscale"], route_class=AccessLoggedRoute)


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
async def upscale(request: Request, runtime: RuntimeDep, asked: UpscaleParamsDep) -> Response:
    """Upscale the image in the body (raw bytes or multipart field ``image``)."""
    started = time.monotonic()
    labels = INVALID_LABELS
    metrics = runtime.metrics
    record: dict[str, object] = {
        "request_id": request_id_of(request.scope), "method": asked.method or "espcn", "scale": asked.scale or 2,
    }
    try:
        params = asked.check(runtime.offered(), runtime.models)
        labels = {"method": params.method, "scale": str(params.scale)}
        settings = runtime.settings
        data = await read_body(request, settings.max_upload_bytes, settings.upload_timeout_s)
        read_s = time.monotonic() - started
        accept = request.headers.get("accept", "")
        content_type = content_type_of(request)
        if is_video(content_type, data[:16]):
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
    headers = answer_headers(result.method, params.scale, result.model_ref, result.auto_note, result.frames)
    if result.auto_note is not None:
        record["chosen"] = result.method
    headers["Server-Timing"] = _server_timing({"read": read_s, **result.stages, "total": total_s})
    (w, h), (ow, oh) = result.input_size, result.output_size
    record.update(
        input=f"{w}x{h}", output=f"{ow}x{oh}", output_pixels=ow * oh * result.frames, format=result.format,
        frames=result.frames,
        decode_ms=ms(result.stages["decode"]), queue_ms=ms(result.stages["queue"]),
        infer_ms=ms(result.stages["infer"]), encode_ms=ms(result.stages["encode"]),
    )
    return Response(result.body, media_type=result.media_type, headers=headers)
