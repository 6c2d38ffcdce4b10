"""Animated PNG, WebP and GIF come back animated: every frame upscaled, durations, loop count and
disposal kept, frames batched together; limits from the header."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.imaging.synthetic import pattern

from .helpers import assert_problem, decode, post

DURATIONS = [40, 120, 70, 200]


def frames_of(width: int = 24, height: int = 16, count: int = 4, alpha: bool = False) -> list[Image.Image]:
    """Distinct frames: the synthetic picture under different seeds."""
    mode = "RGBA" if alpha else "RGB"
    out = []
    for i in range(count):
        pixels = pattern(width, height, seed=i)
        image = Image.fromarray(pixels).convert(mode)
        if alpha:
            a = np.array(image)
            a[..., 3] = 255 - 40 * i  # each frame its own translucency
            image = Image.fromarray(a)
        out.append(image)
    return out


def animation(fmt: str, frames: list[Image.Image], durations: list[int] = DURATIONS, loop: int = 2,
              **options: Any) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=durations,
                   loop=loop, **options)
    return buffer.getvalue()


def read_frames(data: bytes) -> tuple[Image.Image, list[np.ndarray], list[int]]:
    image = Image.open(io.BytesIO(data))
    frames, durations = [], []
    for i in range(getattr(image, "n_frames", 1)):
        image.seek(i)
        frames.append(np.array(image.convert("RGBA")))
        durations.append(round(float(image.info.get("duration", 0))))
    image.seek(0)
    return image, frames, durations


def still_of(frame: Image.Image) -> bytes:
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "media_type", "answer_format"), [
    ("PNG", "image/png", "PNG"),  # APNG
    ("WEBP", "image/webp", "WEBP"),
])
@pytest.mark.parametrize("method", ["espcn", "bicubic"])
def test_an_animation_comes_back_animated_with_its_timing(
    client: TestClient, fmt: str, media_type: str, answer_format: str, method: str
) -> None:
    frames = frames_of()
    options = {"lossless": True} if fmt == "WEBP" else {}
    response = post(client, animation(fmt, frames, **options), media_type, scale=3, method=method)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["X-SR-Frames"] == "4"
    image, out, durations = read_frames(response.content)
    assert image.format == answer_format and len(out) == 4
    assert image.size == (72, 48)
    assert durations == DURATIONS
    assert image.info.get("loop") == 2
    # Each frame is the still-image answer for that frame: in APNG to the level, but for the
    # rounding of a sum that sits on .5 (a frame's tiles share a batch with the other frames',
    # and torch's small-size convolution kernels sum in an order that depends on the batch,
    # 5e-7 apart); in WebP, whose answers are lossy (SR_WEBP_QUALITY), within what the encoder takes.
    for i in (0, 3):
        still = post(client, still_of(frames[i]), "image/png", scale=3, method=method)
        expected = np.array(decode(still.content).convert("RGBA")).astype(float)
        if fmt == "PNG":
            assert np.abs(out[i] - expected).max() <= 1 and (out[i] != expected).mean() < 1e-3
        else:
            mse = np.mean((out[i].astype(float) - expected) ** 2)
            assert 10 * np.log10(255**2 / mse) > 30


def test_a_gif_comes_back_as_apng_with_full_colour_and_alpha(client: TestClient) -> None:
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames_of(count=3)]
    gif = animation("GIF", frames, durations=[100, 50, 300], loop=0, disposal=[1, 2, 1])
    response = post(client, gif, "image/gif", scale=2)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image, out, durations = read_frames(response.content)
    assert len(out) == 3 and image.size == (48, 32) and durations == [100, 50, 300]
    assert image.info.get("loop") == 0
    # More colours than a GIF's palette could hold: the point of not answering GIF.
    assert len(np.unique(out[0].reshape(-1, 4), axis=0)) > 256
    webp = post(client, gif, "image/gif", scale=2, format="webp")
    assert webp.headers["content-type"] == "image/webp" and webp.headers["X-SR-Frames"] == "3"


def test_translucent_frames_keep_their_alpha(client: TestClient) -> None:
    frames = frames_of(alpha=True)
    response = post(client, animation("PNG", frames), "image/png", scale=2, method="bicubic")
    _, out, _ = read_frames(response.content)
    assert [int(np.median(f[..., 3])) for f in out] == [255, 215, 175, 135]


def test_a_still_gif_is_a_png_answer(client: TestClient) -> None:
    buffer = io.BytesIO()
    frames_of(count=1)[0].convert("P").save(buffer, format="GIF")
    response = post(client, buffer.getvalue(), "image/gif", scale=2)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert "X-SR-Frames" not in response.headers


def test_jpeg_cannot_hold_an_animation(client: TestClient) -> None:
    response = post(client, animation("PNG", frames_of()), "image/png", scale=2, format="jpeg")
    assert_problem(response, 422, "invalid_parameter")
    assert "format=png" in response.json()["detail"]


def test_frame_limits_are_decided_from_the_header(make_client: Any) -> None:
    client = make_client(max_frames=3, max_total_output_pixels=100_000)
    too_many = post(client, animation("PNG", frames_of(count=4)), "image/png", scale=2)
    assert_problem(too_many, 413, "image_too_large")
    assert "SR_MAX_FRAMES" in too_many.json()["detail"]
    # 3 frames of 100x80 at x2: 96,000 output pixels fit; at x3, 216,000 do not.
    frames = frames_of(100, 80, count=3)
    assert post(client, animation("PNG", frames, durations=DURATIONS[:3]), "image/png", scale=2).status_code == 200
    too_big = post(client, animation("PNG", frames, durations=DURATIONS[:3]), "image/png", scale=3)
    assert_problem(too_big, 413, "image_too_large")
    assert "SR_MAX_TOTAL_OUTPUT_PIXELS" in too_big.json()["detail"]


def test_a_gif_bomb_is_refused_from_its_header(client: TestClient) -> None:
    """A huge logical screen with many frames: refused before a frame is decoded."""
    import struct

    screen = b"GIF89a" + struct.pack("<HH", 30000, 30000) + b"\x00\x00\x00"
    frame = b"\x21\xf9\x04\x00\x01\x00\x00\x00" + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00"
    bomb = screen + frame * 5000 + b";"
    assert_problem(post(client, bomb, "image/gif", scale=2), 413, "image_too_large")
    truncated = animation("GIF", [f.convert("P") for f in frames_of()])[:-200]
    response = post(client, truncated, "image/gif", scale=2)
    assert response.status_code in (200, 400), response.text  # what survives, or invalid_image
    if response.status_code == 400:
        assert_problem(response, 400, "invalid_image")


def test_frames_share_batches(make_client: Any) -> None:
    import re

    client = make_client(max_batch_size=8)
    response = post(client, animation("PNG", frames_of(count=8), durations=[50] * 8), "image/png", scale=2)
    assert response.status_code == 200
    metrics = client.get("/metrics").text
    count = float(re.search(r'sr_batch_size_count\{method="espcn",scale="2"\} (\S+)', metrics)[1])  # type: ignore[index]
    tiles = float(re.search(r'sr_batch_size_sum\{method="espcn",scale="2"\} (\S+)', metrics)[1])  # type: ignore[index]
    assert tiles == 8 and count < 8  # eight one-tile frames in fewer batches than frames


def test_a_failing_frame_is_the_requests_own_problem(make_client: Any) -> None:
    """One frame's fault answers as that fault (not a generic 500 from the frames' task group)."""
    def broken(model: Any, batch: Any) -> Any:
        raise RuntimeError("injected fault")

    client = make_client(run_batch=broken)
    assert_problem(post(client, animation("PNG", frames_of()), "image/png", scale=2), 500, "inference_failed")
    slow = make_client(run_batch=lambda *a: __import__("time").sleep(0.5), request_timeout_s=0.2)
    assert_problem(post(slow, animation("PNG", frames_of()), "image/png", scale=2), 504, "deadline_exceeded")
