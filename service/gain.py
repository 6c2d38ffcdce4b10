"""How much will a learned method gain over bicubic on *this* image? A cheap estimate.

The gain of a super-resolution network over bicubic depends on what the image holds: edges
it can sharpen gain a lot, flat or already blurred areas nothing, and random texture little.
A detail statistic alone does not separate edges from texture (measured: Spearman ~0.1 on the
training images), so the estimate asks the network itself, on a copy of the input shrunk once
more by r (MATLAB bicubic): images are self-similar across scales, and the network's gain in
reconstructing the LR input from that copy predicts its gain on the real upscale. The copy
has 1/r^2 of the input's pixels, so this costs about 1/r^4 of the request. A line maps that
proxy gain to the real one, fitted on the training images (``train/``, never ``eval/``):

    python -m service.gain fit                       # writes service/data/gain.json (x2, x3, x4)
    python -m service.gain validate --set BSD100 --scale 3   # Spearman(predicted, measured)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from service.inference import upscale_plane
from service.quality import shave
from service.resize import downscale_uint8

if TYPE_CHECKING:
    from service.evaluate import Poster, Sample

GAIN_FILE = Path(__file__).parent / "data" / "gain.json"
# Below this LR side the shrunk copy is too small to say anything.
MIN_PROXY_SIDE = 12


def proxy_gain_db(module: nn.Module, luma: torch.Tensor, scale: int) -> float | None:
    """The network's PSNR gain over bicubic when it rebuilds ``luma`` (H, W, 0..255) from a
    copy shrunk by ``scale``; None when the image is too small for that."""
    h, w = (luma.shape[0] // scale) * scale, (luma.shape[1] // scale) * scale
    if min(h, w) // scale < MIN_PROXY_SIDE:
        return None
    target = luma[:h, :w].to(torch.float64)
    small = downscale_uint8(target, scale)
    x = (small / 255.0).to(next(module.parameters()).dtype)
    device = next(module.parameters()).device
    with torch.inference_mode():
        learned = upscale_plane(module, x.to(device)).float().cpu().clamp(0, 1).double() * 255
        bicubic = F.interpolate(small[None, None], scale_factor=scale, mode="bicubic",
                                align_corners=False)[0, 0].clamp(0, 255)
    # PSNR difference = ratio of MSEs; the epsilon keeps a perfect (flat) image at 0 dB, not nan.
    eps = 1e-3
    mse_learned = float(((shave(target, scale) - shave(learned.round(), scale)) ** 2).mean()) + eps
    mse_bicubic = float(((shave(target, scale) - shave(bicubic.round(), scale)) ** 2).mean()) + eps
    return 10.0 * math.log10(mse_bicubic / mse_learned)


@dataclass(frozen=True)
class GainModel:
    intercept_db: float
    slope_db: float  # dB of real gain per dB of proxy gain

    def predict_db(self, proxy_db: float) -> float:
        return self.intercept_db + self.slope_db * proxy_db

    @classmethod
    def fit(cls, proxies: list[float], gains: list[float]) -> GainModel:
        """Least squares through the origin: an image with nothing for the network to do on
        the shrunk copy (a flat one) has nothing to gain on the real upscale either."""
        sxx = sum(x * x for x in proxies)
        slope = sum(x * g for x, g in zip(proxies, gains, strict=True)) / sxx if sxx else 0.0
        return cls(0.0, slope)


def load_gain_models(path: Path = GAIN_FILE) -> dict[int, GainModel]:
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {int(k[1:]): GainModel(v["intercept_db"], v["slope_db"]) for k, v in raw.items() if k.startswith("x")}


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> np.ndarray:
        order = np.argsort(values, kind="mergesort")
        r = np.empty(len(values))
        r[order] = np.arange(len(values), dtype=np.float64)
        # Ties share their average rank.
        arr = np.asarray(values)
        for v in np.unique(arr):
            idx = arr == v
            if idx.sum() > 1:
                r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _measure(scale: int, samples: list[Sample], client: Poster) -> tuple[list[float], list[float]]:
    """The proxy gain of each LR input, and espcn's measured PSNR gain over bicubic on it."""
    # The fit/validate commands use the evaluation tooling; the server, which imports this
    # module for the estimate alone, does not load it.
    from service.evaluate import score_method
    from service.imaging import decode
    from service.pipeline import luma_and_rest

    module = client.app.state.runtime.models.get("espcn", scale).module  # type: ignore[attr-defined]
    proxies, gains = [], []
    for sample in samples:
        # The proxy sees the luminance the server's `auto` computes (a grey image on the studio
        # swing), so the fitted line applies to what the server measures.
        decoded = decode(sample.lr_png, scale=scale, max_input_pixels=2**31, max_output_pixels=2**31)
        proxy = proxy_gain_db(module, luma_and_rest(decoded.pixels, decoded.mode)[0], scale)
        if proxy is None:
            continue
        proxies.append(proxy)
        learned = score_method(client, [sample], "espcn", scale).psnr_db
        bicubic = score_method(client, [sample], "bicubic", scale).psnr_db
        gains.append(learned - bicubic)
    return proxies, gains


