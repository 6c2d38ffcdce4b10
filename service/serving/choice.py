"""Method choice from measured quality and measured cost.

Quality: PSNR per method x scale x benchmark set, from the model cards (learned methods) and
from the evaluation command's table for the classical resamplers (``service/data``); nothing
typed by hand. Cost: per method x scale, a fixed cost plus a cost per output megapixel, fitted
at warm-up from timed runs on this server's device (the BentoML idea: ``cost = a + b * n``),
plus the codec cost of the requested format, and corrected online by an exponentially
weighted ratio of measured to predicted latency. A request's predicted latency is its own
cost plus the expected wait for the work already queued.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from service.imaging.gain import GainModel
from service.imaging.resamplers import CLASSICAL_METHODS
from service.rounding import rounded

Objective = Literal["quality", "speed"]
REFERENCE_SET = "Set14"
# In the model store, beside the cards: written by ``python -m service.evaluate --write-cards``.
CLASSICAL_QUALITY_FILE = "classical_quality.json"


# -- quality ------------------------------------------------------------------------------------


class QualityTable:
    """PSNR (dB) by method, scale and set."""

    def __init__(self, table: dict[str, dict[int, dict[str, float]]]) -> None:
        self._table = table

    @classmethod
    def load(cls, cards: list[tuple[str, int, dict[str, Any]]], classical_file: Path) -> QualityTable:
        """``cards``: (method, scale, card's ``benchmarks``) for every resident learned model."""
        table: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
        if classical_file.exists():
            raw = json.loads(classical_file.read_text())
            for scale_key, methods in raw.items():
                if not scale_key.startswith("x"):
                    continue
                for method, per_set in methods.items():
                    table[method][int(scale_key[1:])] = {s: v["psnr_db"] for s, v in per_set.items()}
        for method, scale, benchmarks in cards:
            if benchmarks:
                table[method][scale] = {s: v["psnr_db"] for s, v in benchmarks.items()}
        return cls(dict(table))

    def psnr(self, method: str, scale: int) -> dict[str, float]:
        return dict(self._table.get(method, {}).get(scale, {}))

    def expected(self, method: str, scale: int, set_name: str = REFERENCE_SET) -> float | None:
        per_set = self._table.get(method, {}).get(scale, {})
        if set_name in per_set:
            return per_set[set_name]
        return sum(per_set.values()) / len(per_set) if per_set else None


# -- cost ---------------------------------------------------------------------------------------


@dataclass
class LinearCost:
    """``ms = fixed_ms + ms_per_megapixel * megapixels``, fitted by least squares."""

    fixed_ms: float
    ms_per_megapixel: float

    def predict(self, megapixels: float) -> float:
        return max(0.0, self.fixed_ms + self.ms_per_megapixel * megapixels)

    @classmethod
    def fit(cls, samples: list[tuple[float, float]]) -> LinearCost:
        """``samples``: (megapixels, ms). Falls back to a line through the origin."""
        n = len(samples)
        mean_x = sum(x for x, _ in samples) / n
        mean_y = sum(y for _, y in samples) / n
        var = sum((x - mean_x) ** 2 for x, _ in samples)
        if n < 2 or var == 0:
            return cls(0.0, mean_y / mean_x if mean_x else 0.0)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in samples) / var
        intercept = mean_y - slope * mean_x
        if intercept < 0:  # a negative fixed cost is noise: refit through the origin
            slope = sum(x * y for x, y in samples) / sum(x * x for x, _ in samples)
            intercept = 0.0
        return cls(intercept, max(slope, 0.0))


