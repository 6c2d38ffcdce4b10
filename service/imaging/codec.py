"""The codec: bytes -> pixels -> bytes. Pure functions, called off the event loop.

Limits are checked from the header, before any pixel is decoded, so a decompression bomb costs
a few hundred bytes of parsing, not gigabytes of memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import fpng
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.config import OUTPUT_FORMATS
from service.errors import ImageTooLarge, InvalidImage, InvalidParameter, UnsupportedMediaType

# Pillow format name -> our format name.
INPUT_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Output formats that hold an animation: APNG and animated WebP. GIF comes in but does not go
# out: its 256-colour palette would undo the upscaling, so an animated GIF comes back as APNG
# (or animated WebP when asked), a still GIF as PNG.
ANIMATION_FORMATS = ("png", "webp")

_GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "PA", "LA", "La"}


@dataclass(frozen=True)
class Animation:
    """What an animation's frames keep on the way through: per-frame durations and disposal,
    and the loop count (0: for ever; None: play once, GIF without a loop extension)."""

    durations_ms: tuple[int, ...]
    loop: int | None
    disposal: tuple[int, ...] | None = None  # APNG dispose ops (GIF's mapped), where the input has them


@dataclass(frozen=True)
class DecodedImage:
    """Upright 8-bit pixels in one of L, LA, RGB, RGBA, with what must survive the trip. An
    animation has every frame composited to the full canvas (Pillow applies disposal and
    blending while decoding), all in one mode."""

    frames: tuple[np.ndarray, ...]  # uint8, (H, W, C) each, C = len(mode)
    mode: str
    format: str
    icc_profile: bytes | None
    animation: Animation | None = None

    @property
    def pixels(self) -> np.ndarray:
        """The image, or an animation's first frame."""
        return self.frames[0]

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def check_pixel_limits(
    width: int, height: int, scale: int, *, max_input_pixels: int, max_output_pixels: int
) -> None:
    if width * height > max_input_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {max_input_pixels} input pixels"
        )
    out = width * height * scale * scale
    if out > max_output_pixels:
        raise ImageTooLarge(
            f"x{scale} of {width}x{height} makes {out} output pixels; "
            f"the limit is {max_output_pixels}"
        )


# The largest side each output format can hold (JPEG: 65535 in its header, libjpeg refuses past
# 65500; WebP: 14 bits). Past it the encoder fails, so it is checked with the pixel limits.
FORMAT_MAX_SIDE = {"png": 2**31 - 1, "jpeg": 65500, "webp": 16383}


def check_frame_limits(
    width: int, height: int, scale: int, frames: int, *, max_frames: int, max_total_output_pixels: int
) -> None:
    if frames > max_frames:
        raise ImageTooLarge(f"the animation has {frames} frames; the limit is {max_frames} (SR_MAX_FRAMES)")
    total = width * height * scale * scale * frames
    if frames > 1 and total > max_total_output_pixels:
        raise ImageTooLarge(
            f"x{scale} of {frames} frames of {width}x{height} makes {total} output pixels; the limit "
            f"over all frames is {max_total_output_pixels} (SR_MAX_TOTAL_OUTPUT_PIXELS)"
        )


def check_format_limits(width: int, height: int, scale: int, fmt: str, frames: int = 1) -> None:
    if frames > 1 and fmt not in ANIMATION_FORMATS:
        raise InvalidParameter(
            f"{fmt} cannot hold an animation of {frames} frames; ask for format=png (APNG) or webp"
        )
    side, limit = max(width, height) * scale, FORMAT_MAX_SIDE[fmt]
    if side > limit:
        raise ImageTooLarge(
            f"x{scale} of {width}x{height} has a side of {side} pixels; {fmt} holds at most {limit}: "
            "ask for format=png"
        )


