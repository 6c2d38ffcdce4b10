"""``GET /v1/models``: what is loaded, where, and which weights exactly."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import ApiKey, RuntimeDep
from service.api.openapi import problem_responses

router = APIRouter(prefix="/v1", tags=["models"])


class LoadedModel(BaseModel):
    name: str
    version: str
    method: str
    arch: str
    scale: int
    device: str
    dtype: str
    sha256: str
    parameters: int | None
    macs_per_lr_pixel: int | None
    backend: str = Field(description="what runs its batches: torch or onnxruntime (SR_BACKEND)")
    backend_timing_ms: dict[str, float] | None = Field(
        None, description="SR_BACKEND=auto: each backend's start-up time on a batch of tiles"
    )
    benchmarks: dict[str, Any]


class ModelList(BaseModel):
    models: list[LoadedModel]


@router.get("/models", operation_id="list_models", dependencies=[ApiKey], responses=problem_responses(500))
async def list_models(runtime: RuntimeDep) -> ModelList:
    """Every resident model (``deconv`` is the espcn weights with the rewritten head)."""
    return ModelList(
        models=[
            LoadedModel(
                name=m.card.name,
                version=m.card.version,
                method=m.method,
                arch=m.card.arch,
                scale=m.scale,
                device=str(m.device),
                dtype=str(m.dtype).removeprefix("torch."),
                sha256=m.card.sha256,
                parameters=m.card.raw.get("parameters"),
                macs_per_lr_pixel=m.card.raw.get("macs_per_lr_pixel"),
                backend=str(m.backend["backend"]),
                backend_timing_ms=m.backend.get("timed_ms"),  # type: ignore[arg-type]
                benchmarks=m.card.raw.get("benchmarks", {}),
            )
            for m in runtime.models
        ]
    )
