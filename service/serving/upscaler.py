"""The upscale pipeline, written once: the route, calibration and the benchmarks all call it.

    bytes -> price (the header: size, memory, work; admission happens here, in the caller)
    -> decode -> method (``auto`` chooses) ->
        a resampler on every channel, or
        split Y from Cb/Cr/alpha -> the batcher (tiles, the device thread) -> merge
    -> encode -> bytes

CPU work runs in the runtime's codec pool (smallest request first, nothing started past the
deadline), never on the event loop; the network runs on the batcher's device thread. :func:`upscale_pixels` is the middle part alone (pixels in, pixels out)
for callers that time the stages apart (calibration). Validation of the parameters is here too,
because what is valid depends on what this server offers; reading the body is HTTP's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import mimeparse
import numpy as np
import torch

from service.config import OUTPUT_FORMATS, SCALES, Settings
from service.errors import InvalidParameter
from service.imaging.codec import (
    MEDIA_TYPES,
    DecodedImage,
    ImageHeader,
    check_format_limits,
    decode,
    encode,
    encode_animation,
    probe,
)
from service.imaging.gain import proxy_gain_db
from service.imaging.planes import (
    ModelInput,
    classical_upscale,
    luma_and_rest,
    merge_from_model,
    split_for_model,
    upscale_bicubic_uint8,
)
from service.imaging.resamplers import CLASSICAL_METHODS, interpolate, to_uint8
from service.imaging.video import (
    FramePlanes,
    VideoHeader,
    VideoLimits,
    VideoReader,
    VideoWriter,
    probe_video,
)
from service.models.resident import ModelSet, ResidentModel
from service.models.store import ModelCard
from service.serving.admission import RequestCost, estimate_memory
from service.serving.choice import ChoiceRequest
from service.serving.runtime import Runtime

AUTO = "auto"
T = TypeVar("T")
FORMAT_ALIASES = {"jpg": "jpeg", **{f: f for f in OUTPUT_FORMATS}}


@dataclass(frozen=True)
class AutoParams:
    max_latency_ms: float | None
    min_psnr_db: float | None
    objective: Literal["quality", "speed"]


@dataclass(frozen=True)
class UpscaleRequest:
    """A checked request: a method this server offers at this scale, a known format."""

    scale: int
    method: str
    format: str | None = None  # None: from Accept, else the input's
    quality: int | None = None
    align_corners: bool = False
    auto: AutoParams | None = None
    model: ModelCard | None = None  # a version asked for by name (``model=name@version``)


def resolve_model(
    models: ModelSet, model: str, scale: int | None, method: str | None
) -> tuple[ModelCard, int, str]:
    """``name`` or ``name@version`` -> its card, scale and method. A ``scale`` or ``method``
    also given must agree with the model's."""
    name, _, version = model.partition("@")
    try:
        card = models.lookup(name, version or None)
    except LookupError as missing:
        raise InvalidParameter(f"{missing.args[0]}; GET /v1/models lists the models, "
                               f"GET /v2/models/{{name}} their versions") from None
    if scale is not None and scale != card.scale:
        raise InvalidParameter(f"{card.ref} is a x{card.scale} model; scale={scale} was asked")
    if method is not None and method != card.method:
        raise InvalidParameter(f"{card.ref} serves method {card.method}; method={method} was asked")
    return card, card.scale, card.method