def _target_mode(image: Image.Image) -> str:
    if image.mode in _GREY_MODES:
        return "L"
    if image.mode in ("LA", "La"):
        return "LA"
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    if image.mode in _ALPHA_MODES:
        return "RGBA"
    return "RGB"


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded: enough to price the request."""

    width: int
    height: int
    channels: int  # of the decoded pixels: len(mode)
    format: str
    frames: int = 1


def _open(
    data: bytes, *, scale: int, max_input_pixels: int, max_output_pixels: int,
    max_frames: int = 1, max_total_output_pixels: int = 0,
) -> tuple[Image.Image, str, int]:
    """Open the image lazily (the header only) and check format, pixel and frame limits; the
    frame count comes from the header (APNG acTL, WebP ANIM) or, for GIF, a scan of the
    frames' headers that decodes no pixels."""
    if not data:
        raise InvalidImage("the body is empty; send the image bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("the body is not a PNG, JPEG or WebP image") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"the image header cannot be read: {exc}") from None
    fmt = INPUT_FORMATS.get(image.format or "")
    if fmt is None:
        image.close()
        raise UnsupportedMediaType(f"{image.format} images are not supported; send PNG, JPEG or WebP")
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise InvalidImage(f"the image is {width}x{height}")
    try:
        check_pixel_limits(
            width, height, scale, max_input_pixels=max_input_pixels, max_output_pixels=max_output_pixels
        )
        try:
            frames = int(getattr(image, "n_frames", 1))
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise InvalidImage(f"the animation's frames cannot be read: {exc}") from None
        check_frame_limits(width, height, scale, frames, max_frames=max_frames,
                           max_total_output_pixels=max_total_output_pixels or max_output_pixels)
    except (ImageTooLarge, InvalidImage):
        image.close()
        raise
    return image, fmt, frames


def probe(
    data: bytes, *, scale: int, max_input_pixels: int, max_output_pixels: int,
    max_frames: int = 1, max_total_output_pixels: int = 0,
) -> ImageHeader:
    """The header's size, channels, format and frames, with the same checks as :func:`decode`;
    reads no pixels, so admission can price a request before decoding it."""
    image, fmt, frames = _open(data, scale=scale, max_input_pixels=max_input_pixels,
                               max_output_pixels=max_output_pixels, max_frames=max_frames,
                               max_total_output_pixels=max_total_output_pixels)
    with image:
        channels = 4 if frames > 1 else len(_target_mode(image))  # animations decode as RGB(A)
        return ImageHeader(image.width, image.height, channels, fmt, frames)


def decode(
    data: bytes, *, scale: int, max_input_pixels: int, max_output_pixels: int,
    max_frames: int = 1, max_total_output_pixels: int = 0,
) -> DecodedImage:
    """Decode PNG/JPEG/WebP/GIF bytes into upright 8-bit pixels, checking limits first; an
    animation into all its frames."""
    image, fmt, frames = _open(data, scale=scale, max_input_pixels=max_input_pixels,
                               max_output_pixels=max_output_pixels, max_frames=max_frames,
                               max_total_output_pixels=max_total_output_pixels)
    if frames > 1:
        with image:
            return _decode_frames(image, fmt, frames)
    with image:
        icc = image.info.get("icc_profile")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            mode = _target_mode(upright)
            if upright.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # Wide greyscale: scale to 8 bits rather than clip.
                # float32 holds every 16-bit value exactly; in place, so one float copy.
                wide = np.array(upright, dtype=np.float32)
                top = 65535.0 if upright.mode.startswith("I;16") or wide.max() > 255 else 255.0
                wide *= 255.0 / top
                pixels = np.clip(np.rint(wide, out=wide), 0, 255, out=wide).astype(np.uint8)
            else:
                converted = upright if upright.mode == mode else upright.convert(mode)
                pixels = np.array(converted, dtype=np.uint8)  # writable: torch shares it
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise InvalidImage(f"the image data is truncated or corrupt: {exc}") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return DecodedImage(
        frames=(np.ascontiguousarray(pixels),), mode=mode, format=fmt, icc_profile=icc or None
    )


def _decode_frames(image: Image.Image, fmt: str, count: int) -> DecodedImage:
    """Every frame as RGBA, composited to the full canvas; RGB when no frame uses alpha."""
    frames, durations, disposal = [], [], []
    try:
        for index in range(count):
            image.seek(index)
            frames.append(np.array(image.convert("RGBA"), dtype=np.uint8))
            # Read after the frame has loaded: WebP sets its duration then.
            durations.append(round(float(image.info.get("duration", 0) or 0)))
            if fmt == "gif":  # GIF's 2 and 3 are APNG's 1 (background) and 2 (previous)
                disposal.append({2: 1, 3: 2}.get(int(getattr(image, "disposal_method", 0)), 0))
            elif "disposal" in image.info:  # APNG's own dispose op
                disposal.append(int(image.info["disposal"]))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"frame {len(frames)} of the animation is truncated or corrupt: {exc}") from None
    opaque = all(bool((frame[..., 3] == 255).all()) for frame in frames)
    mode = "RGB" if opaque else "RGBA"
    if opaque:
        frames = [np.ascontiguousarray(frame[..., :3]) for frame in frames]
    image.seek(0)
    animation = Animation(
        durations_ms=tuple(durations),
        loop=image.info.get("loop"),
        disposal=tuple(disposal) if len(disposal) == count else None,
    )
    return DecodedImage(frames=tuple(frames), mode=mode, format=fmt,
                        icc_profile=image.info.get("icc_profile") or None, animation=animation)


