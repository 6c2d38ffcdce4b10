"""Counting and access-logging upscale requests: one structured line and one counter per
request, whatever its outcome, whether the handler ran or FastAPI refused it before."""

from __future__ import annotations

import logging
import time

from fastapi.routing import APIRoute

from service.errors import ServiceError
from service.rounding import ms
from service.serving.metrics import REJECTION_REASONS, Metrics, status_class

access_log = logging.getLogger("service.access")

# The metric labels of a request refused before its method and scale were known to be valid.
INVALID_LABELS = {"method": "invalid", "scale": "invalid"}


class AccessLoggedRoute(APIRoute):
    """A route whose refusals are counted and logged by :func:`record_refusal`, FastAPI's own
    422s included (those happen before the handler runs; ``api.problems`` sees the marker)."""

    access_logged = True


def record_refusal(
    metrics: Metrics,
    labels: dict[str, str],
    record: dict[str, object],
    error: ServiceError,
    started: float | None = None,
) -> None:
    """Count and access-log a refused request (a 4xx, 499, 503 or 504 problem)."""
    metrics.requests.labels(**labels, status=str(error.status)).inc()
    reason = error.reason or error.code
    if reason in REJECTION_REASONS:
        metrics.rejected.labels(reason=reason).inc()
    record.update(status=error.status, code=error.code, detail=error.detail)
    if started is not None:
        record["total_ms"] = ms(_observe_duration(metrics, labels, error.status, started))
    access_log.info("upscale %s", error.status, extra=record)


def record_fault(metrics: Metrics, labels: dict[str, str], record: dict[str, object], started: float) -> None:
    """Count and log a fault of ours; the problem handler answers it as problem+json."""
    metrics.requests.labels(**labels, status="500").inc()
    record.update(status=500, code="internal_error", total_ms=ms(_observe_duration(metrics, labels, 500, started)))
    access_log.error("upscale 500", extra=record)


def record_success(
    metrics: Metrics, labels: dict[str, str], record: dict[str, object], started: float, output_pixels: int
) -> None:
    metrics.requests.labels(**labels, status="200").inc()
    duration = _observe_duration(metrics, labels, 200, started)
    metrics.output_pixels.labels(**labels).inc(output_pixels)
    record.update(status=200, total_ms=ms(duration))
    access_log.info("upscale 200", extra=record)


def _observe_duration(metrics: Metrics, labels: dict[str, str], status: int, started: float) -> float:
    """Time every outcome (a p99 that saw only successes would hide the 504s); requests whose
    method and scale were not valid have no histogram series."""
    duration = time.monotonic() - started
    if labels is not INVALID_LABELS:
        metrics.request_duration.labels(**labels, status_class=status_class(status)).observe(duration)
    return duration
