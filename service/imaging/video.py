"""Video in and out with PyAV (FFmpeg's libraries in its wheel): a reader that hands out a few
frames at a time as Y, U and V planes, and a writer that takes upscaled planes. Blocking calls,
made from the codec pool; the pipeline in between is ``serving.upscaler.upscale_video``.

Frames stay in YUV 4:2:0: the networks were trained on studio-swing luminance, which is what a
video's Y plane already is, so Y goes to the network as it is and U and V are upscaled with
bicubic; there is no RGB round trip. Audio packets are copied through untouched. The answer
keeps the input's container (MP4 and QuickTime: H.264; WebM: VP9), its frame rate, time base,
timestamps and rotation tag. Memory is bounded by the chunk: the reader decodes ``n`` frames
at a time and the writer encodes them as they come.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import InvalidImage, VideoTooLarge

# Our name -> (PyAV container format, media type, video encoder, its options).
CONTAINERS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "mp4": ("mp4", "video/mp4", "libx264", {"crf": "18", "preset": "veryfast"}),
    "mov": ("mov", "video/quicktime", "libx264", {"crf": "18", "preset": "veryfast"}),
    "webm": ("webm", "video/webm", "libvpx-vp9", {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
}
VIDEO_MEDIA_TYPES = {media: name for name, (_, media, _, _) in CONTAINERS.items()}


def looks_like_video(data: bytes) -> bool:
    """ISO BMFF (MP4, QuickTime: a ``ftyp`` box first) or Matroska/WebM (EBML magic)."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True)
class VideoHeader:
    container: str  # our name: mp4, mov or webm
    width: int
    height: int
    fps: float
    duration_s: float
    frames: int  # from the container, or duration x fps
    has_audio: bool


@dataclass(frozen=True)
class VideoLimits:
    max_input_pixels: int
    max_output_pixels: int
    max_duration_s: float
    max_frames: int
    max_output_pixels_per_s: float


def _container_name(container: Any) -> str:
    names = set(container.format.name.split(","))
    if "webm" in names or "matroska" in names:
        return "webm"
    return "mov" if container.format.name.startswith("mov") and "mp4" not in names else "mp4"


def _open(source: bytes | Path) -> Any:
    """A container from bytes in memory or a file (a job's input, never read whole)."""
    import av

    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidImage(f"the body is not a readable video: {exc}") from None
    if not container.streams.video:
        container.close()
        raise InvalidImage("the video has no video stream")
    return container


def _header(container: Any) -> VideoHeader:
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = float(container.duration or 0) / 1_000_000
    frames = int(stream.frames or round(duration * fps))
    return VideoHeader(_container_name(container), int(stream.codec_context.width),
                       int(stream.codec_context.height), fps, duration, frames, bool(container.streams.audio))


def check_video_limits(header: VideoHeader, scale: int, limits: VideoLimits) -> None:
    w, h = header.width, header.height
    if w < 2 or h < 2:
        raise InvalidImage(f"the video is {w}x{h}")
    if w * h > limits.max_input_pixels or w * h * scale * scale > limits.max_output_pixels:
        raise VideoTooLarge(f"x{scale} of {w}x{h} frames is over the pixel limits "
                            "(SR_MAX_INPUT_PIXELS, SR_MAX_OUTPUT_PIXELS)")
    if header.duration_s > limits.max_duration_s:
        raise VideoTooLarge(f"the video is {header.duration_s:.1f} s; the limit is "
                            f"{limits.max_duration_s} s (SR_MAX_VIDEO_DURATION_S)")
    if header.frames > limits.max_frames:
        raise VideoTooLarge(f"the video has {header.frames} frames; the limit is {limits.max_frames} "
                            "(SR_MAX_VIDEO_FRAMES)")
    rate = w * h * scale * scale * header.fps
    if rate > limits.max_output_pixels_per_s:
        raise VideoTooLarge(f"x{scale} at {header.fps:.2f} frames/s makes {rate:.0f} output pixels a second; "
                            f"the limit is {limits.max_output_pixels_per_s:.0f} (SR_MAX_VIDEO_OUTPUT_PIXELS_PER_S)")


def probe_video(source: bytes | Path, scale: int, limits: VideoLimits) -> VideoHeader:
    """The container's header and the limits checked against it, before a frame is decoded."""
    container = _open(source)
    try:
        header = _header(container)
    finally:
        container.close()
    check_video_limits(header, scale, limits)
    return header


