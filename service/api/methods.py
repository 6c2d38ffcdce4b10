"""``GET /v1/methods`` and ``POST /v1/methods/choose``: measured quality and cost, and a pick."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import ApiKey, RuntimeDep
from service.api.openapi import problem_responses
from service.config import OutputFormat, Scale
from service.imaging.resamplers import CLASSICAL_METHODS
from service.rounding import rounded
from service.serving.choice import REFERENCE_SET, ChoiceRequest

router = APIRouter(prefix="/v1/methods", tags=["methods"])

FAMILIES = {"nearest": "classical", "bilinear": "classical", "bicubic": "classical",
            "espcn": "sub-pixel", "deconv": "sub-pixel (transposed convolution)",
            "espcn-large": "sub-pixel", "ecbsr": "sub-pixel (re-parameterised)",
            "ecbsr-large": "sub-pixel (re-parameterised)"}


class MethodInfo(BaseModel):
    name: str
    family: str
    learned: bool
    scales: list[int]
    psnr_db: dict[str, dict[str, float]] = Field(description="scale -> benchmark set -> PSNR on Y (dB)")
    ms_per_megapixel: dict[str, float | None] = Field(
        description="scale -> measured ms per output megapixel on this server (PNG output)"
    )
    models: dict[str, str] = Field(default_factory=dict, description="scale -> name@version")


class MethodList(BaseModel):
    reference_set: str = Field(description="the set whose PSNR `expected_psnr_db` quotes")
    device: str
    methods: list[MethodInfo]


class ChooseRequest(BaseModel):
    # Strict: JSON true/false are not numbers (lax pydantic reads false as 0).
    width: int = Field(gt=0, le=1 << 16, strict=True)
    height: int = Field(gt=0, le=1 << 16, strict=True)
    scale: Scale
    max_latency_ms: float | None = Field(None, gt=0, strict=True)
    min_psnr_db: float | None = Field(None, ge=0, strict=True)
    objective: Literal["quality", "speed"] = "quality"
    format: OutputFormat = "png"


class CandidateOut(BaseModel):
    method: str
    predicted_latency_ms: float | None
    expected_psnr_db: float | None
    eligible: bool
    reason: str


class ChooseResponse(BaseModel):
    method: str | None
    predicted_latency_ms: float | None
    expected_psnr_db: float | None
    reason: str
    candidates: list[CandidateOut]


@router.get("", operation_id="list_methods", dependencies=[ApiKey], responses=problem_responses(500))
async def list_methods(runtime: RuntimeDep) -> MethodList:
    """Every method with measured quality (per scale and set) and measured cost here."""
    methods = []
    for name, scales in runtime.offered().items():
        resident = {s: runtime.models.get(name, s) for s in scales}
        cost: dict[str, float | None] = {}
        for s in scales:
            value = runtime.costs.ms_per_megapixel(name, s)
            cost[str(s)] = rounded(value)
        methods.append(MethodInfo(
            name=name,
            family=FAMILIES.get(name, "sub-pixel"),
            learned=name not in CLASSICAL_METHODS,
            scales=scales,
            psnr_db={str(s): runtime.quality.psnr(name, s) for s in scales},
            ms_per_megapixel=cost,
            models={str(s): m.ref for s, m in resident.items() if m is not None},
        ))
    return MethodList(reference_set=REFERENCE_SET, device=str(runtime.device), methods=methods)


@router.post("/choose", operation_id="choose_method", dependencies=[ApiKey],
             responses=problem_responses(422, 500))
async def choose_method(body: ChooseRequest, runtime: RuntimeDep) -> ChooseResponse:
    """Which method fits this image, latency budget and quality floor (HTTP 200 even when
    nothing fits: then ``method`` is null and ``reason`` says which constraint failed)."""
    result = runtime.choose(ChoiceRequest(**body.model_dump()))
    return ChooseResponse(
        method=result.method,
        predicted_latency_ms=rounded(result.predicted_latency_ms),
        expected_psnr_db=rounded(result.expected_psnr_db),
        reason=result.reason,
        candidates=[CandidateOut(**c.as_dict()) for c in result.candidates],
    )

