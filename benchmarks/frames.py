"""1080p-output frames through the served networks: ms per frame at x2, x3 and x4, on the device
the server picks (the first CUDA device when there is one, in float16; else the CPU).

    python -m benchmarks.frames                       # every learned method, 4 frames each
    python -m benchmarks.frames --methods espcn --frames 10

Each scale's frame is the LR size that upscales to 1920x1080 (960x540, 640x360, 480x270), a
synthetic RGB picture, through the server's own middle part in process
(``upscaler.upscale_pixels``: colour split, the batcher's tiles and batches, the network, merge;
no PNG codec, which a video path does not use either). Printed per method and scale: the median
ms per frame, the same per output megapixel (what `docs/methods.png` and the cost model count in),
the device's time (the batches' time, from the batcher, summed over the inference workers, so
it can exceed the frame's wall time when two batches run at once) and the colour work's. The
first frame of each pays lazy initialisation and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch

from benchmarks.run import REPO_ROOT
from service.config import Settings
from service.imaging.synthetic import pattern
from service.serving import upscaler
from service.serving.runtime import Runtime

# The LR frame that makes 1920x1080 at each scale.
FRAMES = {2: (960, 540), 3: (640, 360), 4: (480, 270)}
OUTPUT_MEGAPIXELS = 1920 * 1080 / 1e6


async def measure(methods: list[str] | None, frames: int) -> list[dict[str, object]]:
    runtime = Runtime.start(Settings(model_store=REPO_ROOT / "model_store", calibrate=False))
    rows: list[dict[str, object]] = []
    try:
        await runtime.in_codec_pool(runtime.warm_up)
        for model in sorted(runtime.models, key=lambda m: (m.method, m.scale)):
            if methods and model.method not in methods:
                continue
            width, height = FRAMES[model.scale]
            pixels = pattern(width, height, 3, model.scale)
            totals, device, colour = [], [], []
            for i in range(frames + 1):
                started = time.monotonic()
                done = await upscaler.upscale_pixels(runtime, pixels, "RGB", model.scale, model.method,
                                                     started + runtime.settings.request_timeout_s)
                if i:  # the first frame pays lazy initialisation
                    totals.append((time.monotonic() - started) * 1000)
                    device.append(done.infer_s * 1000)
                    colour.append((done.split_s + done.merge_s) * 1000)
            rows.append({"method": model.method, "scale": model.scale, "backend": model.backend["backend"],
                         "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
                         "ms_per_frame": statistics.median(totals), "device_ms": statistics.median(device),
                         "colour_ms": statistics.median(colour)})
            print(f"{model.method:12s} x{model.scale} ({width}x{height} -> 1920x1080): "
                  f"{rows[-1]['ms_per_frame']:.0f} ms a frame", flush=True)
    finally:
        await runtime.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frames", description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", help="default: every learned method served")
    parser.add_argument("--frames", type=int, default=4, help="frames timed per method and scale")
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.methods, args.frames))
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"\n1080p output, median of {args.frames} frames (CUDA device: {cuda})")
    print("| method | scale | device | dtype | backend | ms a frame | ms per output Mpx | network ms, all workers | colour work ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | x{r['scale']} | {r['device']} | {r['dtype']} | {r['backend']} | "
              f"{r['ms_per_frame']:.0f} | {r['ms_per_frame'] / OUTPUT_MEGAPIXELS:.0f} | {r['device_ms']:.0f} | "
              f"{r['colour_ms']:.1f} |")


if __name__ == "__main__":
    main()
