"""``subpixel``: the command line.

    subpixel upscale photos/ -o big/ --scale 3 --method auto    # files and folders, recursively
    subpixel methods                                            # the table of methods
    subpixel serve --port 8000                                  # the server (python -m service)

``upscale`` talks to a running server (``--url``, ``SUBPIXEL_URL``; ``--api-key``,
``SUBPIXEL_API_KEY``) with at most ``--concurrency`` requests at once, skips outputs that exist
unless ``--overwrite``, goes on past a bad file, and ends with a summary; the exit status is 1
when any image failed, 2 when the server could not be reached or refused the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.client import DEFAULT_URL, APIError, AsyncClient, Client

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: dict[Path, str] = field(default_factory=dict)  # input -> error code

    def line(self) -> str:
        text = f"done {self.done}, skipped {self.skipped} (exist; --overwrite), failed {len(self.failed)}"
        if self.failed:
            codes = Counter(self.failed.values())
            text += " (" + ", ".join(f"{code} x{n}" for code, n in sorted(codes.items())) + ")"
        return text


def find_images(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(file, its path relative to the input it came from): folders are walked recursively."""
    found = []
    for given in inputs:
        if given.is_dir():
            found += [(p, p.relative_to(given)) for p in sorted(given.rglob("*"))
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            found.append((given, Path(given.name)))
    return found


def output_path(out_dir: Path, relative: Path, fmt: str | None, scale: int) -> Path:
    """``photo.png`` -> ``OUT/photo.x3.png``; the format's suffix when ``--format`` is given, else
    the server's default (JPEG and WebP stay, anything else becomes PNG)."""
    suffix = relative.suffix.lower()
    if fmt is not None:
        suffix = {"jpeg": ".jpg", "jpg": ".jpg"}.get(fmt, f".{fmt}")
    elif suffix not in (".jpg", ".jpeg", ".webp"):
        suffix = ".png"
    return out_dir / relative.with_name(f"{relative.stem}.x{scale}{suffix}")


async def upscale_all(args: argparse.Namespace) -> Summary:
    from tqdm import tqdm

    summary = Summary()
    work = []
    for source, relative in find_images(args.inputs):
        target = output_path(args.output, relative, args.format, args.scale)
        if target.exists() and not args.overwrite:
            summary.skipped += 1
        else:
            work.append((source, target))
    gate = asyncio.Semaphore(args.concurrency)
    bar = tqdm(total=len(work), unit="img", desc="upscale", disable=args.quiet)
    async with AsyncClient(args.url, api_key=args.api_key, timeout_s=args.timeout,
                           max_connections=args.concurrency) as client:

        async def one(source: Path, target: Path) -> None:
            async with gate:
                try:
                    result = await client.upscale(
                        source.read_bytes(), args.scale, args.method, format=args.format,
                        quality=args.quality, max_latency_ms=args.max_latency_ms,
                    )
                except APIError as error:
                    summary.failed[source] = error.code
                    bar.write(f"failed {source}: {error.status} {error.code}: {error.detail}")
                except (OSError, httpx.HTTPError) as error:
                    summary.failed[source] = type(error).__name__
                    bar.write(f"failed {source}: {error}")
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    result.save(target)
                    summary.done += 1
                bar.update(1)

        await asyncio.gather(*(one(s, t) for s, t in work))
    bar.close()
    return summary


def print_methods(url: str, api_key: str | None) -> None:
    with Client(url, api_key=api_key) as client:
        listing = client.methods()
    reference = listing["reference_set"]
    print(f"device {listing['device']}; PSNR on {reference} (dB); cost in ms per output megapixel")
    print(f"{'method':<14}{'family':<36}{'scale':>6}{'PSNR':>8}{'ms/MP':>10}  model")
    for m in listing["methods"]:
        for scale in m["scales"]:
            psnr = m["psnr_db"].get(str(scale), {}).get(reference)
            cost = m["ms_per_megapixel"].get(str(scale))
            print(f"{m['name']:<14}{m['family']:<36}{'x' + str(scale):>6}"
                  f"{'-' if psnr is None else f'{psnr:.2f}':>8}{'-' if cost is None else f'{cost:.0f}':>10}  "
                  f"{m['models'].get(str(scale), '')}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="subpixel", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def server_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--url", default=os.environ.get("SUBPIXEL_URL", DEFAULT_URL))
        q.add_argument("--api-key", default=os.environ.get("SUBPIXEL_API_KEY"))

    up = sub.add_parser("upscale", help="upscale files and folders through a running server")
    up.add_argument("inputs", nargs="+", type=Path, metavar="IN")
    up.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    up.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    up.add_argument("--method", default="espcn")
    up.add_argument("--format", choices=("png", "jpeg", "webp"), default=None)
    up.add_argument("--quality", type=int, default=None)
    up.add_argument("--max-latency-ms", type=float, default=None, help="with --method auto")
    up.add_argument("--concurrency", type=int, default=4)
    up.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    up.add_argument("--overwrite", action="store_true")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    server_options(up)

    methods = sub.add_parser("methods", help="print the methods with their measured quality and cost")
    server_options(methods)

    serve = sub.add_parser("serve", help="start the server (the settings come from SR_* variables)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "serve":
        from service.__main__ import main as serve

        serve([*(["--host", args.host] if args.host else []), *(["--port", str(args.port)] if args.port else [])])
        return 0
    try:
        if args.command == "methods":
            print_methods(args.url, args.api_key)
            return 0
        if args.concurrency < 1:
            raise SystemExit("--concurrency must be at least 1")
        summary = asyncio.run(upscale_all(args))
    except APIError as error:
        print(f"subpixel: {error.status} {error.code}: {error.detail}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"subpixel: cannot reach {args.url}: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    return 1 if summary.failed else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
