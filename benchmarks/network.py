"""The network alone on ONNX Runtime: the served unpadded form against the zero-padded one.

    python -m benchmarks.network                       # espcn x2/x3/x4, one thread
    python -m benchmarks.network --methods espcn espcn-large --threads 2

For each shipped model, a batch of ``--batch`` windows of ``--tile`` + 2 halo pixels (what the
batcher sends for a 128x128 image or tile) through two graphs exported from the same weights:
the module's ``forward`` (zero-padded, whose rim serving threw away) and its ``forward_valid``
(service.models.valid: only the centre). Prints the median ms a batch of each and the largest
difference between the served answer and the padded one's centre, in grey levels.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from benchmarks.run import REPO_ROOT
from service.imaging.borders import crop_borders
from service.models.backends import OnnxRunner, median_ms
from service.models.resident import ModelSet


class _Padded(nn.Module):
    """The zero-padded ``forward`` dressed as ``forward_valid``, for OnnxRunner's export."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.halo = module, module.halo

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(x)
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network", description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["espcn"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args(argv)
    models = ModelSet.load(REPO_ROOT / "model_store", torch.device("cpu"), torch.float32)
    print(f"| model | window | padded ms a batch of {args.batch} | unpadded ms | ratio | largest difference (levels) |")
    print("|---|---|---|---|---|---|")
    for model in sorted(models, key=lambda m: (m.method, m.scale)):
        if model.method not in args.methods:
            continue
        side = args.tile + 2 * model.halo
        x = torch.rand(args.batch, 1, side, side, generator=torch.Generator().manual_seed(0))
        padded = OnnxRunner(_Padded(model.module), args.threads)
        served = OnnxRunner(model.module, args.threads)
        # Interleaved, three rounds each, so a neighbour's burst hits both alike.
        times: dict[str, list[float]] = {"padded": [], "served": []}
        for _ in range(3):
            times["padded"].append(median_ms(padded, x, args.repeats))
            times["served"].append(median_ms(served, x, args.repeats))
        a, b = (statistics.median(times[k]) for k in ("padded", "served"))
        full, centre = padded(x), served(x)
        diff = (crop_borders(full, model.halo * model.scale) - centre).abs().max().item() * 255
        print(f"| {model.method} x{model.scale} | {side}x{side} | {a:.2f} | {b:.2f} | {b / a:.3f} | {diff:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
