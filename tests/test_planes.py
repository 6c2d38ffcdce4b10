"""The colour handling around a resampler or a network works in strips of rows, and the strips
give the answer the whole image would have given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.imaging import planes
from service.imaging.colour import rgb_to_ycbcr, ycbcr_to_rgb
from service.imaging.resamplers import interpolate

SHAPES = [(37, 29, "RGB"), (64, 50, "RGBA"), (33, 41, "L"), (21, 70, "LA"), (1, 9, "RGB"), (200, 3, "RGBA")]
CHANNELS = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}


def random_pixels(height: int, width: int, mode: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, CHANNELS[mode]), dtype=np.uint8)


def whole_image(pixels: np.ndarray, scale: int, method: str) -> np.ndarray:
    """The resampler on the whole image at once: what the strips must reproduce."""
    planes_ = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    up = interpolate(planes_, scale, method)[0].round().clamp(0, 255).to(torch.uint8)
    return up.permute(1, 2, 0).numpy()


@pytest.fixture
def small_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    # A few hundred output pixels per strip, so every test image is cut into many.
    monkeypatch.setattr(planes, "STRIP_OUTPUT_PIXELS", 300)
    monkeypatch.setattr(planes, "MIN_STRIP_ROWS", 1)


def test_strips_cover_every_row_once() -> None:
    for height in (1, 7, 100, 4096):
        ranges = planes.strips(height, 4096, 2)
        assert ranges[0][0] == 0 and ranges[-1][1] == height
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.usefixtures("small_strips")
def test_classical_strips_equal_the_whole_image(method: str, scale: int) -> None:
    for height, width, mode in SHAPES:
        pixels = random_pixels(height, width, mode)
        expected, got = whole_image(pixels, scale, method), planes.classical_upscale(pixels, scale, method)
        assert got.shape == expected.shape
        diff = np.abs(got.astype(int) - expected)
        if scale in (2, 4):  # source coordinates are exact in binary: bit for bit
            assert diff.max() == 0, (height, width, mode)
        else:  # 1/3 is not: a value on a rounding boundary may move by one level
            assert diff.max() <= 1 and (diff > 0).mean() < 0.002, (height, width, mode)


@pytest.mark.usefixtures("small_strips")
def test_aligned_corners_match_the_whole_image() -> None:
    pixels = random_pixels(37, 29, "RGB")
    planes_ = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    expected = interpolate(planes_, 3, "bicubic", align_corners=True)[0].round().clamp(0, 255)
    got = planes.classical_upscale(pixels, 3, "bicubic", align_corners=True)
    assert np.array_equal(got, expected.to(torch.uint8).permute(1, 2, 0).numpy())


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.usefixtures("small_strips")
def test_merge_is_y_from_the_network_and_bicubic_chroma(scale: int) -> None:
    """Colour: the network's Y, bicubic Cb/Cr (and alpha) of the input, back to RGB."""
    for height, width, mode in SHAPES:
        pixels = random_pixels(height, width, mode, seed=scale)
        model_input = planes.split_for_model(pixels, mode, scale)
        luma_hr = torch.rand(height * scale, width * scale) * 255  # seeded by conftest
        got = planes.merge_from_model(model_input, luma_hr).astype(int)
        assert got.shape == (height * scale, width * scale, CHANNELS[mode])
        up = interpolate(torch.from_numpy(pixels).permute(2, 0, 1)[None].float(), scale, "bicubic")
        if mode in ("RGB", "RGBA"):
            chroma = rgb_to_ycbcr(up[:, :3])[:, 1:]
            expected_rgb = ycbcr_to_rgb(torch.cat([luma_hr[None, None], chroma], 1))[0]
            expected_rgb = expected_rgb.round().clamp(0, 255).permute(1, 2, 0).numpy()
            # Bicubic is linear, so chroma of the upscaled RGB is the upscaled chroma, up to
            # float rounding and the clamping of RGB at 0 and 255.
            assert np.abs(got[..., :3] - expected_rgb).max() <= 1
        else:
            exact = ((luma_hr - 16) * 255 / 219).clamp(0, 255).numpy()
            # Equal to the level, but where the value lies within float rounding of a half
            # level: OpenCV's weighted add and torch order the arithmetic differently, and
            # 130.49999 and 130.50001 round apart (33 of 400 random draws at x4 held such a value).
            tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
            assert np.array_equal(got[..., 0][~tie], exact.round()[~tie])
            assert np.all(np.abs(got[..., 0][tie] - exact[tie]) <= 0.5 + 1e-3)
        if mode in ("RGBA", "LA"):
            alpha = up[0, -1].round().clamp(0, 255).numpy()
            # Alpha and chroma go through OpenCV's bicubic: within a level of interpolate's.
            assert np.abs(got[..., -1] - alpha).max() <= 1


def test_the_network_sees_studio_swing_y_and_the_rest_is_each_channel_less_its_share_of_y() -> None:
    pixels = random_pixels(20, 30, "RGB")
    luma, rest = planes.luma_and_rest(pixels, "RGB")
    rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    ycbcr = rgb_to_ycbcr(rgb)
    assert torch.allclose(luma, ycbcr[0, 0], atol=1e-4)
    # RGB = 255/219 (Y - 16) + terms in Cb and Cr alone: what bicubic carries is RGB - 255/219 Y.
    expected = (rgb[0] - 255 / 219 * ycbcr[0, :1]).permute(1, 2, 0).numpy()
    assert rest.shape == (20, 30, 3) and np.abs(rest - expected).max() < 1e-3
    rgba = random_pixels(20, 30, "RGBA")
    _, rest = planes.luma_and_rest(rgba, "RGBA")
    assert np.array_equal(rest[..., 3], rgba[..., 3].astype(np.float32))
    grey = random_pixels(20, 30, "L")
    luma, rest = planes.luma_and_rest(grey, "L")
    assert torch.allclose(luma, torch.from_numpy(grey[..., 0]).float() * 219 / 255 + 16)
    assert rest.shape == (20, 30, 0)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.usefixtures("small_strips")
def test_the_merges_bicubic_is_interpolates_to_within_a_hundredth_strip_by_strip(scale: int) -> None:
    for height, width, channels in ((1, 1, 1), (2, 7, 3), (37, 53, 4), (128, 128, 3)):
        plane = np.random.default_rng(height).random((height, width, channels), np.float32) * 255
        expected = interpolate(torch.from_numpy(plane).permute(2, 0, 1)[None], scale, "bicubic")[0]
        expected = expected.permute(1, 2, 0).numpy()
        got = np.concatenate([planes.bicubic_rows(plane, top, bottom, scale)
                              for top, bottom in planes.strips(height, width, scale)])
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 0.01


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_a_video_frames_chroma_is_bicubic_within_a_level(scale: int) -> None:
    plane = random_pixels(45, 80, "L", seed=scale)[..., 0]
    expected = interpolate(torch.from_numpy(plane)[None, None].float(), scale, "bicubic")[0, 0]
    got = planes.upscale_bicubic_uint8(plane, scale)
    assert got.shape == (45 * scale, 80 * scale) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.round().clamp(0, 255).numpy()).max() <= 1
