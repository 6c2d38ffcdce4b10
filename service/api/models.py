"""``GET /v1/models``: what is loaded, where, and which weights exactly; ``/v2/models/...``:
every version in the store, by the Open Inference Protocol's metadata and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from service.api.deps import ApiKey, RuntimeDep
from service.api.openapi import problem_responses
from service.errors import NotFound
from service.models.store import ModelCard

router = APIRouter(tags=["models"])


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
    halo: int = Field(description="LR pixels of context a tile's window adds on each side")
    backend: str = Field(description="what runs its batches: torch or onnxruntime (SR_BACKEND)")
    backend_timing_ms: dict[str, float] | None = Field(
        None, description="SR_BACKEND=auto: each backend's start-up time on a batch of tiles"
    )
    benchmarks: dict[str, Any]


class ModelList(BaseModel):
    models: list[LoadedModel]


@router.get("/v1/models", operation_id="list_models", dependencies=[ApiKey], responses=problem_responses(500))
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
                halo=m.halo,
                backend=str(m.backend["backend"]),
                backend_timing_ms=m.backend.get("timed_ms"),  # type: ignore[arg-type]
                benchmarks=m.card.raw.get("benchmarks", {}),
            )
            for m in runtime.models
        ]
    )


# -- Open Inference Protocol v2: model metadata and readiness, by name and version -----------------


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """The protocol's model metadata; ``parameters`` adds what this server knows of the version."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]


class ModelReady(BaseModel):
    name: str
    version: str
    ready: bool


# The request and the answer are encoded images: one BYTES element each.
_IMAGE = [TensorMetadata(name="image", datatype="BYTES", shape=[1])]


def _card_of(runtime: Any, name: str, version: str | None) -> ModelCard:
    try:
        card: ModelCard = runtime.models.lookup(name, version)
    except LookupError as missing:
        raise NotFound(missing.args[0]) from None
    return card


def _metadata(runtime: Any, card: ModelCard, versions: list[str]) -> ModelMetadata:
    loaded = runtime.models.resident(card)
    backend = str(loaded.backend["backend"]) if loaded is not None else "torch"
    return ModelMetadata(
        name=card.name,
        versions=versions,
        platform="onnxruntime_onnx" if backend == "onnxruntime" else "pytorch",
        inputs=_IMAGE,
        outputs=_IMAGE,
        parameters={
            "version": card.version, "method": card.method, "arch": card.arch, "scale": card.scale,
            "sha256": card.sha256, "resident": loaded is not None,
            "request": f"POST /v1/upscale?model={card.ref}",
        },
    )


_V2_ERRORS = problem_responses(404, 500)


@router.get("/v2/models/{name}", operation_id="v2_model_metadata", dependencies=[ApiKey], responses=_V2_ERRORS)
async def model_metadata(name: str, runtime: RuntimeDep) -> ModelMetadata:
    """A model's metadata; ``versions`` lists every version in the store, newest last."""
    card = _card_of(runtime, name, None)
    return _metadata(runtime, card, [c.version for c in runtime.models.versions[name]])


@router.get("/v2/models/{name}/versions/{version}", operation_id="v2_model_version_metadata",
            dependencies=[ApiKey], responses=_V2_ERRORS)
async def model_version_metadata(name: str, version: str, runtime: RuntimeDep) -> ModelMetadata:
    card = _card_of(runtime, name, version)
    return _metadata(runtime, card, [card.version])


def _readiness(runtime: Any, card: ModelCard, response: Response) -> ModelReady:
    ready = runtime.lifecycle.ready and runtime.models.resident(card) is not None
    if not ready:
        response.status_code = 503
    return ModelReady(name=card.name, version=card.version, ready=ready)


@router.get("/v2/models/{name}/ready", operation_id="v2_model_ready", dependencies=[ApiKey],
            responses={**_V2_ERRORS, 503: {"description": "not loaded (an older version loads on first use)"}})
async def model_ready(name: str, runtime: RuntimeDep, response: Response) -> ModelReady:
    """200 when the newest version is resident and the server ready."""
    return _readiness(runtime, _card_of(runtime, name, None), response)


@router.get("/v2/models/{name}/versions/{version}/ready", operation_id="v2_model_version_ready",
            dependencies=[ApiKey],
            responses={**_V2_ERRORS, 503: {"description": "not loaded (an older version loads on first use)"}})
async def model_version_ready(name: str, version: str, runtime: RuntimeDep, response: Response) -> ModelReady:
    """200 when this version is resident (older versions are once something asked for them)."""
    return _readiness(runtime, _card_of(runtime, name, version), response)
