"""A Python client for the subpixel API, on httpx, sync and async.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as sr:
        sr.upscale("photo.png", scale=3, method="auto").save("photo-x3.png")

Errors come back as typed exceptions built from the problem+json body (``code``, ``status``,
``title``, ``detail``). A 503 (overloaded, draining) is retried a bounded number of times,
waiting what ``Retry-After`` says (capped); nothing else is retried, because every other error
would answer the same again. The client imports nothing of the server.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_URL = "http://127.0.0.1:8000"
_SNIFF = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}


class APIError(Exception):
    """An error answer of the API, from its problem+json body."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class InvalidImage(APIError):
    """400: the body is not a decodable image."""


class Unauthorized(APIError):
    """401: a valid API key is required."""


class TooLarge(APIError):
    """413: the upload or the image is over the server's limits."""


class UnsupportedMediaType(APIError):
    """415: a content type or image format the server does not take."""


class InvalidParameter(APIError):
    """422: a parameter is invalid (the detail says which and what was expected)."""


class Unavailable(APIError):
    """503: overloaded or draining, still so after the retries."""


class DeadlineExceeded(APIError):
    """504: the request could not finish before the server's deadline."""


class ServerError(APIError):
    """5xx: a fault of the server."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidImage, 401: Unauthorized, 413: TooLarge, 415: UnsupportedMediaType,
    422: InvalidParameter, 503: Unavailable, 504: DeadlineExceeded,
}


def error_from(response: httpx.Response) -> APIError:
    """The typed exception for an error response (problem+json, or whatever a proxy sent)."""
    try:
        body = response.json()
        code, title, detail = str(body["code"]), str(body["title"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code, title, detail = "http_error", response.reason_phrase, response.text[:500]
    retry = response.headers.get("retry-after")
    cls = _BY_STATUS.get(response.status_code, ServerError if response.status_code >= 500 else APIError)
    return cls(response.status_code, code, title, detail,
               float(retry) if retry and retry.isdigit() else None)


@dataclass(frozen=True)
class Upscaled:
    """An upscaled image as the server sent it."""

    content: bytes
    media_type: str
    method: str
    scale: int
    model: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def extension(self) -> str:
        return {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(self.media_type, ".bin")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.content)
        return path

    def image(self) -> Image.Image:
        from PIL import Image

        return Image.open(io.BytesIO(self.content))


ImageSource = str | Path | bytes | Any  # a path, encoded bytes, or a PIL image


def image_body(image: ImageSource) -> tuple[bytes, str]:
    """Bytes and content type of what ``upscale`` was given."""
    if isinstance(image, str | Path):
        data = Path(image).read_bytes()
    elif isinstance(image, bytes | bytearray):
        data = bytes(image)
    elif hasattr(image, "save"):  # a PIL image: sent as PNG, which keeps every pixel
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise TypeError(f"upscale takes a path, bytes or a PIL image, not {type(image).__name__}")
    kind = next((media for magic, media in _SNIFF.items() if data.startswith(magic)), "application/octet-stream")
    return data, kind


def _upscale_request(image: ImageSource, scale: int, method: str, **options: Any) -> dict[str, Any]:
    """The keyword arguments of ``httpx`` ``request`` for an upscale (sync and async alike)."""
    data, kind = image_body(image)
    params: dict[str, Any] = {"scale": scale, "method": method}
    for name, value in options.items():
        if value is not None:
            params[name] = str(value).lower() if isinstance(value, bool) else value
    return {"params": params, "content": data, "headers": {"Content-Type": kind}}


def _choose_body(width: int, height: int, scale: int, constraints: dict[str, Any]) -> dict[str, Any]:
    return {"width": width, "height": height, "scale": scale,
            **{k: v for k, v in constraints.items() if v is not None}}


def _upscaled(response: httpx.Response) -> Upscaled:
    timings = {}
    for part in response.headers.get("server-timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return Upscaled(
        content=response.content,
        media_type=response.headers.get("content-type", "").split(";")[0],
        method=response.headers.get("x-sr-method", ""),
        scale=int(response.headers.get("x-sr-scale", "0")),
        model=response.headers.get("x-sr-model"),
        timings_ms=timings,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """503 retries: at most ``attempts`` tries in all, each wait ``Retry-After`` (or
    ``default_wait_s``) but never more than ``max_wait_s``."""

    attempts: int = 4
    default_wait_s: float = 1.0
    max_wait_s: float = 30.0

    def wait_or_raise(self, response: httpx.Response, attempt: int) -> float:
        """Seconds to wait before retrying this failed ``attempt`` (1-based), or its typed error
        when it must not be retried (not a 503, or the last attempt)."""
        error = error_from(response)
        if response.status_code != 503 or attempt >= self.attempts:
            raise error
        return min(self.max_wait_s, error.retry_after_s or self.default_wait_s)


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, retry: RetryPolicy) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self.retry = retry


class Client(_Base):
    """Synchronous client; a context manager (one connection pool)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s, retry or RetryPolicy())
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, self.retry.attempts + 1):
            response = self._http.request(method, url, **kwargs)
            if response.is_success:
                return response
            time.sleep(self.retry.wait_or_raise(response, attempt))
        raise AssertionError("unreachable")

    def upscale(self, image: ImageSource, scale: int = 2, method: str = "espcn", *, format: str | None = None,
                quality: int | None = None, max_latency_ms: float | None = None, min_psnr_db: float | None = None,
                objective: str | None = None, align_corners: bool | None = None) -> Upscaled:
        request = _upscale_request(image, scale, method, format=format, quality=quality,
                                   max_latency_ms=max_latency_ms, min_psnr_db=min_psnr_db,
                                   objective=objective, align_corners=align_corners)
        return _upscaled(self._send("POST", "/v1/upscale", **request))

    def choose(self, width: int, height: int, scale: int, **constraints: Any) -> dict[str, Any]:
        """``constraints``: max_latency_ms, min_psnr_db, objective, format."""
        body = _choose_body(width, height, scale, constraints)
        result: dict[str, Any] = self._send("POST", "/v1/methods/choose", json=body).json()
        return result

    def methods(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send("GET", "/v1/methods").json()
        return result

    def models(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send("GET", "/v1/models").json()
        return result


class AsyncClient(_Base):
    """The same, for asyncio; ``async with AsyncClient(...) as sr: await sr.upscale(...)``."""

    def __init__(self, base_url: str = DEFAULT_URL, *, api_key: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None, max_connections: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s, retry or RetryPolicy())
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                       limits=limits, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(1, self.retry.attempts + 1):
            response = await self._http.request(method, url, **kwargs)
            if response.is_success:
                return response
            await asyncio.sleep(self.retry.wait_or_raise(response, attempt))
        raise AssertionError("unreachable")

    async def upscale(self, image: ImageSource, scale: int = 2, method: str = "espcn", *,
                      format: str | None = None, quality: int | None = None, max_latency_ms: float | None = None,
                      min_psnr_db: float | None = None, objective: str | None = None,
                      align_corners: bool | None = None) -> Upscaled:
        request = _upscale_request(image, scale, method, format=format, quality=quality,
                                   max_latency_ms=max_latency_ms, min_psnr_db=min_psnr_db,
                                   objective=objective, align_corners=align_corners)
        return _upscaled(await self._send("POST", "/v1/upscale", **request))

    async def choose(self, width: int, height: int, scale: int, **constraints: Any) -> dict[str, Any]:
        body = _choose_body(width, height, scale, constraints)
        result: dict[str, Any] = (await self._send("POST", "/v1/methods/choose", json=body)).json()
        return result

    async def methods(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._send("GET", "/v1/methods")).json()
        return result

    async def models(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self._send("GET", "/v1/models")).json()
        return result
