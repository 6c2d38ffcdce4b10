"""A corpus of bad and fuzzed inputs against a real server process (issue #15, Tests).

Over 800 inputs, generated deterministically (seeded ``random`` and derandomized hypothesis):
truncations of valid PNG/JPEG/WebP (every chunk boundary of a many-chunk PNG, and evenly spaced
cuts), byte and bit mutations (PNG ones with their CRC repaired, so they reach the decoder),
decompression bombs, wrong Content-Types and Accept headers, bad multipart bodies, fuzzed query
values and JSON bodies, and bad HTTP framing over raw sockets (with hang-ups mid-body).

Every answer must be below 500; every error answer with a body must be problem+json with
``type``, ``title``, ``status``, ``detail`` and ``code``; after every 50 inputs a good request
(bicubic and espcn in turn) must be answered 200 with a decodable image; and at the end the
server's ``sr_requests_total`` must count no 5xx, the hang-ups must be counted as 499, and its
log must hold no traceback. ``pytest tests/test_fuzz_corpus.py -q -s`` prints a summary line.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import socket
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, PngImagePlugin

from .helpers import ServerProcess, decode, pattern, wait_until

pytestmark = pytest.mark.slow

SEED = 15
SIZE = (24, 16)  # small, so the inputs that decode are upscaled in milliseconds
GOOD_EVERY = 50
PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")


# -- the valid images the corpus starts from ------------------------------------------------------


def _picture(mode: str = "RGB", size: tuple[int, int] = SIZE) -> Image.Image:
    width, height = size
    if mode == "L":
        return Image.fromarray(pattern(width, height, 1)[:, :, 0])
    if mode == "P":
        return Image.fromarray(pattern(width, height, 3)).quantize(32)
    return Image.fromarray(pattern(width, height, len(mode)))


def _save(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, data) of every chunk after the 8-byte signature."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append((at, data[at + 4:at + 8], data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


def _rechunk_idat(data: bytes, piece: int) -> bytes:
    """The same PNG with its image data split into IDAT chunks of ``piece`` bytes."""
    chunks = png_chunks(data)
    stream = b"".join(body for _, kind, body in chunks if kind == b"IDAT")
    out, written = [data[:8]], False
    for _, kind, body in chunks:
        if kind != b"IDAT":
            out.append(_chunk(kind, body))
        elif not written:
            out.extend(_chunk(b"IDAT", stream[i:i + piece]) for i in range(0, len(stream), piece))
            written = True
    return b"".join(out)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = "fuzz corpus"  # ImageDescription
    return exif.tobytes()


def rich_png() -> bytes:
    """RGB PNG with text (tEXt, zTXt, iTXt), an ICC profile, EXIF, pHYs and 40 IDAT chunks'
    worth of boundaries: many chunk boundaries to cut at."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a fuzz corpus source")
    info.add_text("Big", "x" * 300, zip=True)
    info.add_itxt("Title", "fuzz ü", lang="en", tkey="Titel", zip=False)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    raw = _save(_picture("RGB"), "PNG", pnginfo=info, icc_profile=icc, exif=_exif(6), dpi=(72, 72))
    return _rechunk_idat(raw, 40)


