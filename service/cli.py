"""``subpixel``: the command line.

    subpixel upscale photos/ -o big/ --scale 3 --method auto    # files and folders, recursively
    subpixel upscale clip.mp4 -o big/ --scale 2                 # a video: a job, with its progress
    subpixel upscale media/ -o big/ --video                     # folders' videos too
    subpixel job status ID | job result ID -o FILE [--wait] | job cancel ID
    subpixel methods                                            # the table of methods
    subpixel serve --port 8000                                  # the server (python -m service)

``upscale`` talks to a running server (``--url``, ``SUBPIXEL_URL``; ``--api-key``,
``SUBPIXEL_API_KEY``) with at most ``--concurrency`` files at once, skips outputs that exist
unless ``--overwrite``, goes on past a bad file, and ends with a summary; the exit status is 1
when any file failed, 2 when the server could not be reached or refused the command, 130 when
interrupted. Images go to ``POST /v1/upscale``; videos (``.mp4``, ``.mov``, ``.webm``; any file
named with ``--video``), and images with ``--job``, go as jobs: uploaded and downloaded as
streams, a bar of frames each, and cancelled on the server by Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.client import (
    DEFAULT_URL,
    EXTENSIONS,
    VIDEO_TYPES,
    APIError,
    AsyncClient,
    Client,
    Job,
    sniff,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = tuple(VIDEO_TYPES)


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


def find_inputs(inputs: list[Path], videos: bool = False) -> list[tuple[Path, Path]]:
    """(file, its path relative to the input it came from): folders are walked recursively for
    images, and for videos too with ``videos`` (``--video``: a folder's videos are long jobs)."""
    wanted = IMAGE_SUFFIXES + (VIDEO_SUFFIXES if videos else ())
    found = []
    for given in inputs:
        if given.is_dir():
            found += [(p, p.relative_to(given)) for p in sorted(given.rglob("*"))
                      if p.is_file() and p.suffix.lower() in wanted]
        else:
            found.append((given, Path(given.name)))
    return found


def is_video(path: Path, forced: bool = False) -> bool:
    """By its suffix; with ``--video``, any file that is not named as an image too."""
    suffix = path.suffix.lower()
    return suffix in VIDEO_SUFFIXES or (forced and suffix not in IMAGE_SUFFIXES)


def video_suffix(path: Path) -> str:
    """The server keeps a video's container: its suffix, or what its first bytes say."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return path.suffix.lower()
    with path.open("rb") as file:
        return EXTENSIONS.get(sniff(file.read(16)), ".mp4")


def output_path(out_dir: Path, relative: Path, fmt: str | None, scale: int, video_suffix: str | None = None) -> Path:
    """``photo.png`` -> ``OUT/photo.x3.png``; the format's suffix when ``--format`` is given, else
    the server's default (JPEG and WebP stay, anything else becomes PNG). A video keeps its
    container (``video_suffix``): ``clip.mp4`` -> ``OUT/clip.x3.mp4``."""
    suffix = relative.suffix.lower()
    if video_suffix is not None:
        suffix = video_suffix
    elif fmt is not None:
        suffix = {"jpeg": ".jpg", "jpg": ".jpg"}.get(fmt, f".{fmt}")
    elif suffix not in (".jpg", ".jpeg", ".webp"):
        suffix = ".png"
    return out_dir / relative.with_name(f"{relative.stem}.x{scale}{suffix}")


def follow(bar: Any) -> Any:
    """An ``on_progress`` that moves a tqdm bar of frames to what the job's status says (it may
    go back: a job interrupted on the server starts again from its first frame)."""

    def update(job: Job) -> None:
        if job.frames_total and bar.total != job.frames_total:
            bar.total = job.frames_total
        bar.update(job.frames_done - bar.n)

    return update


async def run_job(client: AsyncClient, source: Path, target: Path, args: argparse.Namespace,
                  bar: Any, frames: bool) -> None:
    """Submit, wait with a bar of frames (``frames``), download; interrupted (Ctrl-C cancels
    the main task), it cancels the job on the server before it goes: nobody would collect it."""
    from tqdm import tqdm

    # A video keeps its container (the server refuses an image format for it): --format and
    # --quality are for the images of the run.
    image_options = {} if frames else {"format": args.format, "quality": args.quality}
    job = await client.submit_job(source, args.scale, args.method, max_latency_ms=args.max_latency_ms,
                                  **image_options)
    progress = tqdm(total=job.frames_total or None, unit="frame", desc=source.name, leave=False,
                    disable=args.quiet or not frames)
    try:
        job = await client.wait_job(job, on_progress=follow(progress))
        target.parent.mkdir(parents=True, exist_ok=True)
        await client.job_result(job, target)
    except asyncio.CancelledError:
        try:
            await client.cancel_job(job)
            bar.write(f"cancelled job {job.id} ({source})", file=sys.stderr)
        except (APIError, httpx.HTTPError) as error:
            bar.write(f"could not cancel job {job.id} ({source}): {error}", file=sys.stderr)
        raise
    finally:
        progress.close()


async def upscale_all(args: argparse.Namespace) -> Summary:
    from tqdm import tqdm

    summary = Summary()
    work = []
    for source, relative in find_inputs(args.inputs, videos=args.video):
        video = is_video(source, forced=args.video)
        try:
            target = output_path(args.output, relative, args.format, args.scale,
                                 video_suffix(source) if video else None)
        except OSError as error:
            summary.failed[source] = type(error).__name__
            print(f"failed {source}: {error}", file=sys.stderr)
            continue
        if target.exists() and not args.overwrite:
            summary.skipped += 1
        else:
            work.append((source, target, video))
    # A job holds its place in the gate until its result is down: at most --concurrency
    # uploads, bars and downloads at once, and no more jobs queued than that.
    gate = asyncio.Semaphore(args.concurrency)
    bar = tqdm(total=len(work), unit="file", desc="upscale", disable=args.quiet)
    async with AsyncClient(args.url, api_key=args.api_key, timeout_s=args.timeout,
                           max_connections=args.concurrency) as client:

        async def one(source: Path, target: Path, video: bool) -> None:
            async with gate:
                try:
                    if video or args.job:
                        await run_job(client, source, target, args, bar, frames=video)
                    else:
                        result = await client.upscale(
                            source.read_bytes(), args.scale, args.method, format=args.format,
                            quality=args.quality, max_latency_ms=args.max_latency_ms,
                        )
                        target.parent.mkdir(parents=True, exist_ok=True)
                        result.save(target)
                except APIError as error:  # a job's own problem too, when it failed
                    summary.failed[source] = error.code
                    bar.write(f"failed {source}: {error.status} {error.code}: {error.detail}")
                except (OSError, httpx.HTTPError) as error:
                    summary.failed[source] = type(error).__name__
                    bar.write(f"failed {source}: {error}")
                else:
                    summary.done += 1
                bar.update(1)

        try:
            await asyncio.gather(*(one(*item) for item in work))
        finally:
            bar.close()
    return summary


def job_command(args: argparse.Namespace) -> int:
    """``subpixel job status|result|cancel ID``."""
    from tqdm import tqdm

    with Client(args.url, api_key=args.api_key) as client:
        if args.action == "status":
            print(json.dumps(dataclasses.asdict(client.job(args.id)), indent=2))
        elif args.action == "cancel":
            job = client.cancel_job(args.id)
            print("deleted with its result" if job is None else
                  "asked to stop" if job.state == "running" else job.state)
        else:
            job = client.job(args.id)
            if args.wait:
                with tqdm(total=job.frames_total or None, unit="frame", desc=job.id[:8], leave=False) as bar:
                    job = client.wait_job(job, on_progress=follow(bar))
            path = client.job_result(job, args.output)
            print(f"{path}: {path.stat().st_size} bytes")
    return 0


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
    up.add_argument("--video", action="store_true",
                    help="walk folders for videos too, and send files not named as images as videos")
    up.add_argument("--job", action="store_true", help="send images as jobs too (videos always are)")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    server_options(up)

    job = sub.add_parser("job", help="a job on the server: its status, its result, or cancel it")
    actions = job.add_subparsers(dest="action", required=True)
    for name, text in (("status", "print the job's status (JSON)"), ("result", "download its result"),
                       ("cancel", "cancel it (running: ask it to stop; finished: delete it)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("id", metavar="ID", help="the job's id or URL")
        if name == "result":
            action.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
            action.add_argument("--wait", action="store_true", help="wait for it to finish, with its progress")
        server_options(action)

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
        if args.command == "job":
            return job_command(args)
        if args.concurrency < 1:
            raise SystemExit("--concurrency must be at least 1")
        summary = asyncio.run(upscale_all(args))
    except APIError as error:
        print(f"subpixel: {error.status} {error.code}: {error.detail}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"subpixel: cannot reach {args.url}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("subpixel: interrupted", file=sys.stderr)
        return 130
    print(summary.line())
    return 1 if summary.failed else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