@dataclass
class CostModel:
    """Per (method, scale) processing cost and per format codec cost, corrected online."""

    process: dict[tuple[str, int], LinearCost] = field(default_factory=dict)
    decode: LinearCost | None = None  # per input megapixel
    encode: dict[str, LinearCost] = field(default_factory=dict)  # per output megapixel
    correction: dict[tuple[str, int], float] = field(default_factory=dict)
    smoothing: float = 0.2

    def ms_per_megapixel(self, method: str, scale: int, fmt: str = "png") -> float | None:
        """Marginal cost of one output megapixel, processing plus encoding."""
        cost = self.process.get((method, scale))
        if cost is None:
            return None
        encode = self.encode.get(fmt)
        decode = self.decode
        per_mp = cost.ms_per_megapixel + (encode.ms_per_megapixel if encode else 0.0)
        per_mp += (decode.ms_per_megapixel / (scale * scale)) if decode else 0.0
        return per_mp * self.correction.get((method, scale), 1.0)

    def predict_ms(self, method: str, scale: int, width: int, height: int, fmt: str = "png") -> float | None:
        cost = self.process.get((method, scale))
        if cost is None:
            return None
        in_mp = width * height / 1e6
        out_mp = in_mp * scale * scale
        ms = cost.predict(out_mp)
        if self.decode:
            ms += self.decode.predict(in_mp)
        if fmt in self.encode:
            ms += self.encode[fmt].predict(out_mp)
        return ms * self.correction.get((method, scale), 1.0)

    def observe(self, method: str, scale: int, width: int, height: int, fmt: str, measured_ms: float) -> None:
        """Fold a served request's measured cost (decode + process + encode) into the model."""
        key = (method, scale)
        old = self.correction.get(key, 1.0)
        predicted = self.predict_ms(method, scale, width, height, fmt)
        if not predicted or predicted <= 0 or measured_ms <= 0:
            return
        ratio = measured_ms / (predicted / old)
        ratio = min(max(ratio, 0.2), 5.0)  # one outlier must not swing the model
        self.correction[key] = (1 - self.smoothing) * old + self.smoothing * ratio


# -- policy -------------------------------------------------------------------------------------


@dataclass
class Candidate:
    method: str
    predicted_latency_ms: float | None
    expected_psnr_db: float | None
    eligible: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "predicted_latency_ms": rounded(self.predicted_latency_ms),
            "expected_psnr_db": rounded(self.expected_psnr_db),
            "eligible": self.eligible,
            "reason": self.reason,
        }


@dataclass
class Choice:
    method: str | None
    predicted_latency_ms: float | None
    expected_psnr_db: float | None
    reason: str
    candidates: list[Candidate]


@dataclass(frozen=True)
class ChoiceRequest:
    """What a choice depends on: the image's size, the scale, the constraints, the format."""

    width: int
    height: int
    scale: int
    max_latency_ms: float | None = None
    min_psnr_db: float | None = None
    objective: Objective = "quality"
    format: str = "png"


def candidates_for(
    request: ChoiceRequest,
    offered: dict[str, list[int]],
    costs: CostModel,
    quality: QualityTable,
    queue_wait_ms: float,
) -> list[Candidate]:
    """Every offered method at this scale with its predicted latency: its own cost plus, for a
    network, the wait for the tiles already queued (the resamplers do not queue)."""
    out = []
    for method, scales in offered.items():
        if request.scale not in scales:
            continue
        own = costs.predict_ms(method, request.scale, request.width, request.height, request.format)
        wait = 0.0 if method in CLASSICAL_METHODS else queue_wait_ms
        out.append(Candidate(
            method=method,
            predicted_latency_ms=None if own is None else own + wait,
            expected_psnr_db=quality.expected(method, request.scale),
        ))
    return out


def adjust_for_content(
    candidates: list[Candidate],
    quality: QualityTable,
    gain_model: GainModel | None,
    scale: int,
    proxy_db: float,
    min_gain_db: float,
) -> str | None:
    """Replace the learned methods' set-average PSNR by bicubic's plus the gain predicted for
    this image (``imaging.gain``), each method's gain scaled by its set-average gain relative to
    espcn's; a gain below ``min_gain_db`` counts as none, so the faster bicubic wins the tie.
    Returns a note for the response, or None without a fitted line."""
    bicubic = quality.expected("bicubic", scale)
    espcn = quality.expected("espcn", scale)
    if gain_model is None or bicubic is None or espcn is None or espcn <= bicubic:
        return None
    predicted = gain_model.predict_db(proxy_db)
    for c in candidates:
        if c.method in CLASSICAL_METHODS or c.expected_psnr_db is None:
            continue
        gain = (c.expected_psnr_db - bicubic) * predicted / (espcn - bicubic)
        c.expected_psnr_db = bicubic + (gain if gain >= min_gain_db else 0.0)
    return f"predicted espcn gain over bicubic for this image: {predicted:.2f} dB"


