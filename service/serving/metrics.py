"""Prometheus metrics, built on a registry that is passed in (a fresh one per app and test).

Labels are low-cardinality and created up front so every series starts at 0: methods and
scales are the offered ones, statuses and reasons come from the contract. Never a label per
request or per image size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

# Queue waits are milliseconds when all is well and seconds when it is not.
QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A batch of tiles runs for milliseconds on a GPU, up to seconds on a CPU.
INFER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CODEC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

REJECTION_REASONS = (
    "overloaded",
    "memory",  # overloaded: the memory budget is full
    "deadline",  # overloaded: the work ahead leaves no time before the request's deadline
    "request_timeout",
    "draining",
    "deadline_exceeded",
    "payload_too_large",
    "image_too_large",
    "video_too_large",
    "invalid_image",
    "unsupported_media_type",
    "invalid_parameter",
    "unauthorized",
)
STATUSES = ("200", "400", "401", "408", "413", "415", "422", "499", "500", "503", "504")
FORMATS = ("png", "jpeg", "webp")
STATUS_CLASSES = ("2xx", "4xx", "5xx")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")  # service.jobs.store.STATES
JOB_OUTCOMES = JOB_STATES[2:]


def status_class(status: int) -> str:
    return f"{status // 100}xx"


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    queue_wait: Histogram
    inference_duration: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    inflight: Gauge
    rejected: Counter
    output_pixels: Counter
    decode_duration: Histogram
    encode_duration: Histogram
    model_info: Gauge
    device_memory: Gauge
    ready: Gauge
    admission_limit: Gauge
    memory_budget: Gauge
    memory_reserved: Gauge
    device_hung: Gauge
    device_hangs: Counter
    jobs: Gauge
    jobs_finished: Counter
    job_frames: Counter
    job_duration: Histogram


def build_metrics(
    registry: CollectorRegistry, offered: Iterable[tuple[str, int]] = ()
) -> Metrics:
    ms = ("method", "scale")
    metrics = Metrics(
        registry=registry,
        requests=Counter("sr_requests", "Upscale requests by outcome.", (*ms, "status"), registry=registry),
        request_duration=Histogram(
            "sr_request_duration_seconds",
            "Upscale request latency, arrival to answer, by outcome (2xx, 4xx incl. 499, 5xx incl. 503/504).",
            (*ms, "status_class"), buckets=REQUEST_BUCKETS, registry=registry,
        ),
        queue_wait=Histogram(
            "sr_queue_wait_seconds", "Time a request waited before its first tile ran.",
            ms, buckets=QUEUE_BUCKETS, registry=registry,
        ),
        inference_duration=Histogram(
            "sr_inference_duration_seconds", "Device time per batch.",
            ms, buckets=INFER_BUCKETS, registry=registry,
        ),
        batch_size=Histogram(
            "sr_batch_size", "Tiles per batch.", ms, buckets=BATCH_BUCKETS, registry=registry
        ),
        queue_depth=Gauge("sr_queue_depth", "Tiles waiting for the device.", registry=registry),
        inflight=Gauge("sr_inflight_requests", "Upscale requests being served.", registry=registry),
        rejected=Counter(
            "sr_rejected_requests", "Requests refused, by reason (the problem code).", ("reason",),
            registry=registry,
        ),
        output_pixels=Counter(
            "sr_output_pixels", "Pixels of upscaled output produced.", ms, registry=registry
        ),
        decode_duration=Histogram(
            "sr_decode_duration_seconds", "Image decode time.", buckets=CODEC_BUCKETS, registry=registry
        ),
        encode_duration=Histogram(
            "sr_encode_duration_seconds", "Image encode time by output format.", ("format",),
            buckets=CODEC_BUCKETS, registry=registry,
        ),
        model_info=Gauge(
            "sr_model_info", "Resident models (value 1).",
            ("model", "version", "scale", "device", "dtype"), registry=registry,
        ),
        device_memory=Gauge(
            "sr_device_memory_bytes", "CUDA memory by kind (allocated, reserved).",
            ("device", "kind"), registry=registry,
        ),
        ready=Gauge("sr_ready", "1 when models are warm and the server is not draining.", registry=registry),
        admission_limit=Gauge(
            "sr_admission_limit", "Requests admitted at once before 503 (SR_MAX_QUEUE).", registry=registry
        ),
        memory_budget=Gauge(
            "sr_memory_budget_bytes", "Memory that admitted requests may reserve (SR_MEMORY_BUDGET_BYTES).",
            registry=registry,
        ),
        memory_reserved=Gauge(
            "sr_memory_reserved_bytes", "Memory reserved by the requests in progress (estimated peaks).",
            registry=registry,
        ),
        device_hung=Gauge(
            "sr_device_hung", "1 while a batch has run longer than SR_WATCHDOG_S (readiness is 503).",
            registry=registry,
        ),
        device_hangs=Counter(
            "sr_device_hangs", "Times a batch ran past SR_WATCHDOG_S.", registry=registry
        ),
        # From the job database: every replica's jobs, so aggregate with max(), not sum().
        jobs=Gauge("sr_jobs", "Jobs by state in the job database (all replicas).", ("state",), registry=registry),
        jobs_finished=Counter(
            "sr_jobs_finished", "Jobs this replica ran to an end, by outcome.", ("state",), registry=registry
        ),
        job_frames=Counter(
            "sr_job_frames", "Frames this replica's jobs upscaled (rate(): frames/s).", registry=registry
        ),
        job_duration=Histogram(
            "sr_job_duration_seconds", "A job's run on this replica, start to result.",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=registry,
        ),
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    for method, scale in offered:
        labels = {"method": method, "scale": str(scale)}
        for status in STATUSES:
            metrics.requests.labels(**labels, status=status)
        for status_class in STATUS_CLASSES:
            metrics.request_duration.labels(**labels, status_class=status_class)
        for family in (metrics.queue_wait, metrics.inference_duration, metrics.batch_size, metrics.output_pixels):
            family.labels(**labels)
    for reason in REJECTION_REASONS:
        metrics.rejected.labels(reason=reason)
    for fmt in FORMATS:
        metrics.encode_duration.labels(format=fmt)
    for state in JOB_STATES:
        metrics.jobs.labels(state=state)
    for state in JOB_OUTCOMES:
        metrics.jobs_finished.labels(state=state)
    return metrics


def watch_cuda_memory(metrics: Metrics, device: str, allocated: Callable[[], float],
                      reserved: Callable[[], float]) -> None:
    metrics.device_memory.labels(device=device, kind="allocated").set_function(allocated)
    metrics.device_memory.labels(device=device, kind="reserved").set_function(reserved)