@dataclass
class FramePlanes:
    """One frame in 4:2:0: Y (H, W), U and V (H/2, W/2), uint8, with its timestamp."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    pts: int | None


@dataclass
class Chunk:
    frames: list[FramePlanes]
    audio: list[Any] = field(default_factory=list)  # packets, to copy through
    done: bool = False


def _split_yuv420(frame: Any, width: int, height: int) -> FramePlanes:
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        frame = frame.reformat(width=width, height=height, format="yuv420p")
    packed = frame.to_ndarray(format="yuv420p")  # (H * 3/2, W): Y, then U and V row-packed
    y = packed[:height]
    chroma = packed[height:].reshape(2, height // 2, width // 2)
    return FramePlanes(np.ascontiguousarray(y), np.ascontiguousarray(chroma[0]),
                       np.ascontiguousarray(chroma[1]), frame.pts)


class VideoReader:
    """Demuxes the input; hands out up to ``n`` decoded frames at a time with the audio
    packets met on the way. Odd sizes lose their last row or column (4:2:0 needs even)."""

    def __init__(self, source: bytes | Path, limits: VideoLimits, scale: int) -> None:
        self.container = _open(source)
        self.header = _header(self.container)
        self.stream = self.container.streams.video[0]
        self.audio = list(self.container.streams.audio)
        self.width, self.height = self.header.width // 2 * 2, self.header.height // 2 * 2
        self._limits, self._count = limits, 0
        self._packets: Iterator[Any] = self.container.demux(self.stream, *self.audio)
        self._pending: list[FramePlanes] = []

    def read(self, n: int) -> Chunk:
        import av

        chunk = Chunk(frames=self._pending[:n])
        self._pending = self._pending[n:]
        try:
            while len(chunk.frames) < n:
                packet = next(self._packets, None)
                if packet is None:
                    chunk.done = not self._pending
                    break
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        chunk.audio.append(packet)
                    continue
                for frame in packet.decode():
                    self._count += 1
                    if self._count > self._limits.max_frames:
                        raise VideoTooLarge(f"the video has more than {self._limits.max_frames} frames "
                                            "(SR_MAX_VIDEO_FRAMES)")
                    planes = _split_yuv420(frame, self.width, self.height)
                    (chunk.frames if len(chunk.frames) < n else self._pending).append(planes)
        except av.FFmpegError as exc:
            raise InvalidImage(f"the video is truncated or corrupt at frame {self._count}: {exc}") from None
        return chunk

    def close(self) -> None:
        self.container.close()


class VideoWriter:
    """Encodes upscaled frames into the input's container, the audio copied through; into
    memory, or into the file ``destination`` (a job's result, never held whole)."""

    def __init__(self, reader: VideoReader, scale: int, destination: Path | None = None) -> None:
        import av

        self.name = reader.header.container
        fmt, self.media_type, codec, options = CONTAINERS[self.name]
        self._buffer = io.BytesIO() if destination is None else None
        self.container = av.open(self._buffer if destination is None else str(destination), mode="w", format=fmt)
        source = reader.stream
        rate = source.average_rate or Fraction(round(reader.header.fps * 1000), 1000)
        self.stream = self.container.add_stream(codec, rate=rate, options=dict(options))
        self.stream.width, self.stream.height = reader.width * scale, reader.height * scale
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = source.time_base
        if "rotate" in source.metadata:
            self.stream.metadata["rotate"] = source.metadata["rotate"]
        self.audio = {a.index: self.container.add_stream_from_template(a) for a in reader.audio}
        self.frames = 0

    def write(self, frames: list[FramePlanes], audio: list[Any]) -> None:
        import av

        for planes in frames:
            height, width = planes.y.shape
            packed = np.concatenate([planes.y.reshape(-1), planes.u.reshape(-1), planes.v.reshape(-1)])
            frame = av.VideoFrame.from_ndarray(packed.reshape(height * 3 // 2, width), format="yuv420p")
            frame.pts, frame.time_base = planes.pts, self.stream.time_base
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames += 1
        for packet in audio:
            packet.stream = self.audio[packet.stream.index]
            self.container.mux(packet)

    def close(self) -> bytes:
        """Flush the encoder and finish the container: the video's bytes, or b"" when it went
        to a file."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return b"" if self._buffer is None else self._buffer.getvalue()

    def abort(self) -> None:
        """Give up part-way (a failed or cancelled request): release FFmpeg's state."""
        import av

        try:
            self.container.close()
        except (av.FFmpegError, ValueError, OSError):
            pass  # an unfinished container may not close cleanly; it is discarded either way