def validate(
    offered: dict[str, list[int]],
    scale: int,
    method: str,
    fmt: str | None,
    quality: int | None,
    align_corners: bool,
    auto: AutoParams | None = None,
) -> UpscaleRequest:
    offered_scales = {**offered, AUTO: list(SCALES)}
    if method not in offered_scales:
        raise InvalidParameter(f"method must be one of {', '.join(offered_scales)}, got {method!r}")
    if scale not in offered_scales[method]:
        listed = ", ".join(map(str, offered_scales[method]))
        raise InvalidParameter(f"scale must be one of {listed} for {method}, got {scale}")
    if fmt is not None:
        if fmt.lower() not in FORMAT_ALIASES:
            raise InvalidParameter(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        fmt = FORMAT_ALIASES[fmt.lower()]
    if quality is not None and not 1 <= quality <= 100:
        raise InvalidParameter(f"quality must be between 1 and 100, got {quality}")
    return UpscaleRequest(scale, method, fmt, quality, align_corners, auto if method == AUTO else None)


def with_model(request: UpscaleRequest, card: ModelCard) -> UpscaleRequest:
    return dataclasses.replace(request, model=card)


@dataclass(frozen=True)
class UpscaleParams:
    """What a client asked, unchecked (plain values: a job stores them as JSON). ``scale`` and
    ``method`` are None when not given: the model's, or x2 ``espcn``."""

    scale: int | None = None
    method: str | None = None
    format: str | None = None
    quality: int | None = None
    align_corners: bool = False
    max_latency_ms: float | None = None
    min_psnr_db: float | None = None
    objective: Literal["quality", "speed"] = "quality"
    model: str | None = None

    def check(self, offered: dict[str, list[int]], models: ModelSet) -> UpscaleRequest:
        """Against this server's methods and models: an UpscaleRequest, or a 422 saying why."""
        card = None
        scale, method = self.scale, self.method
        if self.model is not None:
            card, scale, method = resolve_model(models, self.model, scale, method)
        request = validate(offered, scale or 2, method or "espcn", self.format, self.quality, self.align_corners,
                           AutoParams(self.max_latency_ms, self.min_psnr_db, self.objective))
        return with_model(request, card) if card is not None else request


@dataclass(frozen=True)
class Upscaled:
    """The encoded answer and what it took."""

    body: bytes
    media_type: str
    format: str
    method: str  # what ran (``auto`` resolved)
    model_ref: str | None  # name@version of the network, None for a resampler
    auto_note: str | None  # why ``auto`` chose ``method``
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    frames: int  # 1 for a still image
    # Seconds: decode, queue, infer, post (all between decode and encode that is not the
    # device's: the colour work and the waits for a codec thread), split and merge (the colour
    # work itself, inside post; learned methods only), encode.
    stages: dict[str, float]


@dataclass(frozen=True)
class Processed:
    """:func:`upscale_pixels`' result: uint8 (rH, rW, C) pixels and the network's share."""

    pixels: np.ndarray
    queue_s: float
    infer_s: float
    model_ref: str | None
    split_s: float = 0.0  # the colour split's own time on a codec thread
    merge_s: float = 0.0


def output_format(request: UpscaleRequest, accept: str, input_format: str) -> str:
    """The asked-for ``format``; else the best of ``Accept`` by its q-values (RFC 9110), the
    input's own format winning a tie and the first named winning otherwise; else (no
    ``Accept``, or nothing acceptable) the input's: JPEG and WebP stay themselves, the rest
    becomes PNG."""
    if request.format:
        return request.format
    default = input_format if input_format in ("jpeg", "webp") else "png"
    try:
        weights = {fmt: mimeparse.quality(MEDIA_TYPES[fmt], accept) for fmt in OUTPUT_FORMATS} if accept else {}
    except (ValueError, IndexError):  # an Accept header that does not parse counts as absent
        weights = {}
    best = max(weights.values(), default=0.0)
    if best <= 0:
        return default
    tied = [fmt for fmt, q in weights.items() if q == best]
    if default in tied:
        return default
    named = accept.lower()

    def position(fmt: str) -> int:  # where the client named it; a wildcard match goes last
        at = named.find(MEDIA_TYPES[fmt])
        return at if at >= 0 else len(named)

    return min(tied, key=position)


async def all_of(steps: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run a request's steps (its frames) side by side; the first to fail cancels the rest and
    is the request's answer, as itself: a ServiceError must not become an ExceptionGroup (a 500)."""
    if len(steps) == 1:
        return [await steps[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(step) for step in steps]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _limits(settings: Settings) -> dict[str, int]:
    return {"max_input_pixels": settings.max_input_pixels, "max_output_pixels": settings.max_output_pixels,
            "max_frames": settings.max_frames, "max_total_output_pixels": settings.max_total_output_pixels}


def price(runtime: Runtime, data: bytes, request: UpscaleRequest, accept: str = "") -> tuple[ImageHeader, RequestCost]:
    """The image's header and what upscaling it will cost, from the header alone (microseconds,
    so it runs on the event loop); the same 4xx as decoding for a bad or oversized image."""
    settings = runtime.settings
    header = probe(data, scale=request.scale, **_limits(settings))
    fmt = output_format(request, accept, header.format)
    check_format_limits(header.width, header.height, request.scale, fmt, header.frames)
    return header, runtime.cost_of(header, request.method, request.scale, len(data), fmt)


async def upscale(
    runtime: Runtime,
    data: bytes,
    request: UpscaleRequest,
    deadline: float,
    *,
    accept: str = "",
    abandoned: Callable[[], Awaitable[object]] | None = None,
    background: bool = False,
) -> Upscaled:
    """Encoded image bytes in, encoded upscaled bytes out, before ``deadline`` (monotonic s).
    ``background``: a job's work, behind interactive requests in the codec pool and batcher."""
    settings, metrics = runtime.settings, runtime.metrics
    cpu = functools.partial(runtime.codec_pool.run, deadline=deadline, background=background)
    started = time.monotonic()
    # Each codec job is a hop to a codec thread and back (two wake-ups, which on two cores cost
    # more than the small image's work itself): the colour split runs in the decode's job and
    # the merge in the encode's whenever the network is known before the image is (not auto).
    model = None
    if request.auto is None and request.method not in CLASSICAL_METHODS:
        model = await _network_for(runtime, request.method, request.scale, request.model)
    (decoded, decode_s), (inputs, split_s) = await cpu(
        functools.partial(_decode_and_split, data, request.scale, _limits(settings), model is not None),
        size=len(data),
    )
    decoded_at = time.monotonic()
    metrics.decode_duration.observe(decode_s)
    fmt = output_format(request, accept, decoded.format)
    method, note = request.method, None
    if request.auto is not None:
        method, note = await _auto(runtime, request, decoded, fmt)
        if method not in CLASSICAL_METHODS:
            model = await _network_for(runtime, method, request.scale, None)
            inputs, split_s = await cpu(
                functools.partial(_timed, _split, decoded.frames, decoded.mode, request.scale),
                size=decoded.pixels.size * request.scale ** 2,
            )
    quality = request.quality or (settings.webp_quality if fmt == "webp" else settings.jpeg_quality)
    encoder = functools.partial(_encode, decoded, fmt, quality, settings)
    out_size = decoded.pixels.size * request.scale ** 2 * len(decoded.frames)
    if model is None:  # a resampler and the encoding: one codec job
        (frames, resample_s), (body, encode_s) = await cpu(functools.partial(
            _resample_and_encode, decoded.frames, request.scale, method, request.align_corners, encoder),
            size=out_size)
        finished = time.monotonic()
        queue_s = 0.0
        # As before the jobs were fused: the resampler counts as "infer", its wait as "post".
        stages = {"decode": decoded_at - started, "queue": 0.0, "infer": resample_s,
                  "post": max(0.0, finished - decoded_at - resample_s - encode_s), "encode": encode_s}
    else:
        assert inputs is not None
        planes, queue_s, infer_s = await _through_network(runtime, model, inputs, deadline,
                                                          abandoned=abandoned, background=background)
        processed_at = time.monotonic()
        (frames, merge_s), (body, encode_s) = await cpu(
            functools.partial(_merge_and_encode, inputs, planes, encoder), size=out_size)
        finished = time.monotonic()
        # Wall times, waits for a codec thread included. The colour work ran in the decode's and
        # the encode's jobs; it is counted in post (with the waits around the device), where it
        # was when it had jobs of its own, so the stages still add up to the whole.
        stages = {"decode": decoded_at - started - split_s, "queue": queue_s, "infer": infer_s,
                  "post": max(0.0, processed_at - decoded_at - queue_s - infer_s) + split_s + merge_s,
                  "split": split_s, "merge": merge_s, "encode": max(0.0, finished - processed_at - merge_s)}
    metrics.encode_duration.labels(format=fmt).observe(encode_s)
    # What this request cost apart from waiting: the cost model learns from it.
    runtime.costs.observe(method, request.scale, decoded.width, decoded.height * len(frames), fmt,
                          (finished - started - queue_s) * 1000)
    height, width = frames[0].shape[:2]
    return Upscaled(
        body=body,
        media_type=MEDIA_TYPES[fmt],
        format=fmt,
        method=method,
        model_ref=model.ref if model is not None else None,
        auto_note=note,
        input_size=(decoded.width, decoded.height),
        output_size=(int(width), int(height)),
        frames=len(frames),
        stages=stages,
    )


def _decode_and_split(
    data: bytes, scale: int, limits: dict[str, int], split: bool
) -> tuple[tuple[DecodedImage, float], tuple[list[ModelInput] | None, float]]:
    """One codec job: decode, and (``split``) the colour split of every frame; each timed."""
    decoded = _timed(decode, data, scale=scale, **limits)
    return decoded, _timed(_split, decoded[0].frames, decoded[0].mode, scale) if split else (None, 0.0)


def _split(frames: tuple[np.ndarray, ...], mode: str, scale: int) -> list[ModelInput]:
    return [split_for_model(frame, mode, scale) for frame in frames]


def _merge(inputs: list[ModelInput], planes: list[torch.Tensor]) -> list[np.ndarray]:
    return [merge_from_model(i, plane) for i, plane in zip(inputs, planes, strict=True)]


def _merge_and_encode(
    inputs: list[ModelInput], planes: list[torch.Tensor], encoder: Callable[[list[np.ndarray]], bytes]
) -> tuple[tuple[list[np.ndarray], float], tuple[bytes, float]]:
    merged = _timed(_merge, inputs, planes)
    return merged, _timed(encoder, merged[0])


def _resample_and_encode(
    frames: tuple[np.ndarray, ...], scale: int, method: str, align_corners: bool,
    encoder: Callable[[list[np.ndarray]], bytes],
) -> tuple[tuple[list[np.ndarray], float], tuple[bytes, float]]:
    resampled = _timed(lambda: [classical_upscale(f, scale, method, align_corners=align_corners) for f in frames])
    return resampled, _timed(encoder, resampled[0])


def _encode(decoded: DecodedImage, fmt: str, quality: int, settings: Settings, frames: list[np.ndarray]) -> bytes:
    """The upscaled frames in ``fmt``: a still image, or an animation with the input's timing."""
    if decoded.animation is None:
        return encode(frames[0], decoded.mode, fmt, quality=quality, png_compress_level=settings.png_compress_level,
                      icc_profile=decoded.icc_profile, png_encoder=settings.png_encoder)
    return encode_animation(frames, decoded.mode, fmt, decoded.animation, quality=quality,
                            png_compress_level=settings.png_compress_level)


async def _through_network(
    runtime: Runtime, model: ResidentModel, inputs: list[ModelInput], deadline: float, *,
    abandoned: Callable[[], Awaitable[object]] | None = None, background: bool = False,
) -> tuple[list[torch.Tensor], float, float]:
    """Every frame's Y through the batcher at once (their tiles share batches with each other
    and with everyone else's): the planes, the longest wait for the device, the device time."""
    results = await all_of([runtime.batcher.run(model, i.luma, deadline, abandoned=abandoned, background=background)
                            for i in inputs])
    if runtime.lifecycle.ready:  # calibration's requests are not traffic
        for result in results:
            runtime.metrics.queue_wait.labels(method=model.method, scale=str(model.scale)).observe(result.queue_s)
    return [r.plane for r in results], max(r.queue_s for r in results), sum(r.infer_s for r in results)


async def upscale_pixels(
    runtime: Runtime,
    pixels: np.ndarray,
    mode: str,
    scale: int,
    method: str,
    deadline: float,
    *,
    align_corners: bool = False,
) -> Processed:
    """Decoded (H, W, C) uint8 pixels in, upscaled pixels out, each step a codec job of its own
    so the caller (calibration) can time them apart: a resampler on every channel, or the
    network on Y through the batcher with Cb/Cr/alpha bicubic around it."""
    size = pixels.size * scale * scale  # the request's place in the codec pool: small first
    cpu = functools.partial(runtime.codec_pool.run, size=size, deadline=deadline)
    if method in CLASSICAL_METHODS:
        started = time.monotonic()
        out = await cpu(functools.partial(classical_upscale, pixels, scale, method, align_corners=align_corners))
        return Processed(out, 0.0, time.monotonic() - started, None)
    model = await _network_for(runtime, method, scale, None)
    inputs, split_s = await cpu(functools.partial(_timed, _split, (pixels,), mode, scale))
    planes, queue_s, infer_s = await _through_network(runtime, model, inputs, deadline)
    outs, merge_s = await cpu(functools.partial(_timed, _merge, inputs, planes))
    return Processed(outs[0], queue_s, infer_s, model.ref, split_s, merge_s)


def _timed(func: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """``func(*args)`` and its seconds, measured where it runs (a codec thread), not waited."""
    started = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - started


async def _network_for(runtime: Runtime, method: str, scale: int, card: ModelCard | None) -> ResidentModel:
    """The network serving ``method`` at ``scale``: the resident newest, or the version asked
    for, which an older one is loaded for on first use (off the event loop)."""
    model = runtime.models.get(method, scale)
    if card is not None and (model is None or model.card.ref != card.ref):
        model = await runtime.codec_pool.run(functools.partial(runtime.models.versioned, card))
    if model is None:
        raise InvalidParameter(f"{method} is not offered at x{scale}")
    return model


async def _auto(
    runtime: Runtime, request: UpscaleRequest, decoded: DecodedImage, fmt: str
) -> tuple[str, str]:
    """The method-choice policy for this image; when nothing fits, the fastest method, said so."""
    assert request.auto is not None
    espcn = runtime.models.get("espcn", request.scale)
    proxy = None
    if espcn is not None and request.scale in runtime.gain_models:
        proxy = await runtime.codec_pool.run(
            functools.partial(_proxy_gain, espcn.module, decoded, request.scale), size=decoded.pixels.size
        )
    choice = runtime.choose(ChoiceRequest(
        width=decoded.width, height=decoded.height, scale=request.scale,
        max_latency_ms=request.auto.max_latency_ms, min_psnr_db=request.auto.min_psnr_db,
        objective=request.auto.objective, format=fmt,
    ), proxy)
    if choice.method is not None:
        return choice.method, f"chosen; {choice.reason}"
    timed = [c for c in choice.candidates if c.predicted_latency_ms is not None]
    fastest = min(timed, key=lambda c: c.predicted_latency_ms or 0.0).method if timed else "bicubic"
    return fastest, f"fallback to the fastest; {choice.reason}"


def _proxy_gain(module: torch.nn.Module, decoded: DecodedImage, scale: int) -> float | None:
    luma, _ = luma_and_rest(decoded.pixels, decoded.mode)
    return proxy_gain_db(module, luma, scale)


# -- video -----------------------------------------------------------------------------------------


def video_limits(settings: Settings, *, job: bool = False) -> VideoLimits:
    """The limits of a video in a request, or (``job``) in a job, which may run longer."""
    duration = settings.max_job_video_duration_s if job else settings.max_video_duration_s
    frames = settings.max_job_video_frames if job else settings.max_video_frames
    return VideoLimits(settings.max_input_pixels, settings.max_output_pixels, duration, frames,
                       settings.max_video_output_pixels_per_s)


def price_video(
    runtime: Runtime, source: bytes | Path, request: UpscaleRequest, *, job: bool = False
) -> tuple[VideoHeader, RequestCost]:
    """A video's header, its limits checked, and its cost: one chunk of frames in memory at a
    time (Y, U, V at input and output size), and, for bytes in memory, the body and the
    answer's bytes (a job's input and result are files)."""
    settings = runtime.settings
    if request.format is not None or request.quality is not None:
        raise InvalidParameter("format and quality are for images: a video comes back in its own container "
                               "(MP4 and QuickTime as H.264, WebM as VP9)")
    header = probe_video(source, request.scale, video_limits(settings, job=job))
    chunk = settings.video_chunk_frames
    in_memory = len(source) if isinstance(source, bytes) else 0
    memory = estimate_memory(header.width, header.height * chunk, 2, request.scale, learned=True,
                             halo=runtime.models.max_halo, body_bytes=in_memory) + in_memory * request.scale**2
    return header, RequestCost(memory, None, request.method not in CLASSICAL_METHODS)


async def upscale_video(
    runtime: Runtime,
    source: bytes | Path,
    request: UpscaleRequest,
    deadline: float,
    *,
    abandoned: Callable[[], Awaitable[object]] | None = None,
    destination: Path | None = None,
    progress: Callable[[int], object] | None = None,
    job: bool = False,
) -> Upscaled:
    """A video in, the video upscaled out, a chunk of frames at a time: decode (codec pool) ->
    every frame's Y through the batcher at once (U, V bicubic) -> encode (codec pool).

    ``source`` and ``destination`` may be files (a job's), so neither video is held whole;
    without a destination the answer is ``Upscaled.body``. ``progress(frames_done)`` after each
    chunk. ``job``: a job's limits, and its work behind interactive requests."""
    settings = runtime.settings
    started = time.monotonic()
    cpu = functools.partial(runtime.codec_pool.run, deadline=deadline, background=job)
    limits = video_limits(settings, job=job)
    source_size = len(source) if isinstance(source, bytes) else 0
    reader = await cpu(functools.partial(VideoReader, source, limits, request.scale), size=source_size)
    method = request.method
    if request.auto is not None:
        choice = runtime.choose(ChoiceRequest(
            width=reader.width, height=reader.height, scale=request.scale, max_latency_ms=None,
            min_psnr_db=request.auto.min_psnr_db, objective=request.auto.objective, format="png",
        ))
        method = choice.method or "bicubic"
    queue_s = infer_s = 0.0
    writer: VideoWriter | None = None
    try:
        model = None if method in CLASSICAL_METHODS else await _network_for(runtime, method, request.scale, request.model)
        writer = await cpu(functools.partial(VideoWriter, reader, request.scale, destination))
        size = reader.width * reader.height * request.scale ** 2
        while True:
            chunk = await cpu(functools.partial(reader.read, settings.video_chunk_frames), size=size)
            upscaled = await all_of([_upscale_yuv(runtime, f, request.scale, method, model, deadline, abandoned, job)
                                     for f in chunk.frames])
            queue_s += max((u[1] for u in upscaled), default=0.0)
            infer_s += sum(u[2] for u in upscaled)
            # One frame per job: an encode of a whole chunk held a codec thread for a second,
            # and a thumbnail's job waited behind it.
            for i, (planes, _, _) in enumerate(upscaled):
                await cpu(functools.partial(writer.write, [planes], chunk.audio if i == 0 else []), size=size)
            if not upscaled and chunk.audio:
                await cpu(functools.partial(writer.write, [], chunk.audio), size=size)
            if progress is not None:
                progress(writer.frames)
            if chunk.done:
                break
        body = await cpu(writer.close, size=size)
    except BaseException:
        if writer is not None:
            await runtime.codec_pool.run(writer.abort)
        raise
    finally:
        await runtime.codec_pool.run(reader.close)
    finished = time.monotonic()
    out = (reader.width * request.scale, reader.height * request.scale)
    return Upscaled(
        body=body, media_type=writer.media_type, format=writer.name, method=method,
        model_ref=model.ref if model is not None else None, auto_note=None,
        input_size=(reader.width, reader.height), output_size=out, frames=writer.frames,
        stages={"decode": 0.0, "queue": queue_s, "infer": infer_s,
                "post": max(0.0, finished - started - queue_s - infer_s), "encode": 0.0},
    )


async def _upscale_yuv(
    runtime: Runtime, planes: FramePlanes, scale: int, method: str, model: ResidentModel | None,
    deadline: float, abandoned: Callable[[], Awaitable[object]] | None, background: bool,
) -> tuple[FramePlanes, float, float]:
    """One frame: Y through the network (or the resampler), U and V bicubic."""
    cpu = functools.partial(runtime.codec_pool.run, size=planes.y.size * scale * scale, deadline=deadline,
                            background=background)
    luma = torch.from_numpy(planes.y).to(torch.float32)
    if model is not None:
        result = await runtime.batcher.run(model, luma, deadline, abandoned=abandoned, background=background)
        y, queue_s, infer_s = result.plane, result.queue_s, result.infer_s
    else:
        y = await cpu(functools.partial(_resample_plane, luma, scale, method))
        queue_s = infer_s = 0.0
    return await cpu(functools.partial(_finish_frame, planes, y, scale)), queue_s, infer_s


def _resample_plane(plane: torch.Tensor, scale: int, method: str) -> torch.Tensor:
    return interpolate(plane[None, None], scale, method)[0, 0]


def _finish_frame(planes: FramePlanes, y: torch.Tensor, scale: int) -> FramePlanes:
    """The upscaled Y to 8 bits, U and V bicubic: one codec job per frame."""
    u, v = (upscale_bicubic_uint8(plane, scale) for plane in (planes.u, planes.v))
    return FramePlanes(to_uint8(y).numpy(), u, v, planes.pts)
