"""Service errors: one class per row of the contract's error table.

Each becomes an ``application/problem+json`` response (RFC 9457) with the same ``code``.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://subpixel.dev/problems/"


class ServiceError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"
    # The ``sr_rejected_requests_total`` label when it says more than the code (a 503 for memory
    # and a 503 for the request count are both ``overloaded`` to the client).
    reason: str | None = None

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, detail={self.detail!r})"

    def problem(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }


class InvalidImage(ServiceError):
    status, code, title = 400, "invalid_image", "The body is not a decodable image"


class InvalidBody(ServiceError):
    status, code, title = 400, "invalid_body", "The request body cannot be parsed"


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "A valid API key is required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ServiceError):
    status, code, title = 404, "not_found", "No such resource"


class MethodNotAllowed(ServiceError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class PayloadTooLarge(ServiceError):
    status, code, title = 413, "payload_too_large", "The upload is too large"


class RequestTimeout(ServiceError):
    status, code, title = 408, "request_timeout", "The upload did not arrive in time"


class ImageTooLarge(ServiceError):
    status, code, title = 413, "image_too_large", "The image has too many pixels"


class VideoTooLarge(ServiceError):
    status, code, title = 413, "video_too_large", "The video is over a limit"


class HeaderTooLarge(ServiceError):
    status, code, title = 431, "header_too_large", "The request headers are too large"


class UnsupportedMediaType(ServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InvalidParameter(ServiceError):
    status, code, title = 422, "invalid_parameter", "A parameter is invalid"


class Overloaded(ServiceError):
    status, code, title = 503, "overloaded", "The server is overloaded"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_s))})


class Draining(ServiceError):
    status, code, title = 503, "draining", "The server is shutting down"

    def __init__(self, detail: str = "the server is draining; retry on another replica") -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class ClientDisconnected(ServiceError):
    # Nobody reads this answer; the status only labels the metrics and the log line.
    status, code, title = 499, "client_disconnected", "The client closed the connection"


class InferenceFailed(ServiceError):
    status, code, title = 500, "inference_failed", "The model failed on this request"


class DeadlineExceeded(ServiceError):
    status, code, title = 504, "deadline_exceeded", "The request waited too long"


class JobNotFinished(ServiceError):
    status, code, title = 409, "job_not_finished", "The job has no result (yet)"


class JobInterrupted(ServiceError):
    status, code, title = 500, "job_interrupted", "The job was interrupted too often"


class JobsUnavailable(ServiceError):
    status, code, title = 503, "jobs_unavailable", "The job database cannot be reached"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})
