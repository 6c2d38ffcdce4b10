"""Timing the server's own paths at warm-up, to seed the cost model with real measurements."""

from __future__ import annotations

import logging
import time

import numpy as np

from service.choice import CostModel, LinearCost
from service.imaging import OUTPUT_FORMATS, decode, encode
from service.operators import CLASSICAL_METHODS
from service.pipeline import classical_upscale, merge_from_model, split_for_model
from service.runtime import Runtime

log = logging.getLogger(__name__)

# LR sides timed per method and scale: small enough for a quick start on a CPU, far enough
# apart to separate the fixed cost from the per-pixel cost.
SIDES = (48, 112, 176)


def _picture(side: int) -> np.ndarray:
    rng = np.random.default_rng(side)
    yy, xx = np.mgrid[0:side, 0:side] / side
    base = 128 + 70 * np.sin(9 * xx + 5 * yy) + rng.normal(0, 10, (side, side))
    return np.clip(np.stack([base, 0.7 * base + 40, 255 - base], axis=-1), 0, 255).astype(np.uint8)


async def calibrate(runtime: Runtime) -> CostModel:
    started = time.monotonic()
    model = CostModel()
    pictures = {side: _picture(side) for side in SIDES}
    offered = [(m, s) for m, scales in runtime.offered().items() for s in scales]
    outputs: dict[int, np.ndarray] = {}
    for method, scale in offered:
        samples = []
        for side, pixels in pictures.items():
            t = time.monotonic()
            if method in CLASSICAL_METHODS:
                out = await runtime.in_codec_pool(classical_upscale, pixels, scale, method)
            else:
                resident = runtime.models.get(method, scale)
                assert resident is not None
                mi = await runtime.in_codec_pool(split_for_model, pixels, "RGB", scale)
                job = runtime.batcher.submit(resident, mi.luma, timeout_s=60)
                out = await runtime.in_codec_pool(merge_from_model, mi, await job.future)
            samples.append((side * side * scale * scale / 1e6, (time.monotonic() - t) * 1000))
            if scale == 2 and method == "bicubic":
                outputs[side] = out
        model.process[(method, scale)] = LinearCost.fit(samples)
    png = {side: await runtime.in_codec_pool(_png, p) for side, p in pictures.items()}
    decode_samples = []
    for side, data in png.items():
        t = time.monotonic()
        await runtime.in_codec_pool(decode, data, scale=2, max_input_pixels=1 << 30, max_output_pixels=1 << 32)
        decode_samples.append((side * side / 1e6, (time.monotonic() - t) * 1000))
    model.decode = LinearCost.fit(decode_samples)
    for fmt in OUTPUT_FORMATS:
        encode_samples = []
        for out in outputs.values():
            t = time.monotonic()
            await runtime.in_codec_pool(
                encode, out, "RGB", fmt, quality=runtime.settings.jpeg_quality,
                png_compress_level=runtime.settings.png_compress_level, icc_profile=None,
            )
            encode_samples.append((out.shape[0] * out.shape[1] / 1e6, (time.monotonic() - t) * 1000))
        model.encode[fmt] = LinearCost.fit(encode_samples)
    log.info("cost model calibrated in %.1f s", time.monotonic() - started)
    return model


def _png(pixels: np.ndarray) -> bytes:
    return encode(pixels, "RGB", "png", quality=90, png_compress_level=1, icc_profile=None)
