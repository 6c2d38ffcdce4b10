"""How much will a learned method gain over bicubic on *this* image? A cheap estimate.

The gain of a super-resolution network over bicubic comes from edges and texture it can
sharpen; a flat or already blurred image gives it nothing to do. The estimate is a line in the
log of the LR luminance's detail energy (mean absolute 3x3 Laplacian, grey levels), fitted on
the training images (``train/``, never ``eval/``):

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

import numpy as np
import torch
import torch.nn.functional as F

from service.datasets import TRAIN_SETS, datasets_root
from service.evaluate import (
    Poster,
    Sample,
    benchmark_samples,
    directory_samples,
    in_process_client,
    output_y,
    score_method,
)

GAIN_FILE = Path(__file__).parent / "data" / "gain.json"
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]


def detail_energy(luma: torch.Tensor) -> float:
    """Mean absolute Laplacian of an (H, W) 0..255 luminance plane."""
    y = luma.to(torch.float32)[None, None]
    if min(y.shape[-2:]) < 3:
        return 0.0
    return float(F.conv2d(y, _LAPLACIAN).abs().mean())


@dataclass(frozen=True)
class GainModel:
    intercept_db: float
    slope_db: float  # per unit of log(1 + detail energy)

    def predict_db(self, energy: float) -> float:
        return self.intercept_db + self.slope_db * math.log1p(energy)

    @classmethod
    def fit(cls, energies: list[float], gains: list[float]) -> GainModel:
        xs = [math.log1p(e) for e in energies]
        mx, my = statistics.fmean(xs), statistics.fmean(gains)
        var = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (g - my) for x, g in zip(xs, gains, strict=True)) / var if var else 0.0
        return cls(my - slope * mx, slope)


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
    """Detail energy of each LR input, and espcn's measured PSNR gain over bicubic on it."""
    energies, gains = [], []
    for sample in samples:
        energies.append(detail_energy(output_y(sample.lr_png)))
        learned = score_method(client, [sample], "espcn", scale).psnr_db
        bicubic = score_method(client, [sample], "bicubic", scale).psnr_db
        gains.append(learned - bicubic)
    return energies, gains


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.gain", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit on train/ and write service/data/gain.json")
    fit.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    fit.add_argument("--images", type=int, default=120, help="training images used (every k-th)")
    val = sub.add_parser("validate", help="Spearman of predicted vs measured gain on a benchmark set")
    val.add_argument("--set", default="BSD100")
    val.add_argument("--scale", type=int, default=3)
    args = p.parse_args(argv)

    with in_process_client() as client:
        if args.command == "fit":
            result: dict[str, object] = {}
            for scale in args.scales:
                samples = []
                for name in TRAIN_SETS:
                    samples += directory_samples(datasets_root() / "train" / name, scale)
                step = max(1, len(samples) // args.images)
                samples = samples[::step]
                energies, gains = _measure(scale, samples, client)
                model = GainModel.fit(energies, gains)
                rho = spearman([model.predict_db(e) for e in energies], gains)
                result[f"x{scale}"] = {"intercept_db": model.intercept_db, "slope_db": model.slope_db,
                                       "images": len(samples), "spearman_train": rho,
                                       "mean_gain_db": statistics.fmean(gains)}
                print(f"x{scale}: gain = {model.intercept_db:.3f} + {model.slope_db:.3f} log(1+E) dB "
                      f"on {len(samples)} training images; Spearman (train) {rho:.3f}")
            result["command"] = "python -m service.gain " + " ".join(argv if argv is not None else sys.argv[1:])
            GAIN_FILE.parent.mkdir(exist_ok=True)
            GAIN_FILE.write_text(json.dumps(result, indent=2) + "\n")
        else:
            models = load_gain_models()
            if args.scale not in models:
                raise SystemExit(f"no gain model for x{args.scale}: run `python -m service.gain fit`")
            samples = benchmark_samples(args.set, args.scale)
            energies, gains = _measure(args.scale, samples, client)
            predicted = [models[args.scale].predict_db(e) for e in energies]
            rho = spearman(predicted, gains)
            errors = [abs(a - b) for a, b in zip(predicted, gains, strict=True)]
            print(f"{args.set} x{args.scale}: Spearman(predicted, measured gain) = {rho:.3f} over "
                  f"{len(gains)} images; median |error| {statistics.median(errors):.3f} dB; "
                  f"measured gain {min(gains):.2f}..{max(gains):.2f} dB")


if __name__ == "__main__":
    main()
