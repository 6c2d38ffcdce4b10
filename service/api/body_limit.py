"""A body limit for every endpoint but the upload: JSON bodies are small, and FastAPI reads a
body whole before validating it, so without a limit one request could hold hundreds of MB."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Pure ASGI: refuse a declared Content-Length over ``limit`` at once, and stop a streamed
    body the moment it passes ``limit`` (the route's handler answers the 413 problem)."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        limit = self.limit
        declared = dict(scope["headers"]).get(b"content-length", b"")
        received = int(declared) if declared.isdigit() and int(declared) > limit else 0

        async def limited() -> Message:
            nonlocal received
            if received > limit:  # declared too large: refuse before reading a byte
                raise PayloadTooLarge(f"the body is {received} bytes; the limit for {scope['path']} is {limit}")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes for {scope['path']}")
            return message

        await self.app(scope, limited, send)
