"""Every error as ``application/problem+json``, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.access import INVALID_LABELS, record_refusal
from service.api.request_id import request_id_of
from service.errors import InvalidBody, InvalidParameter, MethodNotAllowed, NotFound, ServiceError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(
        error.problem(), status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON
    )


def _describe(errors: list[dict[str, object]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body"))  # type: ignore[attr-defined]
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def install_problem_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return problem_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            return problem_response(InvalidBody("the body is not valid JSON; send JSON as the schema describes"))
        error: ServiceError = InvalidParameter(_describe(errors))
        route = request.scope.get("route")
        runtime = getattr(request.app.state, "runtime", None)
        if getattr(route, "access_logged", False) and runtime is not None:
            # FastAPI refuses these before the handler runs, so count and log them here.
            record_refusal(
                runtime.metrics, INVALID_LABELS, {"request_id": request_id_of(request.scope)}, error
            )
        return problem_response(error)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, ServiceError):
            # FastAPI wraps whatever failed while reading a body (our body limit) in a 400.
            return problem_response(exc.__cause__)
        if exc.status_code == 400:
            # FastAPI's "There was an error parsing the body" (JSON that does not parse).
            return problem_response(InvalidBody(f"{exc.detail}; send JSON as the schema describes"))
        if exc.status_code == 404:
            return problem_response(NotFound(f"no route {request.url.path}"))
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            error = MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}; allowed: {allowed or 'none'}",
                headers={"Allow": allowed} if allowed else None,
            )
            return problem_response(error)
        error = ServiceError(str(exc.detail))
        error.status = exc.status_code
        return problem_response(error)

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(FaultMiddleware)


class FaultMiddleware:
    """A fault of ours (any other exception) becomes a 500 problem, logged once, and the
    connection stays usable. Starlette's own handler for ``Exception`` answers but then
    re-raises, so uvicorn logged a second traceback and closed the keep-alive connection: the
    client's next request on it failed with a reset (found by tests/test_fuzz_corpus.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # half an answer is out: only closing the connection can say it failed
            response = problem_response(ServiceError("an unexpected error occurred; it has been logged"))
            await response(scope, receive, send)
