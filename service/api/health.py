"""Liveness and readiness, at our paths and at the Open Inference Protocol v2 paths."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/livez", operation_id="livez")
@router.get("/v2/health/live", operation_id="v2_health_live")
async def livez() -> dict[str, str]:
    """The process answers: 200."""
    return {"status": "alive"}


@router.get("/readyz", operation_id="readyz")
@router.get("/v2/health/ready", operation_id="v2_health_ready")
async def readyz(runtime: RuntimeDep, response: Response) -> dict[str, str]:
    """200 once the models are loaded and warmed up; 503 before that, while draining, and while
    a batch has run past ``SR_WATCHDOG_S`` (a hung device)."""
    state = runtime.lifecycle
    if state.draining:
        response.status_code = 503
        return {"status": "draining"}
    if state.device_hung:
        response.status_code = 503
        return {"status": "device_hung"}
    if not state.ready:
        response.status_code = 503
        return {"status": "starting"}
    return {"status": "ready"}
