"""The HTTP/1.1 connection below the app: a deadline and a size limit for request headers, a
cap on open connections, and problem+json for the parser's own refusals.

uvicorn holds a connection that never finishes its headers for ever (60 slowloris connections
were all still open after 40 s, issue #15), has no cap on connections but a concurrency limit
that answers text/plain, and answers malformed HTTP with a text/plain 400. This is uvicorn's
httptools protocol with those three changed; ``service.__main__`` passes it as ``http=``. It
also has no limit on header size, and httptools' cost grows with the square of a header's
length: one header of tens of megabytes stalled every other request for seconds (found by
the probes behind tests/test_fuzz_corpus.py). Headers past ``max_header_bytes`` are answered
431 at once (tests/test_hostile.py: within 3 s of a 4 MiB header starting).
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import HeaderTooLarge, InvalidBody, Overloaded, RequestTimeout, ServiceError

log = logging.getLogger(__name__)

# After a refusal, how long the connection stays half-closed, reading and dropping what the
# client still sends, so that it can read the answer (see GuardedProtocol._refuse).
LINGER_S = 2.0

_REASONS = {
    400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def problem_response(error: ServiceError) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response carrying ``error`` as problem+json."""
    body = json.dumps(error.problem()).encode()
    head = [
        b"HTTP/1.1 %d %s" % (error.status, _REASONS.get(error.status, b"Error")),
        b"content-type: application/problem+json",
        b"content-length: %d" % len(body),
        b"connection: close",
        *(f"{name}: {value}".encode("latin-1") for name, value in error.headers.items()),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def protocol_class(
    *, header_timeout_s: float, max_connections: int, max_header_bytes: int = 64 * 1024
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline and size limit and a connection cap."""

    class GuardedProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None  # armed while headers are arriving
        _header_bytes = 0
        _refused = False  # answered and half-closed: what still arrives is dropped

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            counting = self._header_timer is not None
            super().data_received(data)
            # Still inside the headers after this chunk: count it (a chunk that also carries
            # the end of the headers and some body does not count).
            if counting and self._header_timer is not None:
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._disarm()
                    self._refuse(HeaderTooLarge(
                        f"the request line and headers passed {max_header_bytes} bytes (SR_MAX_HEADER_BYTES)"
                    ))

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("connection refused: %d open (SR_MAX_CONNECTIONS)", len(self.connections) - 1)
                self._refuse(Overloaded(
                    f"the server has {max_connections} connections open (its limit); retry shortly",
                    retry_after_s=1,
                ))
                return
            self._arm()  # a connection that sends nothing at all is timed too

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # a keep-alive connection's next request
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._disarm()
            self._refuse(InvalidBody(f"the HTTP request cannot be parsed: {msg}"))

        def _arm(self) -> None:
            self._disarm()
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served on this connection; its headers came
            self._refuse(RequestTimeout(
                f"the request headers did not arrive within {header_timeout_s} s (SR_HEADER_TIMEOUT_S)"
            ))

        def _refuse(self, error: ServiceError) -> None:
            """Answer ``error`` and close, lingering: a client still sending (the rest of a
            4 MiB header) would get a reset from a plain close while data it has not read is
            unread here, and a reset discards the answer on its side before it reads it
            (tests/test_hostile.py saw it under load). So: the answer, then our FIN, then
            read and drop until the client closes or LINGER_S passes (Apache's lingering close)."""
            if self.transport.is_closing() or self._refused:
                return
            self._refused = True
            self.transport.write(problem_response(error))
            serving = self.cycle is not None and not self.cycle.response_complete
            # A response still being written on this connection (pipelined garbage after a
            # good request) must not meet a half-closed transport: close as before.
            if not serving and self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()

    return GuardedProtocol
