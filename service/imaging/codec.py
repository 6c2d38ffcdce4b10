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
from service.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

# Pillow format name -> our format name.
INPUT_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

_GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "PA", "LA", "La"}


@dataclass(frozen=True)
class DecodedImage:
    """Upright 8-bit pixels in one of L, LA, RGB, RGBA, with what must survive the trip."""

    pixels: np.ndarray  # uint8, (H, W, C), C = len(mode)
    mode: str
    format: str
    icc_profile: bytes | None

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


def check_format_limits(width: int, height: int, scale: int, fmt: str) -> None:
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


def _open(data: bytes, *, scale: int, max_input_pixels: int, max_output_pixels: int) -> tuple[Image.Image, str]:
    """Open the image lazily (the header only) and check format and pixel limits."""
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
    except ImageTooLarge:
        image.close()
        raise
    return image, fmt


def probe(data: bytes, *, scale: int, max_input_pixels: int, max_output_pixels: int) -> ImageHeader:
    """The header's size, channels and format, with the same checks as :func:`decode`; reads
    the header only (microseconds), so admission can price a request before decoding it."""
    image, fmt = _open(data, scale=scale, max_input_pixels=max_input_pixels, max_output_pixels=max_output_pixels)
    with image:
        return ImageHeader(image.width, image.height, len(_target_mode(image)), fmt)


def decode(
    data: bytes, *, scale: int, max_input_pixels: int, max_output_pixels: int
) -> DecodedImage:
    """Decode PNG/JPEG/WebP bytes into upright 8-bit pixels, checking limits first."""
    image, fmt = _open(data, scale=scale, max_input_pixels=max_input_pixels, max_output_pixels=max_output_pixels)
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
        pixels=np.ascontiguousarray(pixels), mode=mode, format=fmt, icc_profile=icc or None
    )


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
