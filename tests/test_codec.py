"""The codec's PNG paths: fpng where it can write the image, Pillow for the rest; same pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.imaging.codec import encode
from service.imaging.synthetic import pattern


def _png(pixels: np.ndarray, mode: str, encoder: str, icc: bytes | None = None) -> bytes:
    return encode(pixels, mode, "png", quality=90, png_compress_level=1, icc_profile=icc, png_encoder=encoder)


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_both_encoders_write_the_same_pixels(mode: str, channels: int) -> None:
    pixels = pattern(37, 21, channels, seed=channels)
    fast, slow = _png(pixels, mode, "fpng"), _png(pixels, mode, "pillow")
    for data in (fast, slow):
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG" and img.mode == mode
            assert np.array_equal(np.asarray(img).reshape(21, 37, channels), pixels)


def test_fpng_writes_colour_and_pillow_the_rest() -> None:
    # fpng writes no zlib header options Pillow would; its files are recognisably its own size.
    colour = pattern(64, 64, 3)
    assert _png(colour, "RGB", "fpng") != _png(colour, "RGB", "pillow")
    grey = pattern(64, 64, 1)
    assert _png(grey, "L", "fpng") == _png(grey, "L", "pillow")  # grey: Pillow either way


def test_an_icc_profile_sends_the_image_through_pillow() -> None:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = _png(pattern(16, 16, 3), "RGB", "fpng", icc=profile)
    with Image.open(io.BytesIO(data)) as img:
        assert img.info.get("icc_profile") == profile
