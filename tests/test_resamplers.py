"""The classical operators and PixelShuffle, checked against the seed's documented values."""

from __future__ import annotations

import pytest
import torch

from service.imaging.resamplers import interpolate

SEED = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]


def test_bilinear_x2_half_pixel_centres() -> None:
    out = interpolate(SEED, 2, "bilinear", align_corners=False)
    assert out.shape == (1, 1, 4, 4)
    assert torch.allclose(out[0, 0, 0], torch.tensor([1.0, 1.25, 1.75, 2.0]))
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([1.0, 1.5, 2.5, 3.0]))


def test_bilinear_x2_align_corners() -> None:
    out = interpolate(SEED, 2, "bilinear", align_corners=True)
    assert torch.allclose(out[0, 0, 0], torch.tensor([1.0, 4 / 3, 5 / 3, 2.0]), atol=1e-4)
    assert out[0, 0, -1, -1] == 4.0


def test_nearest_repeats_pixels() -> None:
    out = interpolate(SEED, 3, "nearest")
    assert out[0, 0].tolist()[0] == [1, 1, 1, 2, 2, 2]
    assert torch.equal(out[0, 0, 3:, 3:], torch.full((3, 3), 4.0))


@pytest.mark.parametrize("align_corners", [False, True])
def test_bicubic_keeps_constant_images(align_corners: bool) -> None:
    flat = torch.full((1, 1, 5, 7), 9.0)
    out = interpolate(flat, 4, "bicubic", align_corners=align_corners)
    assert out.shape == (1, 1, 20, 28)
    assert torch.allclose(out, flat.new_full(out.shape, 9.0))


def test_bicubic_overshoots_at_an_edge_unlike_bilinear() -> None:
    # Keys' cubic has negative lobes: a step overshoots; bilinear stays within the range.
    step = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1)[None, None]
    assert interpolate(step, 2, "bicubic").max() > 1.0
    assert interpolate(step, 2, "bilinear").max() <= 1.0


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="nearest, bilinear, bicubic"):
        interpolate(SEED, 2, "lanczos")


@pytest.mark.parametrize("r", [2, 3, 4])
def test_pixel_shuffle_places_channel_i_r_plus_j_at_offset_i_j(r: int) -> None:
    h, w = 3, 5
    x = torch.arange(r * r * h * w, dtype=torch.float32).reshape(1, r * r, h, w)
    out = torch.nn.PixelShuffle(r)(x)
    assert out.shape == (1, 1, r * h, r * w)
    for i in range(r):
        for j in range(r):
            for y in range(h):
                for xx in range(w):
                    assert out[0, 0, y * r + i, xx * r + j] == x[0, i * r + j, y, xx]
