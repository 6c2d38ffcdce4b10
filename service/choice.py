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

Objective = Literal["quality", "speed"]
REFERENCE_SET = "Set14"
CLASSICAL_QUALITY_FILE = Path(__file__).parent / "data" / "classical_quality.json"


# -- quality ------------------------------------------------------------------------------------


class QualityTable:
    """PSNR (dB) by method, scale and set."""

    def __init__(self, table: dict[str, dict[int, dict[str, float]]]) -> None:
        self._table = table

    @classmethod
    def load(cls, cards: list[tuple[str, int, dict[str, Any]]], classical_file: Path = CLASSICAL_QUALITY_FILE) -> QualityTable:
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

    def calibrated(self, method: str, scale: int) -> bool:
        return (method, scale) in self.process

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
            "predicted_latency_ms": _round(self.predicted_latency_ms),
            "expected_psnr_db": _round(self.expected_psnr_db),
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


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


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
