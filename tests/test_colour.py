from __future__ import annotations

import torch

from service.imaging.colour import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb


def test_matlab_rgb2ycbcr_reference_values() -> None:
    rgb = torch.tensor([[[0.0]], [[0.0]], [[0.0]]]), torch.tensor([[[255.0]], [[255.0]], [[255.0]]])
    black, white = (rgb_to_ycbcr(x)[:, 0, 0].tolist() for x in rgb)
    assert [round(v, 3) for v in black] == [16.0, 128.0, 128.0]
    assert [round(v, 3) for v in white] == [235.0, 128.0, 128.0]
    red = rgb_to_ycbcr(torch.tensor([255.0, 0.0, 0.0])[:, None, None])[:, 0, 0]
    assert torch.allclose(red, torch.tensor([16 + 65.481, 128 - 37.797, 240.0]), atol=1e-4)


def test_round_trip_is_lossless_in_float() -> None:
    rgb = torch.rand(2, 3, 5, 7) * 255
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-3)


def test_y_only_matches_full_transform() -> None:
    rgb = torch.rand(3, 4, 4) * 255
    assert torch.allclose(rgb_to_y(rgb), rgb_to_ycbcr(rgb)[0])
