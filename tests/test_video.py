"""Video through the same pipeline: real files written by PyAV, every frame upscaled, timing,
frame rate and audio kept; bad and oversized videos are clear 4xx problems."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.imaging.borders import upscale_plane
from service.imaging.synthetic import synthetic_video as _synthetic

from .helpers import assert_problem, post

FPS = 12
FRAMES = 18
SIZE = (64, 48)  # width, height


def synthetic_video(container: str = "mp4", frames: int = FRAMES, audio: bool = True) -> bytes:
    return _synthetic(container, frames=frames, size=SIZE, fps=FPS, audio=audio)


def describe(data: bytes) -> dict[str, Any]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        lumas = [f.to_ndarray(format="yuv420p")[: stream.codec_context.height] for f in container.decode(stream)]
        container.seek(0)
        audio = container.streams.audio
        audio_packets = sum(1 for p in container.demux(audio[0]) if p.size) if audio else 0
        return {
            "format": container.format.name, "codec": stream.codec_context.name,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "frames": len(lumas), "rate": stream.average_rate, "lumas": lumas,
            "audio": [a.codec_context.name for a in audio], "audio_packets": audio_packets,
        }


@pytest.mark.parametrize(("container", "media_type", "codec"), [
    ("mp4", "video/mp4", "h264"), ("webm", "video/webm", "vp9"),
])
def test_a_video_comes_back_upscaled_with_its_timing_and_audio(
    client: TestClient, container: str, media_type: str, codec: str
) -> None:
    source = synthetic_video(container)
    response = post(client, source, media_type, scale=2, method="espcn")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media_type
    assert response.headers["X-SR-Frames"] == str(FRAMES)
    assert response.headers["X-SR-Model"].startswith("espcn-x2@")
    given, got = describe(source), describe(response.content)
    assert got["codec"] == codec and got["size"] == (SIZE[0] * 2, SIZE[1] * 2)
    assert got["frames"] == given["frames"] == FRAMES
    assert got["rate"] == given["rate"] == Fraction(FPS)
    # The audio is copied through: same codec, every packet.
    assert got["audio"] == given["audio"] and got["audio_packets"] == given["audio_packets"] > 0
    # Frame 0's Y is the network's upscale of the input's Y, up to the encoder's loss.
    model = client.app.state.runtime.models.get("espcn", 2)  # type: ignore[attr-defined]
    with torch.inference_mode():
        y = torch.from_numpy(given["lumas"][0]).float()
        expected = (upscale_plane(model.module, y / 255.0) * 255.0).clamp(0, 255).numpy()
    mse = np.mean((got["lumas"][0].astype(float) - expected) ** 2)
    assert 10 * np.log10(255**2 / mse) > 32


def test_an_octet_stream_video_is_recognised_and_bicubic_works(client: TestClient) -> None:
    response = post(client, synthetic_video(audio=False), "application/octet-stream", scale=3, method="bicubic")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4" and "X-SR-Model" not in response.headers
    assert describe(response.content)["size"] == (SIZE[0] * 3, SIZE[1] * 3)


def test_a_truncated_video_is_a_400(client: TestClient) -> None:
    source = synthetic_video()
    for cut in (40, len(source) // 3):
        response = post(client, source[:cut], "video/mp4", scale=2)
        assert_problem(response, 400, "invalid_image")
    assert post(client, image_bytes_ok(), "image/png", scale=2).status_code == 200  # nothing disturbed


def image_bytes_ok() -> bytes:
    from .helpers import image_bytes

    return image_bytes()


def test_video_limits_are_decided_from_the_header(make_client: Any) -> None:
    client = make_client(max_video_duration_s=1.0)
    long = post(client, synthetic_video(frames=24, audio=False), "video/mp4", scale=2)  # 2 s
    assert_problem(long, 413, "video_too_large")
    assert "SR_MAX_VIDEO_DURATION_S" in long.json()["detail"]
    rate = make_client(max_video_output_pixels_per_s=64 * 48 * 4 * 11)
    fast = post(rate, synthetic_video(audio=False), "video/mp4", scale=2)  # 12 frames/s
    assert_problem(fast, 413, "video_too_large")
    assert "SR_MAX_VIDEO_OUTPUT_PIXELS_PER_S" in fast.json()["detail"]
