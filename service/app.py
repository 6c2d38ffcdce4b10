"""``create_app(settings)``: the FastAPI application and the lifespan that owns its state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import health, jobs, methods, metrics, models, page, upscale
from service.api.body_limit import BodyLimitMiddleware
from service.api.head import HeadAsGetMiddleware
from service.api.openapi import install_docs, install_openapi
from service.api.problems import install_problem_handlers
from service.api.request_id import RequestIdMiddleware
from service.config import Settings
from service.jobs.runner import JobRunner
from service.models.inference import run_network
from service.serving.batching import RunBatch
from service.serving.calibration import calibrate
from service.serving.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, run_batch: RunBatch = run_network) -> FastAPI:
    """The application; ``run_batch`` runs one batch on the device (tests pass a slow or
    failing network here)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime.start(settings, run_batch=run_batch)
        app.state.runtime = runtime
        jobs: JobRunner | None = None
        app.state.jobs = None
        try:
            if settings.warmup:
                await runtime.in_codec_pool(runtime.warm_up)
            if settings.calibrate:
                runtime.costs = await calibrate(runtime)
            if settings.jobs:
                jobs = app.state.jobs = JobRunner.open(runtime)
                runtime.drain_hooks.append(jobs.stop)
                jobs.start()
            runtime.lifecycle.ready = True
            log.info("ready on %s (%s)", runtime.device, runtime.dtype)
            yield
            # The server stopped taking connections (SIGTERM began the drain earlier): running
            # jobs go back to the queue, then what was admitted finishes.
            await runtime.drain(settings.request_timeout_s)
        finally:
            if jobs is not None:
                await jobs.stop()
                await jobs.close()
            await runtime.close()

    app = FastAPI(
        title="subpixel",
        version=__version__,
        summary="Super-resolution with sub-pixel convolution networks and classical resamplers.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves it offline
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    install_problem_handlers(app)
    if settings.docs:
        install_openapi(app, api_keys_configured=bool(settings.api_keys))
        install_docs(app)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(HeadAsGetMiddleware)
    # The upload streams under its own limit (SR_MAX_UPLOAD_BYTES); every JSON body under this one.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_json_bytes, exempt=("/v1/upscale", "/v1/jobs"))
    for module in (upscale, jobs, methods, models, health, metrics, page):
        app.include_router(module.router)
    return app
