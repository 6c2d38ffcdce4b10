"""PSNR/SSIM helpers and the MATLAB-compatible downscaler, against known values and files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from service.imaging.matlab_resize import downscale_uint8, imresize
from service.imaging.measures import psnr, ssim

from .helpers import DATA


def test_psnr_known_values() -> None:
    a = torch.zeros(8, 8)
    assert psnr(a, a) == math.inf
    # MSE 1 -> 10 log10(255^2) = 48.1308 dB
    assert psnr(a, a + 1) == pytest.approx(48.1308, abs=1e-4)
    # MSE 100 -> 28.1308 dB; only the unshaved centre counts
    b = a.clone()
    b[2:-2, 2:-2] = 10
    assert psnr(a, b, border=2) == pytest.approx(28.1308, abs=1e-4)


def test_psnr_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(4, 4), torch.zeros(4, 5))


def test_ssim_known_values() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 255, (32, 32)))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    # A constant offset keeps structure and contrast; the luminance term alone drops.
    mu = 128.0
    c1 = (0.01 * 255) ** 2
    flat = torch.full((16, 16), mu)
    expected = (2 * mu * (mu + 20) + c1) / (mu**2 + (mu + 20) ** 2 + c1)
    assert ssim(flat, flat + 20) == pytest.approx(expected, abs=1e-9)
    noise = torch.from_numpy(rng.normal(0, 1, (32, 32)))
    assert 1.0 > ssim(x, x + 10 * noise) > ssim(x, x + 60 * noise) > 0.0


def test_imresize_keeps_a_constant_and_halves_sizes() -> None:
    flat = torch.full((3, 10, 14), 77.0, dtype=torch.float64)
    out = imresize(flat, 0.5)
    assert out.shape == (3, 5, 7)
    assert torch.allclose(out, torch.full_like(out, 77.0))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscaler_matches_the_benchmark_lr_files(scale: int) -> None:
    close, total = 0, 0
    for hr_path in sorted((DATA / "eval" / "Set5" / f"x{scale}" / "HR").glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"), dtype=np.float64)
        lr = np.asarray(Image.open(hr_path.parent.parent / "LR" / hr_path.name).convert("RGB"), dtype=np.int64)
        ours = downscale_uint8(torch.from_numpy(hr).permute(2, 0, 1), scale).permute(1, 2, 0).numpy()
        assert ours.shape == lr.shape
        diff = np.abs(ours.astype(np.int64) - lr)
        close += int((diff <= 1).sum())
        total += diff.size
    assert close / total >= 0.99
