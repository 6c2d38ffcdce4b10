"""``python -m service [--host H] [--port P]``: serve with the settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.api.connection import protocol_class
from service.app import create_app
from service.config import Settings
from service.logs import configure_logging
from service.malloc import release_large_buffers

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM drains first: readiness turns 503, new requests are refused with
    503 ``draining``, admitted requests finish, and only then does the server stop.

    Plain uvicorn stops accepting connections at once, so a load balancer's probe sees a
    refused connection instead of a clean "not ready", and keep-alive clients get resets.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: Settings) -> None:
        super().__init__(config)
        self.app = app
        self.settings = settings
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = getattr(self.app.state, "runtime", None)
        if sig != signal.SIGTERM or runtime is None or self._draining is not None:
            super().handle_exit(sig, frame)
            return
        log.info("SIGTERM: draining %d requests in flight", runtime.lifecycle.inflight)
        runtime.begin_drain()
        loop = asyncio.get_event_loop()
        self._draining = loop.create_task(self._drain_then_exit(runtime))

    async def _drain_then_exit(self, runtime) -> None:  # type: ignore[no-untyped-def]
        await runtime.drain(self.settings.request_timeout_s)
        # Keep answering "not ready" a little longer so load balancers stop routing here.
        await asyncio.sleep(self.settings.drain_delay_s)
        log.info("drained; stopping")
        self.should_exit = True


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    """How this server runs uvicorn (tests' in-process servers too)."""
    options: dict[str, object] = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep our JSON handler
        access_log=False,  # one structured line per request comes from the handler
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
        # Header deadline, connection cap and problem+json for malformed HTTP (api.connection).
        http=protocol_class(header_timeout_s=settings.header_timeout_s, max_connections=settings.max_connections,
                            max_header_bytes=settings.max_header_bytes),
    )
    # One process per device: the models and the batch queue live in this process.
    return uvicorn.Config(app, **{**options, **overrides})  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    release_large_buffers()
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    args = parser.parse_args(argv)
    settings = settings.model_copy(update={"host": args.host, "port": args.port})
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn_config(app, settings)
    DrainingServer(config, app, settings).run()


if __name__ == "__main__":
    main()
