"""Every error as ``application/problem+json``, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.request_id import request_id_of
from service.errors import InvalidParameter, MethodNotAllowed, NotFound, ServiceError

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")

UPSCALE_PATH = "/v1/upscale"

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
        error = InvalidParameter(_describe(list(exc.errors())))
        if request.url.path == UPSCALE_PATH:
            # FastAPI refuses these before the handler runs (e.g. scale=two), so the handler's
            # own accounting never sees them: count and log them here like its other 4xx.
            runtime = getattr(request.app.state, "runtime", None)
            if runtime is not None:
                runtime.metrics.requests.labels(method="invalid", scale="invalid", status="422").inc()
            access_log.info("upscale 422", extra={
                "request_id": request_id_of(request.scope), "status": 422, "code": error.code,
                "detail": error.detail,
            })
        return problem_response(error)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return problem_response(NotFound(f"no route {request.url.path}"))
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            return problem_response(error)
        error = ServiceError(str(exc.detail))
        error.status = exc.status_code
        return problem_response(error)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(ServiceError("an unexpected error occurred; it has been logged"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
