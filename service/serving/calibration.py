"""Timing the server's own pipeline at warm-up, to seed the cost model with real measurements."""

from __future__ import annotations

import logging
import time

from service.config import OUTPUT_FORMATS
from service.imaging.codec import decode, encode
from service.imaging.synthetic import pattern
from service.serving.choice import CostModel, LinearCost
from service.serving.runtime import Runtime
from service.serving.upscaler import upscale_pixels

log = logging.getLogger(__name__)

# LR sides timed per method and scale: small enough for a quick start on a CPU, far enough
# apart to separate the fixed cost from the per-pixel cost.
SIDES = (48, 112, 176)
# Calibration runs before the server is ready; nothing else waits on it.
DEADLINE_S = 60.0


async def calibrate(runtime: Runtime) -> CostModel:
    started = time.monotonic()
    model = CostModel()
    pictures = {side: pattern(side, side, 3, seed=side) for side in SIDES}
    offered = [(m, s) for m, scales in runtime.offered().items() for s in scales]
    outputs = {}
    for method, scale in offered:
        samples = []
        for side, pixels in pictures.items():
            t = time.monotonic()
            out = await upscale_pixels(runtime, pixels, "RGB", scale, method, t + DEADLINE_S)
            samples.append((side * side * scale * scale / 1e6, (time.monotonic() - t) * 1000))
            if scale == 2 and method == "bicubic":
                outputs[side] = out.pixels
        model.process[(method, scale)] = LinearCost.fit(samples)
    settings = runtime.settings
    png = {side: await runtime.in_codec_pool(
        encode, p, "RGB", "png", quality=90, png_compress_level=settings.png_compress_level, icc_profile=None
    ) for side, p in pictures.items()}
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
                encode, out, "RGB", fmt, quality=settings.jpeg_quality,
                png_compress_level=settings.png_compress_level, icc_profile=None,
                png_encoder=settings.png_encoder,
            )
            encode_samples.append((out.shape[0] * out.shape[1] / 1e6, (time.monotonic() - t) * 1000))
        model.encode[fmt] = LinearCost.fit(encode_samples)
    log.info("cost model calibrated in %.1f s", time.monotonic() - started)
    return model
