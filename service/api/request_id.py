"""``X-Request-ID`` on every response: the client's if it sent a sane one, else a new one."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HEADER = "x-request-id"


def request_id_of(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    rid: str = state.get("request_id", "")
    return rid


class RequestIdMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not buffer streamed bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(HEADER.encode(), b"").decode("latin-1")
        rid = sent if _SAFE_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER.encode()]
                headers.append((HEADER.encode(), rid.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
