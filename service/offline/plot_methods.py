"""Plot quality against cost for every method and scale on this machine.

    python -m service.offline.plot_methods --out docs/methods.png

PSNR is Set14 (from the model cards and the classical table); cost is the server's own
calibrated ms per output megapixel (processing plus PNG encode), measured when this runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from service.offline import require_train_extra
from service.offline.evaluate import in_process_client

MARKERS = {2: "o", 3: "s", 4: "^"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.plot_methods", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/methods.png"))
    p.add_argument("--set", default="Set14")
    args = p.parse_args(argv)
    require_train_extra("python -m service.offline.plot_methods")
    with in_process_client() as client:
        methods = client.get("/v1/methods").json()["methods"]  # type: ignore[attr-defined]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, m in enumerate(methods):
        color = f"C{i}"
        for scale in m["scales"]:
            cost = m["ms_per_megapixel"].get(str(scale))
            psnr = m["psnr_db"].get(str(scale), {}).get(args.set)
            if cost is None or psnr is None:
                continue
            ax.scatter(cost, psnr, color=color, marker=MARKERS[scale],
                       label=m["name"] if scale == m["scales"][0] else None)
            ax.annotate(f"x{scale}", (cost, psnr), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms per output megapixel on this machine (processing + PNG encode, log)")
    ax.set_ylabel(f"{args.set} PSNR on Y (dB)")
    ax.set_title("Quality vs cost per method (o x2, s x3, ^ x4)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
