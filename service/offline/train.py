"""Train a sub-pixel model on T91 + BSDS200 and write it into the model store.

    python -m service.train --scale 3                    # espcn x3, paper recipe
    python -m service.train --scale 3 --arch espcn-large
    python -m service.train --replay model_store/espcn-x3/4   # train a shipped model again

Recipe (Shi et al. 2016 and its reproductions): Y channel only; HR sub-images of 17r px with
their LR inputs made by MATLAB-style bicubic downscaling; random flips and 90-degree rotations;
MSE loss; a learning rate that decays log-linearly; the last layer learns 10x slower. The LR
input patch carries a halo of the network's receptive radius around the 17x17 LR centre and
the loss is taken on the centre only, which is the paper's padding-free training: no loss is
spent teaching the network about zero padding that inference never sees inside an image.

Resumable: the state is checkpointed (safetensors + JSON) every ``--checkpoint-every`` steps
into ``--work-dir``; running the same command again continues where it stopped. A run resumed
with other settings (say a warm restart, ``--restart-schedule``) is a new segment; the card
records every segment's command and first step, and ``--replay`` runs them again in order.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shlex
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from service.config import SCALES, Settings
from service.imaging.borders import upscale_plane
from service.imaging.measures import psnr
from service.models.device import resolve_device
from service.models.registry import ARCHITECTURES, count_parameters, macs_per_lr_pixel
from service.models.store import WEIGHTS_FILE, ModelCard, load_weights, sha256_of, write_model_dir
from service.offline import cards, require_train_extra
from service.offline.checkpoint import load_checkpoint, save_checkpoint
from service.offline.datasets import (
    TRAIN_SETS,
    TrainImage,
    check_shifts,
    eval_pairs,
    load_y,
    train_images,
)


def _shift(text: str) -> tuple[int, int]:
    try:
        dy, dx = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DY,DX, e.g. 2,2") from None
    return dy, dx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m service.train", description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=int, choices=SCALES)
    p.add_argument("--arch", default="espcn", choices=ARCHITECTURES.names())
    p.add_argument("--arch-args", default="{}", help="JSON of constructor arguments")
    p.add_argument("--steps", type=int, default=60_000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch", type=int, default=17, help="LR size of the supervised centre")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (Adam)")
    p.add_argument("--lr-final", type=float, default=1e-5)
    p.add_argument("--last-layer-lr-factor", type=float, default=0.1)
    p.add_argument(
        "--loss", choices=("mse", "l1"), default="mse",
        help="mse (the paper's), or l1 (what ECBSR and most later work train with; "
        "a final segment with mse fine-tunes for PSNR)",
    )
    p.add_argument(
        "--restart-schedule", action="store_true",
        help="this segment's learning rate decays from --lr at the step it starts from, "
        "not from step 0 (a warm restart to fine-tune a finished run for longer)",
    )
    p.add_argument(
        "--resample", type=float, nargs="*", default=[],
        help="scale augmentation: also train on every image shrunk by these factors (e.g. 0.9 0.8 0.7 0.6)",
    )
    p.add_argument(
        "--shifts", type=_shift, nargs="*", default=[], metavar="DY,DX",
        help="phase augmentation: also train on every image with DY rows and DX columns cut "
        "off the top left (0 <= D < scale), so its LR pixels sample the scene at another phase",
    )
    p.add_argument(
        "--init-from", type=Path, default=None,
        help="a model directory whose weights start a fresh run where names and shapes match "
        "(e.g. the x3 body for an x2 model); ignored when a checkpoint exists",
    )
    p.add_argument(
        "--share", nargs="*", default=[], metavar="SET=FRACTION",
        help="the fraction of patches drawn from a training set (e.g. T91=0.5); the sets not "
        "named share the rest by area. Default: every set by its area",
    )
    p.add_argument(
        "--distill-from", type=Path, default=None, metavar="MODEL_DIR",
        help="a stronger model of the same scale (say espcn-large) whose output on every "
        "training LR image is blended into the target (knowledge distillation); train/ only",
    )
    p.add_argument(
        "--distill-weight", type=float, default=0.5,
        help="target = (1 - w) * HR + w * teacher output (with --distill-from)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device", default="auto",
        help="cpu, cuda, cuda:N; auto: cuda when there is one (checkpoints are device-free)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validate-every", type=int, default=1000)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (default runs/<name>)")
    p.add_argument("--model-store", type=Path, default=None, help="default: SR_MODEL_STORE or model_store/")
    p.add_argument("--version", default="1")
    p.add_argument(
        "--replay", type=Path, default=None, metavar="MODEL_DIR",
        help="train a shipped model again: run the segments its model.json records, in order "
        "(--scale is then taken from the card)",
    )
    p.add_argument(
        "--stop-at", type=int, default=None,
        help="checkpoint and stop at this step without exporting (how --replay re-runs a segment)",
    )
    p.add_argument(
        "--export", action="store_true",
        help="write the model directory from the last checkpoint without training further",
    )
    args = p.parse_args(argv)
    if args.scale is None and args.replay is None:
        p.error("--scale is required (or --replay MODEL_DIR)")
    if args.scale is not None:
        try:
            check_shifts(tuple(args.shifts), args.scale)
        except ValueError as exc:
            p.error(f"--shifts: {exc}")
    return args


class PatchSampler:
    """Random aligned (LR, HR) patch pairs with the 8 dihedral transforms.

    Bicubic downscaling by an integer factor of an image whose sides divide by it commutes
    with flips and 90-degree rotations, so transforming the pair keeps it a valid pair.
    """

    def __init__(
        self, images: list[TrainImage], scale: int, lr_size: int, seed: int,
        shares: dict[str, float] | None = None,
    ) -> None:
        self.images = [im for im in images if min(im.lr.shape) >= lr_size]
        self.scale = scale
        self.lr_size = lr_size
        self.weights = patch_weights(self.images, shares or {})
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        r, n = self.scale, self.lr_size
        picks = torch.multinomial(self.weights, batch_size, replacement=True, generator=self.generator)
        lrs, hrs = [], []
        for index in picks.tolist():
            im = self.images[index]
            top = self.rng.randrange(im.lr.shape[0] - n + 1)
            left = self.rng.randrange(im.lr.shape[1] - n + 1)
            lr = im.lr[top : top + n, left : left + n]
            hr = im.hr[top * r : (top + n) * r, left * r : (left + n) * r]
            k = self.rng.randrange(4)
            flip = self.rng.random() < 0.5
            lr, hr = torch.rot90(lr, k), torch.rot90(hr, k)
            if flip:
                lr, hr = lr.flip(-1), hr.flip(-1)
            lrs.append(lr)
            hrs.append(hr)
        return torch.stack(lrs)[:, None], torch.stack(hrs)[:, None]


def patch_weights(images: list[TrainImage], shares: dict[str, float]) -> torch.Tensor:
    """Probability of drawing each image: by area, with the named sets scaled to their share.

    By area alone every LR pixel is equally likely, so BSDS200 (30.9 Mpx) gives 85% of the
    patches and T91 (5.4 Mpx, the paper's whole training set) 15%.
    """
    if not shares:
        # Computed exactly as before --share existed, so replays of older runs draw the same.
        areas32 = torch.tensor([float(im.lr.numel()) for im in images])
        return areas32 / areas32.sum()
    areas = torch.tensor([float(im.lr.numel()) for im in images], dtype=torch.float64)
    sources = [im.source for im in images]
    unknown = set(shares) - set(sources)
    if unknown:
        raise ValueError(f"--share names no training images: {', '.join(sorted(unknown))}")
    named = sum(shares.values())
    if any(f < 0 for f in shares.values()) or named > 1.0 + 1e-9:
        raise ValueError(f"--share fractions must be >= 0 and add up to at most 1, got {shares}")
    rest = torch.tensor([s not in shares for s in sources])
    weights = torch.zeros_like(areas)
    if rest.any():
        weights[rest] = areas[rest] / areas[rest].sum() * (1.0 - named)
    for name, fraction in shares.items():
        mine = torch.tensor([s == name for s in sources])
        weights[mine] = areas[mine] / areas[mine].sum() * fraction
    return (weights / weights.sum()).float()


def parse_shares(items: list[str]) -> dict[str, float]:
    shares = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--share {item!r}: expected SET=FRACTION, e.g. T91=0.5")
        shares[name] = float(value)
    return shares


def distilled_targets(images: list[TrainImage], teacher: nn.Module, weight: float) -> list[TrainImage]:
    """Blend a teacher's output into every training target: (1 - w) * HR + w * teacher(LR).

    The teacher sees the whole LR training image through the server's own inference path
    (border extension included), once, before training; the patches then crop the blended
    target like any HR plane. Only ``train/`` images pass through here, never ``eval/``.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--distill-weight must be in 0..1, got {weight}")
    teacher = teacher.eval()
    blended = []
    with torch.inference_mode():
        for im in images:
            taught = upscale_plane(teacher, im.lr).clamp(0.0, 1.0)
            blended.append(dataclasses.replace(im, hr=(1.0 - weight) * im.hr + weight * taught))
    return blended


LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def learning_rate(step: int, total: int, start: float, final: float) -> float:
    """Log-linear decay from ``start`` to ``final`` (the paper's 0.01 -> 0.0001 shape)."""
    fraction = min(step / max(total, 1), 1.0)
    return start * (final / start) ** fraction


def validate(model: nn.Module, scale: int) -> float:
    """Mean Set5 PSNR on Y (shave r) of the raw network output: a training curve, not the card."""
    model.eval()
    scores = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for pair in eval_pairs("Set5", scale):
            lr = (load_y(pair.lr_path).float() / 255.0).to(device)
            sr = upscale_plane(model, lr).clamp(0, 1).double().cpu() * 255.0
            scores.append(psnr(load_y(pair.hr_path), sr.round(), border=scale))
    model.train()
    return sum(scores) / len(scores)


def plot_curves(
    history: dict[str, list[Any]], path: Path, title: str, segments: list[dict[str, Any]] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_loss = plt.subplots(figsize=(7, 4))
    ax_loss.plot(history["loss_step"], history["loss"], color="tab:blue", lw=0.8)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    # L1 or MSE: each segment's command says which (the ecbsr runs change it mid-card).
    ax_loss.set_ylabel("training loss (0..1 scale)", color="tab:blue")
    ax_psnr = ax_loss.twinx()
    ax_psnr.plot(history["val_step"], history["val_psnr"], color="tab:red", marker=".")
    ax_psnr.set_ylabel("Set5 PSNR on Y (dB)", color="tab:red")
    for segment in (segments or [])[1:]:
        # A resumed run with other settings: mark where it took over.
        ax_loss.axvline(segment["from_step"], color="grey", ls="--", lw=0.8)
    ax_loss.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    require_train_extra("python -m service.train")

    args = parse_args(argv)
    args.model_store = args.model_store or Settings().model_store
    if args.replay is not None:
        work_dir = args.work_dir or Path("runs") / f"replay-{args.replay.parent.name}"
        replay(args.replay, work_dir, args.model_store)
        return
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    name = f"{args.arch}-x{args.scale}"
    work_dir = args.work_dir or Path("runs") / name
    arch_args = json.loads(args.arch_args)
    device = resolve_device(args.device)
    # Moved before the optimizer exists, so Adam's state follows the parameters' device.
    model = ARCHITECTURES.build(args.arch, scale=args.scale, **arch_args).to(device)
    last = set(map(id, model.last_layer().parameters()))
    body_params = [p for p in model.parameters() if id(p) not in last]
    optimizer = torch.optim.Adam(
        [
            {"params": body_params, "lr_factor": 1.0},
            {"params": list(model.last_layer().parameters()), "lr_factor": args.last_layer_lr_factor},
        ],
        lr=args.lr,
    )
    checkpoint = work_dir / "checkpoint"
    meta = load_checkpoint(checkpoint, model, optimizer) or {
        "step": 0,
        "seconds": 0.0,
        "history": {"loss_step": [], "loss": [], "val_step": [], "val_psnr": []},
    }
    history = meta["history"]
    argv_now = argv if argv is not None else _argv()
    segments = meta.setdefault("segments", [])
    if meta["step"] == 0 and args.init_from is not None and not args.export:
        copied = init_from(model, args.init_from)
        meta["initialised_from"] = {
            "model": str(args.init_from),
            "sha256": sha256_of(args.init_from / WEIGHTS_FILE),
            "tensors": copied,
        }
        print(f"initialised {len(copied)} tensors from {args.init_from}")
    shares = parse_shares(args.share)
    teacher_card = None
    if args.distill_from is not None and not args.export:
        teacher_card = ModelCard.read(args.distill_from)
        if teacher_card.scale != args.scale:
            raise SystemExit(f"--distill-from {args.distill_from} is x{teacher_card.scale}, not x{args.scale}")
        meta["distilled_from"] = {
            "model": str(args.distill_from),
            "sha256": sha256_of(args.distill_from / WEIGHTS_FILE),
            "weight": args.distill_weight,
        }
    if not args.export and (not segments or _command(segments[-1]["argv"]) != _command(argv_now)):
        # A resumed run may change the schedule: the card lists every command and its start.
        # (Where it writes and where it stops do not make a new segment: --replay adds them.)
        segments.append({"from_step": meta["step"], "argv": argv_now})
    # The sampler is seeded with seed + step wherever a run (re)starts, so a resume inside a
    # segment draws other patches than one uninterrupted run: recorded, --replay stops there too.
    resumed_at: list[int] = meta.setdefault("resumed_at", [])
    if 0 < meta["step"] < args.steps and not args.export and meta["step"] != segments[-1]["from_step"]:
        if meta["step"] not in resumed_at:
            resumed_at.append(meta["step"])
    # A warm restart decays over its own segment; otherwise over the whole run.
    schedule_from = segments[-1]["from_step"] if args.restart_schedule and segments else 0
    # The command line wins over a resumed checkpoint's per-group settings.
    optimizer.param_groups[0]["lr_factor"] = 1.0
    optimizer.param_groups[1]["lr_factor"] = args.last_layer_lr_factor
    if args.export:
        args.steps = meta["step"]
    print(f"{name}: {count_parameters(model)} parameters, {macs_per_lr_pixel(model)} MACs/LR px")
    if meta["step"] < args.steps:
        print("building training pairs (MATLAB bicubic) ...", flush=True)
        images = train_images(args.scale, resample=tuple(args.resample), shifts=tuple(args.shifts))
        if teacher_card is not None:
            print(f"teacher outputs from {args.distill_from} ...", flush=True)
            images = distilled_targets(images, load_weights(teacher_card), args.distill_weight)
        sampler = PatchSampler(images, args.scale, args.patch + 2 * model.halo, args.seed + meta["step"], shares)
    halo_hr = model.halo * args.scale
    model.train()
    # The logged loss is a moving average; a resumed run carries it on rather than restart it.
    running = history["loss"][-1] if history["loss"] else None
    started = time.monotonic() - meta["seconds"]
    stop = min(args.steps, args.stop_at) if args.stop_at is not None else args.steps
    bar = tqdm(
        range(meta["step"], stop), initial=meta["step"], total=args.steps, desc=name,
        mininterval=30,
    )
    for step in bar:
        rate = learning_rate(step - schedule_from, args.steps - schedule_from, args.lr, args.lr_final)
        for group in optimizer.param_groups:
            group["lr"] = rate * group["lr_factor"]
        lr, hr = (t.to(device, non_blocking=True) for t in sampler.sample(args.batch_size))
        sr = model(lr)[..., halo_hr:-halo_hr, halo_hr:-halo_hr]
        loss = LOSSES[args.loss](sr, hr[..., halo_hr:-halo_hr, halo_hr:-halo_hr])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        done = step + 1
        if done % 100 == 0:
            history["loss_step"].append(done)
            history["loss"].append(running)
            bar.set_postfix(loss=f"{running:.2e}", lr=f"{rate:.1e}")
        if done % args.validate_every == 0 or done == args.steps:
            history["val_step"].append(done)
            history["val_psnr"].append(validate(model, args.scale))
            bar.write(f"step {done}: Set5 PSNR {history['val_psnr'][-1]:.3f} dB")
        if done % args.checkpoint_every == 0 or done in (args.steps, stop):
            meta = {"step": done, "seconds": time.monotonic() - started, "history": history,
                    "segments": segments, "resumed_at": resumed_at, "initialised_from": meta.get("initialised_from"),
                    "distilled_from": meta.get("distilled_from")}
            save_checkpoint(checkpoint, model, optimizer, meta)
    seconds = time.monotonic() - started
    if stop < args.steps:
        print(f"stopped at step {stop} of {args.steps}; checkpoint in {work_dir}")
        return
    # An --export call only writes the weights: the batch, patch and threads that trained them
    # are those of the last segment's command, not the export command's defaults.
    trained_by = parse_args(segments[-1]["argv"]) if segments else args
    training = {
        "data": [f"train/{s}" for s in TRAIN_SETS],
        # The command that trained the final weights (an --export call only writes them).
        "command": _command(segments[-1]["argv"] if segments else argv_now),
        "segments": [{"from_step": seg["from_step"], "command": _command(seg["argv"])} for seg in segments],
        "resumed_at": resumed_at,
        "initialised_from": meta.get("initialised_from"),
        "distilled_from": meta.get("distilled_from"),
        "steps": args.steps,
        "batch_size": trained_by.batch_size,
        "hr_patch_px": trained_by.patch * args.scale,
        "duration_s": round(seconds, 1),
        "threads": trained_by.threads,
        "device": device.type,
        "final_set5_psnr_training_curve": history["val_psnr"][-1] if history["val_psnr"] else None,
    }
    model_dir = write_model_dir(
        args.model_store, model.cpu(), arch=args.arch, arch_args=arch_args, version=args.version,
        training=training,
    )
    plot_curves(history, model_dir / "curve.png", f"{name}: loss and Set5 PSNR (dashes: resumed)", segments)
    cards.write(model_dir)
    print(f"wrote {model_dir} ({seconds / 60:.1f} min)")


def init_from(model: nn.Module, model_dir: Path) -> list[str]:
    """Copy the tensors of ``model_dir``'s weights whose names and shapes match ``model``'s."""
    from safetensors.torch import load_file

    source = load_file(str(model_dir / WEIGHTS_FILE))
    own = model.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return sorted(matching)


def replay(card_dir: Path, work_dir: Path, model_store: Path) -> None:
    """Re-run the recorded segments of a model card in order, each up to where the next began.

    The sampler is seeded with ``seed + step`` at every (re)start, so replay stops and restarts
    where the original did (each segment's start and every resume the card records) and draws
    the same patches: this is how a shipped model is trained again. Cards written before
    resumes were recorded (no ``resumed_at``) replay each segment in one go, so a segment that
    was resumed across sessions draws other patches than it did. A replay resumes like any run
    when stopped.
    """
    training = json.loads((card_dir / "model.json").read_text())["training"]
    segments = training["segments"]
    resumed_at = training.get("resumed_at", [])
    for index, segment in enumerate(segments):
        argv = shlex.split(segment["command"])[3:]  # after "python -m service.train"
        argv += ["--work-dir", str(work_dir), "--model-store", str(model_store)]
        end = segments[index + 1]["from_step"] if index + 1 < len(segments) else None
        stops = [s for s in resumed_at if s > segment["from_step"] and (end is None or s < end)]
        for stop in [*sorted(stops), end]:
            run = argv if stop is None else [*argv, "--stop-at", str(stop)]
            print("replaying: python -m service.train " + " ".join(run), flush=True)
            main(run)


def _command(argv: list[str]) -> str:
    """The command line as the card records it: without where it wrote, which is local."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--model-store", "--work-dir", "--stop-at", "--device"):
            skip = True
        elif arg != "--export":
            kept.append(arg)
    return " ".join(["python -m service.train", *kept])


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
