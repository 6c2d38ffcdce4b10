"""The shared image sets: where they live and how to read them as Y planes.

Training reads ``train/`` only; ``eval/`` is for measurement. LR training inputs are made with
the MATLAB-compatible downscaler, the same one that made the benchmark LR files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.config import Settings
from service.imaging.colour import rgb_to_y
from service.imaging.matlab_resize import downscale_uint8, resize_uint8

TRAIN_SETS = ("T91", "BSDS200")
EVAL_SETS = ("Set5", "Set14", "BSD100")


def datasets_root() -> Path:
    """The settings' ``datasets`` (``SR_DATASETS``; default ``../shared/datasets``)."""
    return Settings().datasets


def _open(source: Path | bytes) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def load_rgb(source: Path | bytes) -> torch.Tensor:
    """An image (a file, or encoded bytes) as a float64 (3, H, W) tensor in 0..255 (greyscale
    is repeated)."""
    with _open(source) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float64)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_y(source: Path | bytes) -> torch.Tensor:
    """Luminance of an image (a file, or encoded bytes such as the server's answer) with the
    protocol's rule: Y of BT.601 for colour, the grey value itself for L."""
    with _open(source) as img:
        if img.mode == "L":
            return torch.from_numpy(np.asarray(img, dtype=np.float64))
    return rgb_to_y(load_rgb(source))


@dataclass(frozen=True)
class EvalPair:
    name: str
    lr_path: Path
    hr_path: Path


def eval_pairs(set_name: str, scale: int, root: Path | None = None) -> list[EvalPair]:
    base = (root or datasets_root()) / "eval" / set_name / f"x{scale}"
    hr_files = sorted((base / "HR").glob("*.png"))
    if not hr_files:
        raise FileNotFoundError(f"no HR images in {base / 'HR'}")
    return [EvalPair(p.stem, base / "LR" / p.name, p) for p in hr_files]


@dataclass(frozen=True)
class TrainImage:
    """One training image as float32 Y planes scaled to 0..1."""

    lr: torch.Tensor  # (h, w)
    hr: torch.Tensor  # (h * r, w * r)
    source: str = ""  # the training set it comes from (T91, BSDS200)


def hr_and_lr(rgb: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An RGB image cropped to a multiple of ``scale`` (the HR) and that downscaled by
    ``scale`` as MATLAB does (the LR): how the benchmark pairs were made."""
    h = rgb.shape[-2] - rgb.shape[-2] % scale
    w = rgb.shape[-1] - rgb.shape[-1] % scale
    hr_rgb = rgb[:, :h, :w]
    return hr_rgb, downscale_uint8(hr_rgb, scale)


def make_train_pair(rgb: torch.Tensor, scale: int, source: str = "") -> TrainImage:
    """A training pair: the Y planes of :func:`hr_and_lr`, scaled to 0..1."""
    hr_rgb, lr_rgb = hr_and_lr(rgb, scale)
    return TrainImage(
        lr=(rgb_to_y(lr_rgb) / 255.0).float(),
        hr=(rgb_to_y(hr_rgb) / 255.0).float(),
        source=source,
    )


def check_shifts(shifts: tuple[tuple[int, int], ...], scale: int) -> None:
    """A phase shift cuts 0..scale-1 rows and columns; (0, 0) would only repeat the image."""
    for dy, dx in shifts:
        if not (0 <= dy < scale and 0 <= dx < scale) or (dy, dx) == (0, 0):
            raise ValueError(f"shift {dy},{dx}: each offset must be in 0..{scale - 1}, not both 0")


def train_images(
    scale: int,
    root: Path | None = None,
    *,
    resample: tuple[float, ...] = (),
    shifts: tuple[tuple[int, int], ...] = (),
) -> list[TrainImage]:
    """Training pairs from ``train/``; ``resample`` adds copies of every image shrunk first.

    Shrinking an HR image by 0.9 ... 0.6 (MATLAB bicubic, antialiased) before making its pair
    is the scale augmentation of SRCNN/FSRCNN/VDSR's "291 images": the same scenes with their
    detail at other frequencies, a cheap stand-in for a larger training set.

    ``shifts`` adds copies of every (unshrunk) image with its first ``dy`` rows and ``dx``
    columns cut off, 0 < d < scale: the LR grid then samples the scene at another sub-pixel
    phase, so the network sees the same detail land differently on the LR pixels.
    """
    check_shifts(shifts, scale)
    base = (root or datasets_root()) / "train"
    paths = [(name, p) for name in TRAIN_SETS for p in sorted((base / name).glob("*.png"))]
    if not paths:
        raise FileNotFoundError(f"no training images under {base}")
    pairs = []
    for name, path in paths:
        rgb = load_rgb(path)
        pairs.append(make_train_pair(rgb, scale, name))
        pairs.extend(make_train_pair(rgb[:, dy:, dx:], scale, name) for dy, dx in shifts)
        pairs.extend(make_train_pair(resize_uint8(rgb, factor), scale, name) for factor in resample)
    return pairs
