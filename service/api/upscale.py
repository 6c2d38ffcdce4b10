"""``POST /v1/upscale``: bytes in, upscaled bytes out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import torch
from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.api.deps import ApiKey, RuntimeDep
from service.api.methods import ChooseRequest, choice_for
from service.api.request_id import request_id_of
from service.batching import Job
from service.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    InvalidImage,
    InvalidParameter,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from service.gain import proxy_gain_db
from service.imaging import MEDIA_TYPES, OUTPUT_FORMATS, DecodedImage, decode, encode
from service.metrics import REJECTION_REASONS, Metrics
from service.operators import CLASSICAL_METHODS
from service.pipeline import classical_upscale, luma_and_rest, merge_from_model, split_for_model
from service.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["upscale"])
access_log = logging.getLogger("service.access")

SCALES = (2, 3, 4)
AUTO = "auto"
_RAW_TYPES = ("application/octet-stream", "application/x-www-form-urlencoded", "")
_FORMAT_ALIASES = {"jpg": "jpeg", "png": "png", "jpeg": "jpeg", "webp": "webp"}


@dataclass(frozen=True)
class UpscaleParams:
    scale: int
    method: str
    format: str | None
    quality: int | None
    align_corners: bool
    auto: AutoParams | None = None


@dataclass(frozen=True)
class AutoParams:
    max_latency_ms: float | None
    min_psnr_db: float | None
    objective: Literal["quality", "speed"]


def _validate(runtime: Runtime, scale: int, method: str, fmt: str | None, quality: int | None,
              align_corners: bool, auto: AutoParams | None = None) -> UpscaleParams:
    offered_scales = {**runtime.offered(), AUTO: list(SCALES)}
    known = list(offered_scales)
    if method not in known:
        raise InvalidParameter(f"method must be one of {', '.join(known)}, got {method!r}")
    offered = offered_scales[method]
    if scale not in offered:
        listed = ", ".join(map(str, offered))
        raise InvalidParameter(f"scale must be one of {listed} for {method}, got {scale}")
    if fmt is not None:
        if fmt.lower() not in _FORMAT_ALIASES:
            raise InvalidParameter(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        fmt = _FORMAT_ALIASES[fmt.lower()]
    if quality is not None and not 1 <= quality <= 100:
        raise InvalidParameter(f"quality must be between 1 and 100, got {quality}")
    return UpscaleParams(scale, method, fmt, quality, align_corners, auto if method == AUTO else None)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # Answer from the header: no need to read a body we are going to refuse.
        raise PayloadTooLarge(f"the upload is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload exceeds the limit of {limit} bytes")
        chunks.append(chunk)
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
    if content_type.startswith("image/") or content_type in _RAW_TYPES:
        # x-www-form-urlencoded is what `curl --data-binary` sends unless told otherwise.
        return await _read_body(request, limit)
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not accepted; send image/*, "
        "application/octet-stream or multipart/form-data with a field 'image'"
    )


def _output_format(params: UpscaleParams, accept: str, input_format: str) -> str:
    if params.format:
        return params.format
    named = {
        _FORMAT_ALIASES[t.split(";")[0].strip()[6:]]
        for t in accept.lower().split(",")
        if t.split(";")[0].strip()[6:] in _FORMAT_ALIASES and t.strip().startswith("image/")
    }
    if len(named) == 1:
        return named.pop()
    return input_format if input_format in ("jpeg", "webp") else "png"



async def _auto(runtime: Runtime, params: UpscaleParams, decoded: DecodedImage, fmt: str) -> tuple[str, str]:
    """The method-choice policy for this image; when nothing fits, the fastest method, said so."""
    assert params.auto is not None
    espcn = runtime.models.get("espcn", params.scale)
    proxy = None
    if espcn is not None and params.scale in runtime.gain_models:
        proxy = await runtime.in_codec_pool(_proxy_gain, espcn.module, decoded, params.scale)
    choice = choice_for(runtime, ChooseRequest(
        width=decoded.width, height=decoded.height, scale=params.scale,
        max_latency_ms=params.auto.max_latency_ms, min_psnr_db=params.auto.min_psnr_db,
        objective=params.auto.objective, format=fmt,
    ), proxy)
    if choice.method is not None:
        return choice.method, f"chosen; {choice.reason}"
    timed = [c for c in choice.candidates if c.predicted_latency_ms is not None]
    fastest = min(timed, key=lambda c: c.predicted_latency_ms or 0.0).method if timed else "bicubic"
    return fastest, f"fallback to the fastest; {choice.reason}"


def _proxy_gain(module: torch.nn.Module, decoded: DecodedImage, scale: int) -> float | None:
    luma, _ = luma_and_rest(decoded.pixels, decoded.mode)
    return proxy_gain_db(module, luma, scale)


async def _await_job(runtime: Runtime, job: Job, request: Request, deadline: float) -> torch.Tensor:
    """Wait for the batcher, the deadline, or the client hanging up, whichever comes first."""
    disconnect = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {job.future, disconnect},
            timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        disconnect.cancel()
    if job.future in done:
        return job.future.result()
    runtime.batcher.cancel(job)  # its queued tiles leave the queue
    if disconnect in done:
        raise ClientDisconnected("the client went away; its work was dropped")
    waited = time.monotonic() - job.enqueued_at
    raise DeadlineExceeded(
        f"the request waited {waited:.1f} s; the limit is {runtime.settings.request_timeout_s} s"
    )


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
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}},
)
async def upscale(
    request: Request,
    runtime: RuntimeDep,
    scale: int = Query(2, description="upscaling factor: 2, 3 or 4"),
    method: str = Query(
        "espcn", description="nearest, bilinear, bicubic, espcn, deconv, espcn-large"
    ),
    format: str | None = Query(None, description="png, jpeg or webp; default from Accept or the input"),
    quality: int | None = Query(None, description="JPEG/WebP quality 1..100"),
    align_corners: bool = Query(False, description="bilinear/bicubic corner alignment"),
    max_latency_ms: float | None = Query(None, gt=0, description="auto: latency budget"),
    min_psnr_db: float | None = Query(None, ge=0, description="auto: quality floor (Set14 PSNR)"),
    objective: Literal["quality", "speed"] = Query("quality", description="auto: what to maximise"),
) -> Response:
    """Upscale the image in the body (raw bytes or multipart field ``image``)."""
    started = time.monotonic()
    labels = INVALID_LABELS
    metrics = runtime.metrics
    record: dict[str, object] = {
        "request_id": request_id_of(request.scope), "method": method, "scale": scale
    }
    try:
        params = _validate(runtime, scale, method, format, quality, align_corners,
                           AutoParams(max_latency_ms, min_psnr_db, objective))
        labels = {"method": params.method, "scale": str(params.scale)}
        async with runtime.admission() as deadline:
            response = await _serve(runtime, request, params, deadline, started, record)
    except ServiceError as error:
        record_refusal(metrics, labels, record, error, started)
        raise
    except Exception:
        # A fault of ours: counted and logged here, answered as problem+json by the handler.
        metrics.requests.labels(**labels, status="500").inc()
        record.update(status=500, code="internal_error", total_ms=_ms(time.monotonic() - started))
        access_log.error("upscale 500", extra=record)
        raise
    duration = time.monotonic() - started
    metrics.requests.labels(**labels, status="200").inc()
    metrics.request_duration.labels(**labels).observe(duration)
    metrics.output_pixels.labels(**labels).inc(record["output_pixels"])  # type: ignore[arg-type]
    record.update(status=200, total_ms=_ms(duration))
    access_log.info("upscale 200", extra=record)
    return response


# The metric labels of a request refused before its method and scale were known to be valid.
INVALID_LABELS = {"method": "invalid", "scale": "invalid"}


def record_refusal(
    metrics: Metrics,
    labels: dict[str, str],
    record: dict[str, object],
    error: ServiceError,
    started: float | None = None,
) -> None:
    """Count and access-log a refused upscale request: the handler's 4xx, and FastAPI's 422s
    for parameters it rejects before the handler runs (``scale=two``), alike."""
    metrics.requests.labels(**labels, status=str(error.status)).inc()
    if error.code in REJECTION_REASONS:
        metrics.rejected.labels(reason=error.code).inc()
    record.update(status=error.status, code=error.code, detail=error.detail)
    if started is not None:
        record["total_ms"] = _ms(time.monotonic() - started)
    access_log.info("upscale %s", error.status, extra=record)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def _serve(
    runtime: Runtime,
    request: Request,
    params: UpscaleParams,
    deadline: float,
    started: float,
    record: dict[str, object],
) -> Response:
    settings, metrics = runtime.settings, runtime.metrics
    try:
        # The deadline covers the upload too: a client trickling its body must not hold an
        # admission slot for ever.
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            data = await _image_bytes(request, settings.max_upload_bytes)
    except TimeoutError:
        raise DeadlineExceeded(
            f"the body did not arrive within {settings.request_timeout_s} s"
        ) from None
    read_at = time.monotonic()
    decoded = await runtime.in_codec_pool(
        decode,
        data,
        scale=params.scale,
        max_input_pixels=settings.max_input_pixels,
        max_output_pixels=settings.max_output_pixels,
    )
    decoded_at = time.monotonic()
    metrics.decode_duration.observe(decoded_at - read_at)
    out_format = _output_format(params, request.headers.get("accept", ""), decoded.format)
    method = params.method
    headers: dict[str, str] = {}
    if params.auto is not None:
        method, headers["X-SR-Auto"] = await _auto(runtime, params, decoded, out_format)
        record["chosen"] = method
    headers.update({"X-SR-Method": method, "X-SR-Scale": str(params.scale)})
    if method in CLASSICAL_METHODS:
        pixels = await runtime.in_codec_pool(
            classical_upscale, decoded.pixels, params.scale, method,
            align_corners=params.align_corners,
        )
        queue_s, infer_s = 0.0, time.monotonic() - decoded_at
    else:
        model = runtime.models.get(method, params.scale)
        assert model is not None  # _validate checked the offer
        headers["X-SR-Model"] = model.ref
        model_input = await runtime.in_codec_pool(
            split_for_model, decoded.pixels, decoded.mode, params.scale
        )
        job = runtime.batcher.submit(model, model_input.luma, max(0.0, deadline - time.monotonic()))
        luma_hr = await _await_job(runtime, job, request, deadline)
        pixels = await runtime.in_codec_pool(merge_from_model, model_input, luma_hr)
        queue_s = (job.started_at or job.enqueued_at) - job.enqueued_at
        infer_s = job.infer_s
        metrics.queue_wait.labels(method=method, scale=str(params.scale)).observe(queue_s)
    inferred_at = time.monotonic()

    quality_used = params.quality or (
        settings.webp_quality if out_format == "webp" else settings.jpeg_quality
    )
    body = await runtime.in_codec_pool(
        encode,
        pixels,
        decoded.mode,
        out_format,
        quality=quality_used,
        png_compress_level=settings.png_compress_level,
        icc_profile=decoded.icc_profile,
    )
    finished = time.monotonic()
    metrics.encode_duration.labels(format=out_format).observe(finished - inferred_at)
    # What this request cost us apart from waiting: the cost model learns from it.
    runtime.costs.observe(method, params.scale, decoded.width, decoded.height, out_format,
                          (finished - read_at - queue_s) * 1000)
    headers["Server-Timing"] = _server_timing(
        {
            "read": read_at - started,
            "decode": decoded_at - read_at,
            "queue": queue_s,
            "infer": infer_s,
            "post": inferred_at - decoded_at - queue_s - infer_s,
            "encode": finished - inferred_at,
            "total": finished - started,
        }
    )
    record.update(
        input=f"{decoded.width}x{decoded.height}",
        output=f"{pixels.shape[1]}x{pixels.shape[0]}",
        output_pixels=int(pixels.shape[0] * pixels.shape[1]),
        format=out_format,
        decode_ms=_ms(decoded_at - read_at),
        queue_ms=_ms(queue_s),
        infer_ms=_ms(infer_s),
        encode_ms=_ms(finished - inferred_at),
    )
    return Response(body, media_type=MEDIA_TYPES[out_format], headers=headers)