def choose(
    candidates: list[Candidate],
    *,
    objective: Objective,
    max_latency_ms: float | None,
    min_psnr_db: float | None,
) -> Choice:
    """Quality: best PSNR within the budget. Speed: fastest meeting the PSNR floor."""
    for c in candidates:
        problems = []
        if max_latency_ms is not None:
            if c.predicted_latency_ms is None:
                problems.append("latency not measured yet")
            elif c.predicted_latency_ms > max_latency_ms:
                over = c.predicted_latency_ms - max_latency_ms
                problems.append(f"predicted {c.predicted_latency_ms:.0f} ms, {over:.0f} ms over the budget")
        if min_psnr_db is not None:
            if c.expected_psnr_db is None:
                problems.append("quality not measured")
            elif c.expected_psnr_db < min_psnr_db:
                short = min_psnr_db - c.expected_psnr_db
                problems.append(f"expected {c.expected_psnr_db:.2f} dB, {short:.2f} dB under the floor")
        c.eligible = not problems
        c.reason = "; ".join(problems) if problems else "meets the constraints"

    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        return Choice(None, None, None, _nothing_fits(candidates, max_latency_ms, min_psnr_db), candidates)

    def latency(c: Candidate) -> float:
        return c.predicted_latency_ms if c.predicted_latency_ms is not None else math.inf

    def psnr(c: Candidate) -> float:
        return c.expected_psnr_db if c.expected_psnr_db is not None else -math.inf

    if objective == "quality":
        best = max(eligible, key=lambda c: (psnr(c), -latency(c), c.method))
        why = f"highest expected PSNR ({psnr(best):.2f} dB) among methods that meet the constraints"
    else:
        best = min(eligible, key=lambda c: (latency(c), -psnr(c), c.method))
        why = f"fastest ({latency(best):.0f} ms predicted) among methods that meet the constraints"
    best.reason = "chosen: " + why
    return Choice(best.method, best.predicted_latency_ms, best.expected_psnr_db, why, candidates)


def _nothing_fits(candidates: list[Candidate], max_latency_ms: float | None, min_psnr_db: float | None) -> str:
    parts = []
    timed = [c for c in candidates if c.predicted_latency_ms is not None]
    rated = [c for c in candidates if c.expected_psnr_db is not None]
    if max_latency_ms is not None and timed:
        fastest = min(timed, key=lambda c: c.predicted_latency_ms or 0.0)
        assert fastest.predicted_latency_ms is not None
        if fastest.predicted_latency_ms > max_latency_ms:
            parts.append(
                f"no method fits max_latency_ms={max_latency_ms:g}: the fastest, {fastest.method}, "
                f"needs {fastest.predicted_latency_ms:.0f} ms ({fastest.predicted_latency_ms - max_latency_ms:.0f} ms over)"
            )
    if min_psnr_db is not None and rated:
        best = max(rated, key=lambda c: c.expected_psnr_db or 0.0)
        assert best.expected_psnr_db is not None
        if best.expected_psnr_db < min_psnr_db:
            parts.append(
                f"no method reaches min_psnr_db={min_psnr_db:g}: the best, {best.method}, "
                f"gives {best.expected_psnr_db:.2f} dB ({min_psnr_db - best.expected_psnr_db:.2f} dB short)"
            )
    if not parts:
        parts.append("no single method meets both constraints: those fast enough fall below the "
                     "PSNR floor and those good enough are too slow")
    return "; ".join(parts)
