"""Quality of every method, with the field's protocol, through the server's own path.

    python -m service.evaluate                          # Set5, Set14, BSD100 x2/x3/x4, Markdown
    python -m service.evaluate --sets Set5 --scales 3 --json results.json
    python -m service.evaluate --hr-dir photos/ --scales 2   # your HR images; LR made here
    python -m service.evaluate --write-cards            # store the table in the model cards
    python -m service.evaluate --url http://host:8000   # a running server instead

Each LR image is POSTed to ``/v1/upscale`` (in process through the ASGI app unless ``--url``),
the PNG that comes back is converted to Y (BT.601, MATLAB ``rgb2ycbcr``), ``r`` pixels are
shaved from every border, and PSNR/SSIM are taken against the HR Y: the datasets README.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from service.config import SCALES, Settings
from service.imaging.colour import rgb_to_y
from service.imaging.measures import psnr, ssim
from service.imaging.resamplers import CLASSICAL_METHODS
from service.models.store import discover, update_card
from service.offline import cards
from service.offline.datasets import (
    EVAL_SETS,
    datasets_root,
    eval_pairs,
    hr_and_lr,
    load_rgb,
    load_y,
)
from service.serving.choice import CLASSICAL_QUALITY_FILE


class Poster(Protocol):
    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> Any: ...


@dataclass(frozen=True)
class Sample:
    name: str
    lr_png: bytes
    hr_y: torch.Tensor


def _png(rgb_or_l: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb_or_l).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def benchmark_samples(set_name: str, scale: int, root: Path | None = None) -> list[Sample]:
    return [
        Sample(p.name, p.lr_path.read_bytes(), load_y(p.hr_path))
        for p in eval_pairs(set_name, scale, root)
    ]


def directory_samples(hr_dir: Path, scale: int) -> list[Sample]:
    """HR images of your own: crop to a multiple of r, downscale as MATLAB, keep HR Y."""
    samples = []
    for path in sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")):
        hr, lr = hr_and_lr(load_rgb(path), scale)
        samples.append(Sample(path.stem, _png(lr.to(torch.uint8).permute(1, 2, 0).numpy()), rgb_to_y(hr)))
    return samples


@dataclass(frozen=True)
class Score:
    psnr_db: float
    ssim: float
    images: int


def score_method(client: Poster, samples: list[Sample], method: str, scale: int) -> Score:
    psnrs, ssims = [], []
    for sample in samples:
        response = client.post(
            f"/v1/upscale?scale={scale}&method={method}&format=png",
            content=sample.lr_png,
            headers={"Content-Type": "image/png"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"{method} x{scale} {sample.name}: HTTP {response.status_code} {response.text}")
        y = load_y(response.content)
        psnrs.append(psnr(sample.hr_y, y, border=scale))
        ssims.append(ssim(sample.hr_y, y, border=scale))
    return Score(statistics.fmean(psnrs), statistics.fmean(ssims), len(samples))


@contextmanager
def in_process_client(model_store: Path | None = None) -> Iterator[Poster]:
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = Settings(device="cpu") if model_store is None else Settings(device="cpu", model_store=model_store)
    with TestClient(create_app(settings)) as client:
        yield client


@contextmanager
def remote_client(url: str) -> Iterator[Poster]:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


def offered_methods(client: Poster) -> dict[str, list[int]]:
    models = client.get("/v1/models").json()["models"]  # type: ignore[attr-defined]
    offered: dict[str, list[int]] = {}
    for m in models:
        offered.setdefault(m["method"], []).append(m["scale"])
    return offered


def markdown(results: dict[str, dict[str, dict[str, Score]]], sets: list[str]) -> str:
    """Rows: scale x method; columns: PSNR / SSIM per set."""
    header = "| scale | method | " + " | ".join(f"{s} PSNR | {s} SSIM" for s in sets) + " |"
    lines = [header, "|" + "---|" * (2 + 2 * len(sets))]
    for scale_key in sorted(results):
        for method, per_set in results[scale_key].items():
            cells = []
            for s in sets:
                score = per_set.get(s)
                cells.append(f"{score.psnr_db:.2f} | {score.ssim:.4f}" if score else "- | -")
            lines.append(f"| {scale_key} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m service.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=list(EVAL_SETS))
    p.add_argument("--scales", nargs="+", type=int, default=list(SCALES))
    p.add_argument("--methods", nargs="+", default=None, help="default: bicubic and every method offered")
    p.add_argument("--hr-dir", type=Path, default=None, help="evaluate on your own HR images")
    p.add_argument("--datasets", type=Path, default=None, help="default: SR_DATASETS or ../shared/datasets")
    p.add_argument("--model-store", type=Path, default=None, help="default: SR_MODEL_STORE or model_store/")
    p.add_argument("--url", default=None, help="evaluate a running server")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--write-cards", action="store_true", help="store the results in model.json files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = args.datasets or datasets_root()
    sets = [args.hr_dir.name] if args.hr_dir else args.sets
    results: dict[str, dict[str, dict[str, Score]]] = {}
    context = remote_client(args.url) if args.url else in_process_client(args.model_store)
    with context as client:
        offered = offered_methods(client)
        for scale in args.scales:
            methods = args.methods or list(CLASSICAL_METHODS) + [
                m for m in sorted(offered) if scale in offered[m]
            ]
            per_scale = results.setdefault(f"x{scale}", {})
            for set_name in sets:
                samples = (
                    directory_samples(args.hr_dir, scale)
                    if args.hr_dir
                    else benchmark_samples(set_name, scale, root)
                )
                for method in methods:
                    score = score_method(client, samples, method, scale)
                    per_scale.setdefault(method, {})[set_name] = score
                    print(f"x{scale} {set_name} {method}: {score.psnr_db:.3f} dB, SSIM {score.ssim:.4f}",
                          file=sys.stderr, flush=True)
    print(markdown(results, sets))
    as_json = {
        scale: {m: {s: vars(score) for s, score in per.items()} for m, per in methods_.items()}
        for scale, methods_ in results.items()
    }
    if args.json:
        args.json.write_text(json.dumps(as_json, indent=2) + "\n")
    if args.write_cards:
        command = "python -m service.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
        write_cards(as_json, args.model_store, command)


def write_cards(results: dict[str, Any], model_store: Path | None, command: str) -> None:
    """Learned methods into their cards; the classical resamplers into the service's table."""
    store = model_store or Settings().model_store
    for card in discover(store):
        per_set = results.get(f"x{card.scale}", {}).get(card.method)
        if per_set is None:
            continue
        bicubic = results[f"x{card.scale}"].get("bicubic", {})
        table = {
            s: {
                "psnr_db": round(v["psnr_db"], 4),
                "ssim": round(v["ssim"], 5),
                "bicubic_psnr_db": round(bicubic[s]["psnr_db"], 4) if s in bicubic else None,
                "bicubic_ssim": round(bicubic[s]["ssim"], 5) if s in bicubic else None,
                "images": v["images"],
            }
            for s, v in per_set.items()
        }
        update_card(card.directory, benchmarks=table, benchmarks_command=command)
        cards.write(card.directory)
    classical = {
        scale: {m: per for m, per in methods_.items() if m in CLASSICAL_METHODS}
        for scale, methods_ in results.items()
    }
    table = store / CLASSICAL_QUALITY_FILE
    existing = json.loads(table.read_text()) if table.exists() else {}
    for scale, methods_ in classical.items():
        for method, per_set in methods_.items():
            existing.setdefault(scale, {}).setdefault(method, {}).update(per_set)
    existing["command"] = command
    table.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
