"""Fitting and checking the ``auto`` gain estimate (``service.imaging.gain``).

    python -m service.gain fit                       # writes gain.json into the model store
    python -m service.gain validate --set BSD100 --scale 3   # Spearman(predicted, measured)

The fit uses the training images (``train/``, never ``eval/``): the proxy gain of each LR input
against espcn's measured PSNR gain over bicubic on it, through the server's own path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from service.config import SCALES, Settings
from service.imaging.codec import decode
from service.imaging.gain import GAIN_FILE, GainModel, load_gain_models, proxy_gain_db
from service.imaging.planes import luma_and_rest
from service.offline.datasets import TRAIN_SETS, datasets_root
from service.offline.evaluate import (
    Poster,
    Sample,
    benchmark_samples,
    directory_samples,
    in_process_client,
    score_method,
)


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
    p = argparse.ArgumentParser(prog="python -m service.gain", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    p.add_argument("--model-store", type=Path, default=None, help="default: SR_MODEL_STORE or model_store/")
    fit = sub.add_parser("fit", help="fit on train/ and write gain.json into the model store")
    fit.add_argument("--scales", nargs="+", type=int, default=list(SCALES))
    fit.add_argument("--images", type=int, default=120, help="training images used (every k-th)")
    val = sub.add_parser("validate", help="Spearman of predicted vs measured gain on a benchmark set")
    val.add_argument("--set", default="BSD100")
    val.add_argument("--scale", type=int, default=3)
    args = p.parse_args(argv)
    store = args.model_store or Settings().model_store
    gain_file = store / GAIN_FILE

    with in_process_client(store) as client:  # the server's own models and path
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
            gain_file.write_text(json.dumps(result, indent=2) + "\n")
        else:
            models = load_gain_models(gain_file)
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
