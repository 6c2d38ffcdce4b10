"""The load generator's HTTP client: keep-alive HTTP/1.1 on raw asyncio streams.

The client runs on the same two cores as the server it measures, so whatever it spends is taken
from the server. httpx's AsyncClient cost 2.8-3.3 ms of CPU per 128x128 x3 request here, a
sixth of the server's own work; this client, which writes one prepared request per answer on
a kept-alive connection and reads the answer by its Content-Length as wrk and oha do, costs
0.44-0.53 ms (``python -m benchmarks.run --configs onnxruntime --sizes 128 --concurrency 16
--client raw`` and ``--client httpx`` print it). Both are kept: the figures say which one
measured them.

Only what the benchmark needs: POST with a body, responses with Content-Length (the service
sends no chunked answers to these requests), no TLS, no redirects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    content: bytes


class RawClient:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, target: str, content: bytes, headers: dict[str, str]) -> Response:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (f"POST {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
                   f"Content-Length: {len(content)}\r\n\r\n").encode("latin-1") + content
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        status_line, *lines = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if "content-length" not in fields:
            raise RuntimeError(f"an answer without Content-Length: {status_line}")
        body = await self._reader.readexactly(int(fields["content-length"]))
        if fields.get("connection", "").lower() == "close":
            await self.aclose()
        return Response(int(status_line.split(" ", 2)[1]), fields, body)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None
