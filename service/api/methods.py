"""``GET /v1/methods`` and ``POST /v1/methods/choose``: measured quality and cost, and a pick."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.api.deps import ApiKey, RuntimeDep
from service.choice import REFERENCE_SET, Candidate, Choice, choose
from service.operators import CLASSICAL_METHODS
from service.runtime import Runtime

router = APIRouter(prefix="/v1/methods", tags=["methods"])

FAMILIES = {"nearest": "classical", "bilinear": "classical", "bicubic": "classical",
            "espcn": "sub-pixel", "deconv": "sub-pixel (transposed convolution)",
            "espcn-large": "sub-pixel"}


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
    width: int = Field(gt=0, le=1 << 16)
    height: int = Field(gt=0, le=1 << 16)
    scale: Literal[2, 3, 4]
    max_latency_ms: float | None = Field(None, gt=0)
    min_psnr_db: float | None = Field(None, ge=0)
    objective: Literal["quality", "speed"] = "quality"
    format: Literal["png", "jpeg", "webp"] = "png"


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


def candidates_for(runtime: Runtime, width: int, height: int, scale: int, fmt: str) -> list[Candidate]:
    """Every offered method at this scale with its predicted latency (own cost + queue)."""
    queue_ms = runtime.batcher.expected_wait_s() * 1000
    out = []
    for method, scales in runtime.offered().items():
        if scale not in scales:
            continue
        own = runtime.costs.predict_ms(method, scale, width, height, fmt)
        wait = 0.0 if method in CLASSICAL_METHODS else queue_ms
        out.append(Candidate(
            method=method,
            predicted_latency_ms=None if own is None else own + wait,
            expected_psnr_db=runtime.quality.expected(method, scale),
        ))
    return out


def adjust_for_content(runtime: Runtime, candidates: list[Candidate], scale: int, proxy_db: float) -> str | None:
    """Replace the learned methods' set-average PSNR by bicubic's plus the gain predicted for
    this image (``service.gain``); a gain below ``SR_AUTO_MIN_GAIN_DB`` counts as none, so the
    faster bicubic wins the tie. Returns a note for the response, or None without a model."""
    model = runtime.gain_models.get(scale)
    bicubic = runtime.quality.expected("bicubic", scale)
    espcn = runtime.quality.expected("espcn", scale)
    if model is None or bicubic is None or espcn is None or espcn <= bicubic:
        return None
    predicted = model.predict_db(proxy_db)
    for c in candidates:
        if c.method in CLASSICAL_METHODS or c.expected_psnr_db is None:
            continue
        gain = (c.expected_psnr_db - bicubic) * predicted / (espcn - bicubic)
        c.expected_psnr_db = bicubic + (gain if gain >= runtime.settings.auto_min_gain_db else 0.0)
    return f"predicted espcn gain over bicubic for this image: {predicted:.2f} dB"


def choice_for(runtime: Runtime, request: ChooseRequest, proxy_db: float | None = None) -> Choice:
    """``proxy_db``: the image's proxy gain (``service.gain``), when the image is at hand."""
    candidates = candidates_for(runtime, request.width, request.height, request.scale, request.format)
    if proxy_db is not None:
        adjust_for_content(runtime, candidates, request.scale, proxy_db)
    return choose(candidates, objective=request.objective, max_latency_ms=request.max_latency_ms,
                  min_psnr_db=request.min_psnr_db)


@router.get("", operation_id="list_methods", dependencies=[ApiKey])
async def list_methods(runtime: RuntimeDep) -> MethodList:
    """Every method with measured quality (per scale and set) and measured cost here."""
    methods = []
    for name, scales in runtime.offered().items():
        resident = {s: runtime.models.get(name, s) for s in scales}
        cost: dict[str, float | None] = {}
        for s in scales:
            value = runtime.costs.ms_per_megapixel(name, s)
            cost[str(s)] = None if value is None else round(value, 2)
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


@router.post("/choose", operation_id="choose_method", dependencies=[ApiKey])
async def choose_method(body: ChooseRequest, runtime: RuntimeDep) -> ChooseResponse:
    """Which method fits this image, latency budget and quality floor (HTTP 200 even when
    nothing fits: then ``method`` is null and ``reason`` says which constraint failed)."""
    result = choice_for(runtime, body)
    return ChooseResponse(
        method=result.method,
        predicted_latency_ms=_r(result.predicted_latency_ms),
        expected_psnr_db=_r(result.expected_psnr_db),
        reason=result.reason,
        candidates=[CandidateOut(**c.as_dict()) for c in result.candidates],
    )


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