def build_png(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 0,
              idat: bytes | None = None, extra: tuple[bytes, ...] = ()) -> bytes:
    """A PNG from its parts: an IHDR that says anything, and whatever IDAT it is given."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(extra) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _sources() -> dict[str, bytes]:
    rgba = _picture("RGBA")
    return {
        "png-rich": rich_png(),
        "png-palette-trns": _save(_picture("P"), "PNG", transparency=0),
        "png-grey16": _save(Image.fromarray(pattern(*SIZE, 1)[:, :, 0].astype("uint16") * 257), "PNG"),
        "png-rgba-interlaced": _interlaced(rgba),
        "jpeg-exif": _save(_picture("RGB"), "JPEG", quality=90, exif=_exif(8)),
        "jpeg-progressive": _save(_picture("RGB"), "JPEG", quality=75, progressive=True),
        "jpeg-grey": _save(_picture("L"), "JPEG", quality=80),
        "webp-lossy": _save(_picture("RGB"), "WEBP", quality=80),
        "webp-lossless-alpha": _save(rgba, "WEBP", lossless=True),
        "webp-lossy-alpha-exif": _save(rgba, "WEBP", quality=70, exif=_exif(3)),
    }


def _interlaced(img: Image.Image) -> bytes:
    """Pillow writes no Adam7 PNGs, so: its non-interlaced PNG with the pixels re-laid as Adam7."""
    raw = _save(img, "PNG")
    width, height = img.size
    channels = len(img.mode)
    pixels = img.tobytes()
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    stream = b""
    for x0, y0, dx, dy in passes:
        for y in range(y0, height, dy):
            row = b"".join(pixels[(y * width + x) * channels:(y * width + x + 1) * channels]
                           for x in range(x0, width, dx))
            if row:
                stream += b"\0" + row
    ihdr = png_chunks(raw)[0][2]
    ihdr = ihdr[:12] + b"\x01"
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(stream)) + _chunk(b"IEND", b"")


SOURCES = _sources()
GOOD_PNG = _save(_picture("RGB"), "PNG")
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def _media_of(name: str) -> str:
    return MEDIA[name.split("-")[0]]


# -- hypothesis as a seeded generator ------------------------------------------------------------


def drawn(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` values of ``strategy``, the same ones every run (derandomized, no shrinking)."""
    values: list[Any] = []

    @settings(derandomize=True, max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        values.append(value)

    collect()
    return values


def header_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Header values h11 will send (latin-1, no controls, no edge whitespace)."""
    chars = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
    return st.text(chars, max_size=max_size).map(str.strip)


# -- the runner: sends, checks, and keeps the good request coming --------------------------------


class Fuzz:
    def __init__(self, server: ServerProcess, client: httpx.Client, log_path: Path) -> None:
        self.server = server
        self.log_path = log_path
        self.client = client
        self.sent = 0
        self.by_status: Counter[str] = Counter()
        self.by_category: Counter[str] = Counter()
        self.failures: list[str] = []
        self.good = 0
        self.hangups = 0
        self.last_5xx = False

    # One input over HTTP (httpx, keep-alive).
    def http(self, category: str, name: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self._count(category, "no-answer")
            response = None
            if self.last_5xx:
                self._fail(category, name, f"no answer: {exc!r} (on the keep-alive connection the previous "
                           "answer, a 5xx, came on; sent again on a new one)")
                try:  # so this input is still tried: httpx opens a new connection
                    response = self.client.request(method, path, **kwargs)
                except httpx.HTTPError as again:
                    self._fail(category, name, f"no answer on a new connection either: {again!r}")
            else:
                self._fail(category, name, f"no answer: {exc!r}")
        if response is not None:
            self._check(category, name, response.status_code, response.headers.get("content-type", ""),
                        response.content)
        self.last_5xx = response is not None and response.status_code >= 500
        self._tick(category)
        return response

    def upscale(self, category: str, name: str, body: bytes, content_type: str | None = "image/png",
                params: dict[str, Any] | None = None, headers: dict[str, Any] | None = None) -> httpx.Response | None:
        sent_headers = dict(headers or {})
        if content_type is not None:
            sent_headers["Content-Type"] = content_type
        return self.http(category, name, "POST", "/v1/upscale", params=params, content=body, headers=sent_headers)

    # One input over a raw socket: the server's answers are parsed here.
    def raw(self, category: str, name: str, data: bytes, *, answers: int = 1, timeout_s: float = 8.0) -> None:
        try:
            received = _exchange(self.server.port, data, answers, timeout_s)
        except TimeoutError:
            self._count(category, "hang")
            self._fail(category, name, f"no complete answer within {timeout_s} s")
            self._tick(category)
            return
        responses = _parse_responses(received)
        if not responses:
            self._count(category, "closed")
            self._fail(category, name, f"the connection closed without an answer ({received[:80]!r})")
        for status, headers, body in responses:
            self._check(category, name, status, headers.get("content-type", ""), body)
        self._tick(category)

    def hangup(self, category: str, name: str, data: bytes) -> None:
        """Headers and part of the body, then close: nobody reads an answer (the metrics count 499)."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5) as sock:
            sock.sendall(data)
            time.sleep(0.005)  # let the server start on the request
        self.hangups += 1
        self._count(category, "hangup")
        self._tick(category)

    def _count(self, category: str, status: str) -> None:
        self.by_status[status] += 1
        self.by_category[category] += 1

    def _check(self, category: str, name: str, status: int, content_type: str, body: bytes) -> None:
        if status < 200:
            return  # 100 Continue before the answer
        self._count(category, str(status))
        if status >= 500:
            self._fail(category, name, f"{status}: {body[:300]!r}")
            return
        if status < 400 or not body:
            return
        if not content_type.startswith("application/problem+json"):
            self._fail(category, name, f"{status} answered {content_type!r}, not problem+json: {body[:200]!r}")
            return
        try:
            problem = json.loads(body)
        except ValueError:
            self._fail(category, name, f"{status} problem+json that does not parse: {body[:200]!r}")
            return
        missing = [f for f in PROBLEM_FIELDS if not isinstance(problem, dict) or f not in problem]
        if missing:
            self._fail(category, name, f"{status} problem lacks {missing}: {problem!r}")
        elif problem["status"] != status or not str(problem["type"]).endswith(str(problem["code"])):
            self._fail(category, name, f"{status} problem disagrees with itself: {problem!r}")

    def _fail(self, category: str, name: str, what: str) -> None:
        self.failures.append(f"[{category}] {name}: {what}")

    def _tick(self, category: str) -> None:
        self.sent += 1
        if self.sent % GOOD_EVERY == 0:
            self.good_request(category)

    def good_request(self, category: str) -> None:
        method = ("bicubic", "espcn")[self.good % 2]
        self.good += 1
        label = f"good request #{self.good} ({method})"

        def send() -> httpx.Response:
            return self.client.post("/v1/upscale", params={"method": method, "scale": 2}, content=GOOD_PNG,
                                    headers={"Content-Type": "image/png"})

        try:
            try:
                r = send()
            except httpx.HTTPError as exc:
                if not self.last_5xx:
                    raise
                self._fail(category, label, f"no answer: {exc!r} (after a 5xx on the same keep-alive connection)")
                r = send()
        except httpx.HTTPError as exc:
            self._fail(category, label, f"no answer: {exc!r}")
            return
        finally:
            self.last_5xx = False
        self.last_5xx = r.status_code >= 500
        if r.status_code != 200:
            self._fail(category, label, f"{r.status_code}: {r.text[:300]}")
            return
        try:
            size = decode(r.content).size
        except Exception as exc:  # noqa: BLE001 - any decode failure is the finding
            self._fail(category, label, f"undecodable answer: {exc!r}")
            return
        if size != (SIZE[0] * 2, SIZE[1] * 2):
            self._fail(category, label, f"answer is {size}")

    def failures_of(self, category: str) -> list[str]:
        return [f for f in self.failures if f.startswith(f"[{category}]")]


def _exchange(port: int, data: bytes, answers: int, timeout_s: float) -> bytes:
    """Send ``data``; read until the server closes or ``answers`` final answers are complete."""
    deadline = time.monotonic() + timeout_s
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before reading it all; what it said is still in our buffer
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            except TimeoutError:
                break
            if not chunk:
                return received
            received += chunk
            final = [r for r in _parse_responses(received) if r[0] >= 200]
            if len(final) >= answers and _complete(received):
                return received
    raise TimeoutError


def _parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if match is None:
            break
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            break
        responses.append((int(match.group(1)), headers, rest[:length]))
        data = rest[length:]
    return responses


def _complete(data: bytes) -> bool:
    """No partial answer left after the parsed ones."""
    parsed = _parse_responses(data)
    used = 0
    for _, _, body in parsed:
        used = data.index(b"\r\n\r\n", used) + 4 + len(body)
    return used == len(data)


# -- the server, shared by the module ------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    with ServerProcess(log) as server:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=server.url, timeout=30, limits=limits) as client:
            yield Fuzz(server, client, log)


# -- the corpus ----------------------------------------------------------------------------------


def _cuts(data: bytes, n: int) -> list[int]:
    return sorted({max(1, min(len(data) - 1, round(i * len(data) / (n + 1)))) for i in range(1, n + 1)})


def test_truncations(fuzz: Fuzz) -> None:
    """Every chunk boundary of the many-chunk PNG (and inside each chunk: after its length,
    its type, half its data, before its CRC), and evenly spaced cuts of every other source."""
    rich = SOURCES["png-rich"]
    cuts = {0, 1, 4, 7, 8}
    for offset, _, body in png_chunks(rich):
        cuts.update({offset, offset + 4, offset + 8, offset + 8 + len(body) // 2, offset + 8 + len(body)})
    cuts = {c for c in cuts if c < len(rich)}
    for cut in sorted(cuts):
        fuzz.upscale("truncation", f"png-rich[:{cut}]", rich[:cut], params={"method": "bicubic"})
    for name, data in SOURCES.items():
        if name == "png-rich":
            continue
        for cut in _cuts(data, 12 if name.startswith("png") else 24):
            method = ("bicubic", "espcn")[cut % 2]
            fuzz.upscale("truncation", f"{name}[:{cut}]", data[:cut], _media_of(name), params={"method": method})
    assert not fuzz.failures_of("truncation"), "\n".join(fuzz.failures_of("truncation"))


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    out = bytearray(data)
    op = rng.choice(("flip", "flip", "byte", "zeros", "ones", "insert", "delete", "duplicate", "swap"))
    at = rng.randrange(len(out))
    span = rng.randint(1, 16)
    if op == "flip":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif op == "byte":
        out[at] = rng.randrange(256)
    elif op == "zeros":
        out[at:at + span] = b"\0" * len(out[at:at + span])
    elif op == "ones":
        out[at:at + span] = b"\xff" * len(out[at:at + span])
    elif op == "insert":
        out[at:at] = bytes(rng.randrange(256) for _ in range(span))
    elif op == "delete":
        del out[at:at + span]
    elif op == "duplicate":
        out[at:at] = out[at:at + span * 4]
    else:
        j = rng.randrange(len(out))
        out[at], out[j] = out[j], out[at]
    return f"{op}@{at}", bytes(out)


def _mutate_png_chunk(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Change one chunk's data and repair its CRC, so the change gets past the CRC check."""
    chunks = png_chunks(data)
    index = rng.randrange(len(chunks))
    offset, kind, body = chunks[index]
    field = bytearray(body)
    if kind == b"IHDR":
        # width, height, depth, colour type, compression, filter, interlace: any of them
        what = rng.choice(("width", "height", "depth", "colour", "method", "interlace"))
        if what in ("width", "height"):
            value = rng.choice((0, 1, 2, 23, 255, 65535, 1 << 20, (1 << 31) - 1, 0xFFFFFFFF))
            struct.pack_into(">I", field, 0 if what == "width" else 4, value)
        else:
            position = {"depth": 8, "colour": 9, "method": 10, "interlace": 12}[what]
            field[position] = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255))
        label = f"IHDR.{what}"
    elif field:
        for _ in range(rng.randint(1, 3)):
            field[rng.randrange(len(field))] = rng.randrange(256)
        label = kind.decode("latin-1")
    else:
        field = bytearray(rng.randbytes(rng.randint(1, 8)))
        label = kind.decode("latin-1") + "+data"
    end = offset + 12 + len(body)
    return f"crc-repaired {label}#{index}", data[:offset] + _chunk(kind, bytes(field)) + data[end:]


def _mutate_idat_stream(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Change the decompressed scanlines (filter bytes, pixels, length) and recompress."""
    chunks = png_chunks(data)
    stream = zlib.decompress(b"".join(body for _, kind, body in chunks if kind == b"IDAT"))
    raw = bytearray(stream)
    op = rng.choice(("filter", "pixels", "short", "long"))
    if op == "filter":
        raw[rng.randrange(0, len(raw), max(1, len(raw) // SIZE[1]))] = rng.choice((5, 7, 128, 255))
    elif op == "pixels":
        for _ in range(8):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif op == "short":
        raw = raw[: rng.randrange(len(raw))]
    else:
        raw += rng.randbytes(rng.randint(1, 4096))
    head = data[:chunks[0][0] + 12 + len(chunks[0][2])]
    return f"idat-{op}", head + _chunk(b"IDAT", zlib.compress(bytes(raw))) + _chunk(b"IEND", b"")


def test_mutations(fuzz: Fuzz) -> None:
    """Seeded bit flips and byte edits of every source; PNG chunk edits with repaired CRCs;
    recompressed scanline edits. Those that still decode are upscaled (200), the rest refused."""
    rng = random.Random(SEED)
    names = list(SOURCES)
    for i in range(200):
        name = names[i % len(names)]
        label, data = _mutate(SOURCES[name], rng)
        fuzz.upscale("mutation", f"{name} {label}", data, _media_of(name),
                     params={"method": ("bicubic", "espcn")[i % 2]})
    pngs = [n for n in names if n.startswith("png")]
    for i in range(70):
        name = pngs[i % len(pngs)]
        label, data = _mutate_png_chunk(SOURCES[name], rng)
        fuzz.upscale("mutation", f"{name} {label}", data, params={"method": ("espcn", "bicubic")[i % 2]})
    for _ in range(24):
        label, data = _mutate_idat_stream(SOURCES["png-rich"], rng)
        fuzz.upscale("mutation", f"png-rich {label}", data, params={"method": "espcn"})
    assert not fuzz.failures_of("mutation"), "\n".join(fuzz.failures_of("mutation"))


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(SOURCES["jpeg-exif"])
    for marker in (b"\xff\xc0", b"\xff\xc2"):  # baseline or progressive SOF
        at = data.find(marker)
        if at >= 0:
            struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _webp_vp8x_claiming(width: int, height: int) -> bytes:
    data = bytearray(SOURCES["webp-lossy-alpha-exif"])
    at = data.find(b"VP8X")
    if at >= 0:
        data[at + 12:at + 15] = (width - 1).to_bytes(3, "little")
        data[at + 15:at + 18] = (height - 1).to_bytes(3, "little")
    return bytes(data)


def _compressed_text(kind: bytes, size: int) -> bytes:
    body = zlib.compress(b"\0" * size, 9)
    if kind == b"zTXt":
        return _chunk(b"zTXt", b"Bomb\0\0" + body)
    if kind == b"iCCP":
        return _chunk(b"iCCP", b"icc\0\0" + body)
    return _chunk(b"iTXt", b"Bomb\0\x01\0en\0Bomb\0" + body)


def _grey_zeros(width: int, height: int) -> bytes:
    row = b"\0" * (width + 1)
    compressor = zlib.compressobj(9)
    stream = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return build_png(width, height, idat=stream)


def _png_with(*extra: bytes) -> bytes:
    chunks = png_chunks(GOOD_PNG)
    ihdr_end = chunks[0][0] + 12 + len(chunks[0][2])
    return GOOD_PNG[:ihdr_end] + b"".join(extra) + GOOD_PNG[ihdr_end:]


def test_decompression_bombs(fuzz: Fuzz) -> None:
    """Headers that claim huge images (refused from the header, before any pixel), zlib
    bombs in text and ICC chunks, and huge pictures in tiny files."""
    bombs: list[tuple[str, bytes, dict[str, Any]]] = [
        ("png 100000x100000 header", build_png(100_000, 100_000, colour_type=2), {}),
        ("png 100000x100000 1-bit", build_png(100_000, 100_000, bit_depth=1), {}),
        ("png 2^31-1 x 1", build_png((1 << 31) - 1, 1), {}),
        ("png 1 x 2^31-1", build_png(1, (1 << 31) - 1), {}),
        ("png 0xffffffff square", build_png(0xFFFFFFFF, 0xFFFFFFFF), {}),
        ("png 0x0", build_png(0, 0), {}),
        ("png 4097x4096 (one column over)", build_png(4097, 4096), {}),
        ("png 6000x6000 zlib zeros", _grey_zeros(6000, 6000), {"method": "nearest"}),
        ("png 3000x3000 x4 output", build_png(3000, 3000), {"scale": 4}),
        ("png 2900x2900 x3 output", build_png(2900, 2900), {"scale": 3, "method": "espcn"}),
        ("png 512x512 zlib zeros, legal", _grey_zeros(512, 512), {"method": "nearest"}),
        ("png 1024x64 header, 64-byte IDAT", build_png(1024, 64), {"method": "bicubic"}),
        ("png zTXt 16 MB of zeros", _png_with(_compressed_text(b"zTXt", 16 << 20)), {}),
        ("png iTXt 16 MB of zeros", _png_with(_compressed_text(b"iTXt", 16 << 20)), {}),
        ("png iCCP 16 MB of zeros", _png_with(_compressed_text(b"iCCP", 16 << 20)), {}),
        ("png 3000 tEXt chunks", _png_with(*(_chunk(b"tEXt", b"k%d\0" % i + b"v" * 500) for i in range(3000))), {}),
        ("png chunk length 0x7fffffff", _png_with(struct.pack(">I", 0x7FFFFFFF) + b"tEXt" + b"abc"), {}),
        ("png eXIf 64 KB junk", _png_with(_chunk(b"eXIf", b"MM\0*" + random.Random(1).randbytes(65536))), {}),
        ("png IDAT bomb behind a small header", build_png(24, 16, idat=zlib.compress(b"\0" * (16 << 20), 9)), {}),
        ("jpeg 65500x65500 header", _jpeg_claiming(65500, 65500), {}),
        ("jpeg 5000x5000 header", _jpeg_claiming(5000, 5000), {}),
        ("jpeg 2000x2000 header, tiny data", _jpeg_claiming(2000, 2000), {"scale": 2, "method": "bicubic"}),
        ("jpeg 1x65500 header", _jpeg_claiming(1, 65500), {}),
        ("webp vp8x 16384x16384 canvas", _webp_vp8x_claiming(16384, 16384), {}),
        ("webp vp8x 1x16777216 canvas", _webp_vp8x_claiming(1, 1 << 24), {}),
        ("gif 10000x10000", b"GIF89a" + struct.pack("<HH", 10000, 10000) + b"\0\0\0" + b",\0\0\0\0\x10'\x10'\0\x02\x02D\x01\0;", {}),
        ("bmp 50000x50000 header", b"BM" + struct.pack("<IHHIIiiHHIIiiII", 0, 0, 0, 54, 40, 50000, 50000, 1, 24, 0, 0, 0, 0, 0, 0), {}),
        ("tiff 24x16", _save(_picture("RGB"), "TIFF"), {}),
        ("gif 24x16", _save(_picture("P"), "GIF"), {}),
        ("ico 16x16", _save(_picture("RGB", (16, 16)), "ICO"), {}),
        # Legal sizes whose answer is wider or taller than the output format can hold
        # (JPEG: 65500 px a side, WebP: 16383): the server must refuse them, not fail encoding.
        ("32751x2 png, x2 jpeg answer (65502 wide)", _grey_zeros(32751, 2), {"method": "nearest", "format": "jpeg"}),
        ("2x32751 png, x2 jpeg answer (65502 high)", _grey_zeros(2, 32751), {"method": "nearest", "format": "jpeg"}),
        ("8192x2 png, x2 webp answer (16384 wide)", _grey_zeros(8192, 2), {"method": "nearest", "format": "webp"}),
        ("5462x2 png, x3 webp answer (16386 wide)", _grey_zeros(5462, 2), {"method": "bicubic", "format": "webp", "scale": 3}),
        ("32750x2 png, x2 jpeg answer (65500 wide, legal)", _grey_zeros(32750, 2), {"method": "nearest", "format": "jpeg"}),
        ("8191x2 png, x2 webp answer (16382 wide, legal)", _grey_zeros(8191, 2), {"method": "nearest", "format": "webp"}),
        ("apng two frames", _save(_picture("RGB"), "PNG", save_all=True,
                                  append_images=[_picture("RGBA").convert("RGB")]), {"method": "espcn"}),
    ]
    for name, data, params in bombs:
        content_type = "image/png" if data.startswith(b"\x89PNG") else "application/octet-stream"
        fuzz.upscale("bomb", name, data, content_type, params={"method": "bicubic", **params})
    assert not fuzz.failures_of("bomb"), "\n".join(fuzz.failures_of("bomb"))


CONTENT_TYPES = [
    "text/plain", "application/json", "application/xml", "text/html; charset=utf-8", "image/gif",
    "image/svg+xml", "image/png; charset=bogus", "IMAGE/PNG", "image/", "image", "/", ";", ";;;=;",
    "application/octet-stream", "application/x-www-form-urlencoded", "multipart/mixed; boundary=x",
    "multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=\"unclosed",
    "application/problem+json", "video/mp4", "*/*", "image/*", "x" * 2000, "image/png" + ";a=b" * 200,
    "image/jpeg", "image/webp",
]


def test_content_types_and_headers(fuzz: Fuzz) -> None:
    """Wrong and odd Content-Types on a valid PNG (and valid images under each other's type),
    fuzzed Accept, X-Request-ID and Authorization headers, wrong verbs and paths."""
    for ct in CONTENT_TYPES:
        fuzz.upscale("content-type", f"png as {ct[:40]!r}", GOOD_PNG, ct, params={"method": "bicubic"})
    fuzz.upscale("content-type", "no content-type", GOOD_PNG, None, params={"method": "bicubic"})
    for name, data in SOURCES.items():
        for ct in ("image/png", "image/jpeg", "image/webp", "text/plain"):
            if ct != _media_of(name):
                fuzz.upscale("content-type", f"{name} as {ct}", data, ct, params={"method": "espcn"})
    fixed_accepts = ["image/*;q=abc", "*/*;q=2", ";", ",,,", "image/png;q=0", "image/png;q=0, image/jpeg;q=0",
                     "image/webp;q=1e3", "application/json", "image/avif", "*/*;q=0", "q=0.5", "image/*;;q=0.1",
                     "image/png;q=-1", "image/jpeg;level=1;q=0.5, */*;q=0.1", "x" * 4000]
    accepts = fixed_accepts + drawn(header_text(60), 70)
    for i, accept in enumerate(accepts):
        fuzz.upscale("content-type", f"Accept {accept[:40]!r}", GOOD_PNG,
                     params={"method": ("bicubic", "espcn")[i % 2]}, headers={"Accept": accept.encode("latin-1")})
    for rid in drawn(header_text(200), 20):
        fuzz.http("content-type", f"X-Request-ID {rid[:40]!r}", "GET", "/livez", headers={"X-Request-ID": rid.encode("latin-1")})
    for auth in ("Bearer", "Basic Zm9vOmJhcg==", "bearer k", "x" * 3000):
        fuzz.upscale("content-type", f"Authorization {auth[:20]!r}", GOOD_PNG, params={"method": "bicubic"},
                     headers={"Authorization": auth})
    for auth in (b"Bearer ", b"Bearer \xff", b" "):  # what h11 will not send
        fuzz.raw("content-type", f"Authorization {auth!r}", b"GET /v1/methods HTTP/1.1\r\nHost: x\r\nAuthorization: "
                 + auth + b"\r\nConnection: close\r\n\r\n")
    verbs = [("GET", "/v1/upscale"), ("PUT", "/v1/upscale"), ("DELETE", "/v1/upscale"), ("PATCH", "/v1/upscale"),
             ("OPTIONS", "/v1/upscale"), ("HEAD", "/v1/upscale"), ("POST", "/livez"), ("POST", "/metrics"),
             ("GET", "/v1/methods/choose"), ("POST", "/v1/models"), ("GET", "/nope"), ("GET", "/v1/upscale/x"),
             ("GET", "/static/../service/config.py"), ("GET", "/static/%2e%2e%2fREADME.md"),
             ("GET", "/static/" + "a" * 3000), ("GET", "/v1/upscale?scale=2"), ("HEAD", "/nope"),
             ("POST", "/v1/upscale/"), ("POST", "//v1/upscale"), ("TRACE", "/"), ("GET", "/docs"),
             ("GET", "/openapi.json"), ("GET", "/static/app.js"), ("GET", "/v1/methods"), ("GET", "/v1/models")]
    for verb, path in verbs:
        fuzz.http("content-type", f"{verb} {path[:40]}", verb, path, content=GOOD_PNG if verb in ("PUT", "PATCH") else None)
    assert not fuzz.failures_of("content-type"), "\n".join(fuzz.failures_of("content-type"))


def _form(parts: list[tuple[str, bytes]], boundary: bytes = b"fuzzboundary", *, close: bool = True,
          newline: bytes = b"\r\n") -> bytes:
    """A multipart body from (part headers, content) pairs."""
    out = b""
    for head, content in parts:
        out += b"--" + boundary + newline + head.encode("latin-1").replace(b"\n", newline) + newline + newline
        out += content + newline
    if close:
        out += b"--" + boundary + b"--" + newline
    return out


FILE = 'Content-Disposition: form-data; name="image"; filename="a.png"\nContent-Type: image/png'
MULTI = "multipart/form-data; boundary=fuzzboundary"


def test_multipart(fuzz: Fuzz) -> None:
    """Multipart bodies that are wrong in every way we could think of, and truncated ones."""
    good = _form([(FILE, GOOD_PNG)])
    cases: list[tuple[str, bytes, str | None]] = [
        ("well formed (control)", good, MULTI),
        ("no boundary parameter", good, "multipart/form-data"),
        ("empty boundary", good, "multipart/form-data; boundary="),
        ("boundary mismatch", good, "multipart/form-data; boundary=other"),
        ("quoted boundary", good, 'multipart/form-data; boundary="fuzzboundary"'),
        ("200-char boundary", _form([(FILE, GOOD_PNG)], b"b" * 200), "multipart/form-data; boundary=" + "b" * 200),
        ("boundary with spaces", _form([(FILE, GOOD_PNG)], b"a b"), 'multipart/form-data; boundary="a b"'),
        ("bogus charset", good, MULTI + "; charset=no-such-codec"),
        ("latin-1 charset", good, MULTI + "; charset=latin-1"),
        ("wrong field name", _form([(FILE.replace('name="image"', 'name="file"'), GOOD_PNG)]), MULTI),
        ("text field named image", _form([('Content-Disposition: form-data; name="image"', b"hello")]), MULTI),
        ("text field with PNG bytes", _form([('Content-Disposition: form-data; name="image"', GOOD_PNG)]), MULTI),
        ("two files", _form([(FILE, GOOD_PNG), (FILE, GOOD_PNG)]), MULTI),
        ("file and a text field", _form([(FILE, GOOD_PNG), ('Content-Disposition: form-data; name="scale"', b"4")]), MULTI),
        ("text then file named image", _form([('Content-Disposition: form-data; name="image"', b"x"), (FILE, GOOD_PNG)]), MULTI),
        ("17 text fields", _form([(f'Content-Disposition: form-data; name="f{i}"', b"v") for i in range(17)]), MULTI),
        ("no content-disposition", _form([("Content-Type: image/png", GOOD_PNG)]), MULTI),
        ("disposition without name", _form([('Content-Disposition: form-data; filename="a.png"', GOOD_PNG)]), MULTI),
        ("disposition garbage", _form([("Content-Disposition: ;;;==;", GOOD_PNG)]), MULTI),
        ("header without colon", _form([("Content-Disposition form-data", GOOD_PNG)]), MULTI),
        ("no part headers", _form([("", GOOD_PNG)]), MULTI),
        ("non-utf8 field name", _form([('Content-Disposition: form-data; name="\xff\xfe"; filename="\xff"', GOOD_PNG)]), MULTI),
        ("no closing boundary", _form([(FILE, GOOD_PNG)], close=False), MULTI),
        ("LF line endings", _form([(FILE, GOOD_PNG)], newline=b"\n"), MULTI),
        ("preamble and epilogue", b"preamble junk\r\n" + good + b"epilogue junk", MULTI),
        ("empty body", b"", MULTI),
        ("only the closing boundary", b"--fuzzboundary--\r\n", MULTI),
        ("garbage body", random.Random(SEED).randbytes(300), MULTI),
        ("file is text", _form([(FILE, b"not an image")]), MULTI),
        ("file is empty", _form([(FILE, b"")]), MULTI),
        ("file is a truncated PNG", _form([(FILE, GOOD_PNG[:100])]), MULTI),
        ("file is JPEG", _form([(FILE, SOURCES["jpeg-exif"])]), MULTI),
        ("base64 transfer encoding", _form([(FILE + "\nContent-Transfer-Encoding: base64",
                                             base64.b64encode(GOOD_PNG))]), MULTI),
        ("nested multipart/mixed", _form([('Content-Disposition: form-data; name="image"\nContent-Type: multipart/mixed; boundary=inner',
                                           _form([(FILE, GOOD_PNG)], b"inner"))]), MULTI),
        ("2 MB text field", _form([('Content-Disposition: form-data; name="big"', b"x" * (2 << 20))]), MULTI),
        ("part header 100 KB", _form([(FILE + "\nX-Long: " + "h" * 100_000, GOOD_PNG)]), MULTI),
        ("form-urlencoded body", b"image=" + GOOD_PNG[:50], "application/x-www-form-urlencoded"),
        ("multipart/mixed", good, "multipart/mixed; boundary=fuzzboundary"),
    ]
    for name, body, ct in cases:
        fuzz.upscale("multipart", name, body, ct, params={"method": "bicubic"})
    for cut in _cuts(good, 30):
        fuzz.upscale("multipart", f"truncated at {cut}", good[:cut], MULTI, params={"method": "espcn"})
    # httpx's own multipart: the right field (control) and a wrong one.
    fuzz.http("multipart", "httpx files=image", "POST", "/v1/upscale", files={"image": ("a.png", GOOD_PNG, "image/png")})
    fuzz.http("multipart", "httpx files=picture", "POST", "/v1/upscale", files={"picture": ("a.png", GOOD_PNG, "image/png")})
    fuzz.http("multipart", "httpx data only", "POST", "/v1/upscale", data={"image": "abc"}, files={"x": ("x", b"x")})
    assert not fuzz.failures_of("multipart"), "\n".join(fuzz.failures_of("multipart"))


VALID_VALUES = {
    "scale": ["2", "3", "4"], "method": ["espcn", "bicubic", "auto", "ecbsr", "nearest", "bilinear"],
    "format": ["png", "jpeg", "webp", "jpg", "PNG"], "quality": ["1", "90", "100"],
    "align_corners": ["true", "false", "1", "0", "yes"], "max_latency_ms": ["50", "0.001", "1e9"],
    "min_psnr_db": ["0", "30", "99"], "objective": ["quality", "speed"],
}
ODD_VALUES = ["", " ", "nan", "NaN", "inf", "-inf", "1e309", "-0", "0x10", " 2", "2 ", "２", "2.0", "true",
              "None", "null", "[]", "{}", "9" * 400, "-1", "0", "2147483648", "\x00", "%00", "espcn\x00"]


def _value(name: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(VALID_VALUES[name]), st.sampled_from(ODD_VALUES), st.text(max_size=24),
        st.integers().map(str), st.floats().map(str),
    )


QUERY = st.fixed_dictionaries({}, optional={name: _value(name) for name in VALID_VALUES})

RAW_QUERIES = [
    "scale=2&scale=abc", "scale=abc&scale=2", "scale", "=", "&&&", "%", "%ff", "scale=%00", "method=espcn%00",
    "method=%", "scale=%zz", "format=%E2%82%AC", "method=" + "a" * 8000, "a=" + "%" * 100, "scale=2;method=x",
    "method=auto&max_latency_ms=0", "method=auto&max_latency_ms=-1", "method=auto&min_psnr_db=-0.0001",
    "method=auto&min_psnr_db=1e400", "method=auto&max_latency_ms=1e-320", "quality=0&format=jpeg",
    "quality=101&format=webp", "quality=1.5", "align_corners=maybe", "objective=QUALITY", "#fragment",
    "scale=2#", "?scale=2", "scale[]=2", "scale=+2",
]


def test_query_values(fuzz: Fuzz) -> None:
    """Hypothesis-drawn query values for every parameter (valid ones mixed in, so some requests
    get past validation with odd neighbours), and raw query strings over a socket."""
    for i, params in enumerate(drawn(QUERY, 220)):
        fuzz.upscale("query", f"params {params!r}"[:200], GOOD_PNG if i % 3 else SOURCES["jpeg-exif"],
                     "image/png" if i % 3 else "image/jpeg", params=params)
    for query in RAW_QUERIES:
        request = (f"POST /v1/upscale?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                   f"Content-Length: {len(GOOD_PNG)}\r\nConnection: close\r\n\r\n").encode("latin-1") + GOOD_PNG
        fuzz.raw("query", f"raw query {query[:60]!r}", request)
    assert not fuzz.failures_of("query"), "\n".join(fuzz.failures_of("query"))


def _json_value() -> st.SearchStrategy[Any]:
    scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=12)


CHOOSE = st.one_of(
    _json_value(),
    st.fixed_dictionaries({}, optional={
        "width": st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.booleans()),
        "height": st.one_of(st.integers(), st.sampled_from([1, 16, 65536, 65537])),
        "scale": st.one_of(st.sampled_from([2, 3, 4]), st.integers(), st.text(max_size=3)),
        "max_latency_ms": st.one_of(st.none(), st.floats(), st.integers()),
        "min_psnr_db": st.one_of(st.none(), st.floats(), st.integers()),
        "objective": st.one_of(st.sampled_from(["quality", "speed"]), st.text(max_size=8)),
        "format": st.one_of(st.sampled_from(["png", "jpeg", "webp"]), st.text(max_size=8)),
    }),
)


def test_json_bodies(fuzz: Fuzz) -> None:
    """POST /v1/methods/choose with hypothesis JSON (and JSON that is not JSON)."""
    for value in drawn(CHOOSE, 90):
        body = json.dumps(value).encode()  # NaN and Infinity go out as they are: not JSON
        fuzz.http("json", f"choose {body[:120]!r}", "POST", "/v1/methods/choose", content=body,
                  headers={"Content-Type": "application/json"})
    for name, body, ct in [
        ("empty", b"", "application/json"), ("not json", b"{width: 1", "application/json"),
        ("a PNG", GOOD_PNG, "application/json"), ("json as text/plain", b'{"width":1,"height":1,"scale":2}', "text/plain"),
        ("over 64 KB", b'{"width": 1, "pad": "' + b"x" * 70_000 + b'"}', "application/json"),
        ("deep nesting", b"[" * 5000 + b"]" * 5000, "application/json"),
        ("utf-16", '{"width":1,"height":1,"scale":2}'.encode("utf-16"), "application/json"),
        ("huge integer", b'{"width": 1' + b"0" * 5000 + b', "height": 1, "scale": 2}', "application/json"),
        ("lone surrogate", b'{"width":1,"height":1,"scale":2,"objective":"\\ud800"}', "application/json"),
    ]:
        fuzz.http("json", f"choose {name}", "POST", "/v1/methods/choose", content=body, headers={"Content-Type": ct})
    assert not fuzz.failures_of("json"), "\n".join(fuzz.failures_of("json"))


POST_HEAD = b"POST /v1/upscale?method=bicubic HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"

FRAMING = [
    ("garbage request line", b"GARBAGE\r\n\r\n"),
    ("lone word", b"GET\r\n\r\n"),
    ("no version", b"GET /livez\r\nHost: x\r\n\r\n"),
    ("HTTP/9.9", b"GET /livez HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n"),
    ("unknown method", b"FOO /livez HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("lower-case method", b"get /livez HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("NUL in the path", b"GET /li\x00vez HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("raw UTF-8 in the path", "GET /é HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
    ("space in the path", b"GET /li vez HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("LF-only line ends", b"GET /livez HTTP/1.1\nHost: x\n\n"),
    ("negative Content-Length", POST_HEAD + b"Content-Length: -5\r\n\r\n"),
    ("non-numeric Content-Length", POST_HEAD + b"Content-Length: abc\r\n\r\n"),
    ("hex Content-Length", POST_HEAD + b"Content-Length: 0x10\r\n\r\n"),
    ("float Content-Length", POST_HEAD + b"Content-Length: 1.5\r\n\r\n"),
    ("plus Content-Length", POST_HEAD + b"Content-Length: +5\r\n\r\n"),
    ("overflowing Content-Length", POST_HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n"),
    ("empty Content-Length", POST_HEAD + b"Content-Length: \r\n\r\n"),
    ("two Content-Lengths", POST_HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("Content-Length and chunked", POST_HEAD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("Content-Length over the upload limit", POST_HEAD + b"Content-Length: 30000000\r\nConnection: close\r\n\r\n"),
    ("chunk size not hex", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n"),
    ("chunk size overflow", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n"),
    ("chunk without CRLF", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n"),
    ("chunk extension with NUL", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n"),
    ("negative chunk size", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n"),
    ("chunk longer than said", POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n"),
    ("Transfer-Encoding gzip", POST_HEAD + b"Transfer-Encoding: gzip\r\nConnection: close\r\n\r\nabc"),
    ("Transfer-Encoding chunked twice", POST_HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("header without colon", b"GET /livez HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n"),
    ("space before colon", b"GET /livez HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("obsolete line folding", b"GET /livez HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n"),
    ("NUL in a header value", b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
    ("empty header name", b"GET /livez HTTP/1.1\r\nHost: x\r\n: value\r\n\r\n"),
    ("pipelined garbage after a good request", b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n"),
    ("URL of 200 KB", b"GET /livez?" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
]

# Valid HTTP, odd but legal: answered (with whatever status), then closed by Connection: close.
ODD_BUT_VALID = [
    ("header of 100 KB", b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100_000 + b"\r\nConnection: close\r\n\r\n"),
    ("header of 1 MB", b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 1_000_000 + b"\r\nConnection: close\r\n\r\n"),
    ("5000 headers", b"GET /livez HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5000))
     + b"Connection: close\r\n\r\n"),
    ("HTTP/1.0 without Host", b"GET /livez HTTP/1.0\r\n\r\n"),
    ("absolute URI", b"GET http://elsewhere/livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("bad percent-encoding in the path", b"GET /v1/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("non-latin X-Request-ID", b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Request-ID: \xff\xfe\r\nConnection: close\r\n\r\n"),
    ("non-latin Content-Type", POST_HEAD.replace(b"image/png", b"image/\xffpng") + b"Content-Length: %d\r\nConnection: close\r\n\r\n"
     % len(GOOD_PNG) + GOOD_PNG),
    ("Expect: 100-continue", POST_HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
     % len(GOOD_PNG) + GOOD_PNG),
    ("chunked upload, well formed", POST_HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
     + b"".join(b"%x\r\n%s\r\n" % (len(GOOD_PNG[i:i + 100]), GOOD_PNG[i:i + 100]) for i in range(0, len(GOOD_PNG), 100))
     + b"0\r\n\r\n"),
    ("chunked upload with trailers", POST_HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
     + b"%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(GOOD_PNG), GOOD_PNG)),
    ("Content-Length 0", POST_HEAD + b"Content-Length: 0\r\nConnection: close\r\n\r\n"),
    ("body longer than Content-Length", POST_HEAD + b"Content-Length: 10\r\nConnection: close\r\n\r\n" + GOOD_PNG[:200]),
    ("upgrade to websocket", b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    ("upgrade to h2c", b"GET /livez HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
     b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
]


def test_http_framing(fuzz: Fuzz) -> None:
    """Malformed HTTP over raw sockets (400 problem+json from the connection layer), odd but
    valid HTTP, seeded garbage request lines and header lines, and hang-ups mid-body."""
    for name, data in FRAMING:
        fuzz.raw("framing", name, data, answers=2 if name.startswith("pipelined") else 1)
    for name, data in ODD_BUT_VALID:
        fuzz.raw("framing", name, data)
    rng = random.Random(SEED + 1)
    printable = bytes(range(0x21, 0x7F))
    for i in range(60):
        alphabet = printable if i % 2 else bytes(b for b in range(256) if b not in (10, 13))
        line = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        fuzz.raw("framing", f"garbage line {line[:30]!r}", line + b"\r\n\r\n")
    for _ in range(40):
        header = bytes(rng.choice(printable + b" :\t") for _ in range(rng.randint(1, 60)))
        fuzz.raw("framing", f"garbage header {header[:30]!r}",
                 b"GET /livez HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n")
    # Hang-ups: the headers and half the body, then gone. Counted as 499 by the server.
    for i in range(20):
        data = SOURCES["png-rich"] if i % 2 else GOOD_PNG
        head = (b"POST /v1/upscale?method=%s HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % ((b"bicubic", b"espcn")[i % 2], len(data)))
        fuzz.hangup("framing", f"hang-up after {len(data) // 2} of {len(data)} bytes", head + data[: len(data) // 2])
    assert not fuzz.failures_of("framing"), "\n".join(fuzz.failures_of("framing"))


def _requests_by_status(metrics: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for match in re.finditer(r'^sr_requests_total\{([^}]*)\} ([0-9.e+]+)$', metrics, re.M):
        status = re.search(r'status="(\d+)"', match.group(1))
        if status:
            totals[status.group(1)] += int(float(match.group(2)))
    return totals


def test_the_corpus_is_large_and_the_server_counted_no_5xx(fuzz: Fuzz) -> None:
    """Runs last: the count of inputs, the metrics, the log, and the summary line."""
    fuzz.good_request("final")
    counted: Counter[str] = Counter()

    def settled() -> bool:  # the hang-ups are counted when the server notices them
        nonlocal counted
        counted = _requests_by_status(fuzz.client.get("/metrics").text)
        return counted["499"] >= fuzz.hangups

    try:
        wait_until(settled, timeout_s=10, interval_s=0.2)
    except AssertionError:
        pass
    log = fuzz.log_path.read_text(errors="replace")
    tracebacks = [line for line in log.splitlines() if "Traceback" in line or "unhandled error" in line
                  or "Exception in ASGI" in line]
    print(f"\nfuzz corpus: {fuzz.sent} inputs, {fuzz.good} good requests; answers by status "
          f"{dict(sorted(fuzz.by_status.items()))}; by category {dict(fuzz.by_category)}; "
          f"server sr_requests_total by status {dict(sorted(counted.items()))}; "
          f"{len(fuzz.failures)} failures")
    for failure in fuzz.failures[:40]:
        print("  ", failure)
    assert fuzz.sent >= 800
    assert not fuzz.failures, "\n".join(fuzz.failures[:40])
    fives = {s: n for s, n in counted.items() if s.startswith("5") and n}
    assert not fives, f"the server counted 5xx: {fives}"
    assert counted["500"] == 0
    assert counted["499"] >= fuzz.hangups, f"{fuzz.hangups} hang-ups, {counted['499']} counted as 499"
    assert not tracebacks, "\n".join(tracebacks[:10])
