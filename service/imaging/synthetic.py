"""A deterministic synthetic picture (and a clip of it panning, with a tone): what calibration
times, benchmarks send and tests check."""

from __future__ import annotations

import io

import numpy as np


def pattern(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """(height, width, channels) uint8: gradients, an edge, and some texture, like a photo's mix
    of smooth shading and detail (so PNG neither compresses it to nothing nor not at all)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 40 + 150 * (xx / max(width - 1, 1)) * (c % 2) + 100 * (yy / max(height - 1, 1)) * ((c + 1) % 2)
        base += 40 * ((xx + 2 * yy + 7 * c) % 9 < 4)
        base += rng.normal(0, 6, size=base.shape)
        planes.append(base)
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def synthetic_video(container: str = "mp4", frames: int = 18, size: tuple[int, int] = (64, 48),
                    fps: int = 12, audio: bool = True) -> bytes:
    """The picture panning one frame at a time, and a 440 Hz tone, written by PyAV: H.264 and
    AAC in MP4, or VP9 and Opus in WebM."""
    import av

    codec, audio_codec = {"mp4": ("libx264", "aac"), "webm": ("libvpx-vp9", "libopus")}[container]
    width, height = size
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        video = out.add_stream(codec, rate=fps, options={"crf": "10"} if container == "mp4" else {})
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream(audio_codec, rate=48000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        base = pattern(width + 2 * frames, height, seed=3)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, 2 * i : 2 * i + width]), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            samples, chunk = int(48000 * frames / fps), 960
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
            for start in range(0, samples - chunk + 1, chunk):
                piece = av.AudioFrame.from_ndarray(tone[:, start:start + chunk], format="flt", layout="mono")
                piece.sample_rate, piece.pts = 48000, start
                for packet in sound.encode(piece):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return buffer.getvalue()