def encode_animation(
    frames: list[np.ndarray], mode: str, fmt: str, animation: Animation, *, quality: int, png_compress_level: int
) -> bytes:
    """Frames of one size and mode as APNG or animated WebP, with the durations, the loop count
    and (APNG) the dispose ops of the input. Every frame is a full canvas drawn over what was
    there (APNG blend op "source"), so the input's disposal stays right whatever it was."""
    images = [Image.fromarray(frame if frame.shape[2] > 1 else frame[:, :, 0]) for frame in frames]
    images = [image if image.mode == mode else image.convert(mode) for image in images]
    options: dict[str, object] = {"save_all": True, "append_images": images[1:],
                                  "duration": list(animation.durations_ms)}
    if animation.loop is not None:
        options["loop"] = animation.loop
    buffer = io.BytesIO()
    if fmt == "png":
        options.update(compress_level=png_compress_level, default_image=False, blend=0)
        if animation.disposal is not None:
            options["disposal"] = list(animation.disposal)
        images[0].save(buffer, format="PNG", **options)
    elif fmt == "webp":
        options.update(quality=quality)
        images[0].save(buffer, format="WEBP", **options)
    else:
        raise ValueError(f"{fmt} cannot hold an animation; known: {', '.join(ANIMATION_FORMATS)}")
    return buffer.getvalue()


def encode(
    pixels: np.ndarray,
    mode: str,
    fmt: str,
    *,
    quality: int,
    png_compress_level: int,
    icc_profile: bytes | None,
    png_encoder: str = "pillow",
) -> bytes:
    """Encode (H, W, C) uint8 pixels. JPEG has no alpha channel: alpha is dropped there.

    ``png_encoder="fpng"``: RGB and RGBA PNGs without an ICC profile go through fpng, a
    single-pass encoder about 18x faster than Pillow's zlib level 1 here, whose files are about
    20 % larger and decode to the same pixels (``make bench``: torch against torch-pillowpng); grey images and embedded profiles, which it cannot write,
    go through Pillow at ``png_compress_level``.
    """
    if fmt == "png" and png_encoder == "fpng" and mode in ("RGB", "RGBA") and not icc_profile:
        return bytes(fpng.from_ndarray(np.ascontiguousarray(pixels)))
    array = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    image = Image.fromarray(array)
    if image.mode != mode:
        image = image.convert(mode)
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "png":
        options["compress_level"] = png_compress_level
        pil_format = "PNG"
    elif fmt == "jpeg":
        if image.mode in ("RGBA", "LA"):
            image = image.convert(image.mode[:-1])
        options["quality"] = quality
        pil_format = "JPEG"
    elif fmt == "webp":
        if image.mode in ("L", "LA"):
            image = image.convert("RGBA" if image.mode == "LA" else "RGB")
        options["quality"] = quality
        pil_format = "WEBP"
    else:
        raise ValueError(f"unknown output format {fmt!r}; known: {', '.join(OUTPUT_FORMATS)}")
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()