def main(argv: list[str] | None = None) -> None:
    from service.datasets import TRAIN_SETS, datasets_root
    from service.evaluate import benchmark_samples, directory_samples, in_process_client

    p = argparse.ArgumentParser(prog="python -m service.gain", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit on train/ and write service/data/gain.json")
    fit.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    fit.add_argument("--images", type=int, default=120, help="training images used (every k-th)")
    val = sub.add_parser("validate", help="Spearman of predicted vs measured gain on a benchmark set")
    val.add_argument("--set", default="BSD100")
    val.add_argument("--scale", type=int, default=3)
    args = p.parse_args(argv)

    with in_process_client() as client:  # the server's own models and path
        if args.command == "fit":
            result: dict[str, object] = {}
            for scale in args.scales:
                samples = []
                for name in TRAIN_SETS:
                    samples += directory_samples(datasets_root() / "train" / name, scale)
                step = max(1, len(samples) // args.images)
                samples = samples[::step]
                proxies, gains = _measure(scale, samples, client)
                model = GainModel.fit(proxies, gains)
                rho = spearman([model.predict_db(x) for x in proxies], gains)
                result[f"x{scale}"] = {"intercept_db": model.intercept_db, "slope_db": model.slope_db,
                                       "images": len(samples), "spearman_train": rho,
                                       "mean_gain_db": statistics.fmean(gains)}
                print(f"x{scale}: gain = {model.intercept_db:.3f} + {model.slope_db:.3f} x proxy gain (dB) "
                      f"on {len(samples)} training images; Spearman (train) {rho:.3f}")
            result["command"] = "python -m service.gain " + " ".join(argv if argv is not None else sys.argv[1:])
            GAIN_FILE.parent.mkdir(exist_ok=True)
            GAIN_FILE.write_text(json.dumps(result, indent=2) + "\n")
        else:
            models = load_gain_models()
            if args.scale not in models:
                raise SystemExit(f"no gain model for x{args.scale}: run `python -m service.gain fit`")
            samples = benchmark_samples(args.set, args.scale)
            proxies, gains = _measure(args.scale, samples, client)
            predicted = [models[args.scale].predict_db(x) for x in proxies]
            rho = spearman(predicted, gains)
            errors = [abs(a - b) for a, b in zip(predicted, gains, strict=True)]
            print(f"{args.set} x{args.scale}: Spearman(predicted, measured gain) = {rho:.3f} over "
                  f"{len(gains)} images; median |error| {statistics.median(errors):.3f} dB; "
                  f"measured gain {min(gains):.2f}..{max(gains):.2f} dB")


if __name__ == "__main__":
    main()
