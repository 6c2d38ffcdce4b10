"""Quality regression of the shipped models, with the field's protocol, through HTTP.

Uses the Set5 copy in tests/data (the suite does not need ../shared).
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.evaluate import benchmark_samples, score_method
from service.models.store import discover

from .conftest import DATA, SHIPPED_STORE

# Issue #3's floors for espcn on Set5 (the paper's 91-image level, published reproductions).
SET5_FLOOR_DB = {2: 36.5, 3: 32.55, 4: 30.2}
LARGE_SCALES = sorted(c.scale for c in discover(SHIPPED_STORE) if c.arch == "espcn-large")


@pytest.fixture(scope="module")
def set5_scores(client: TestClient) -> dict[tuple[str, int], float]:
    scores = {}
    for scale in (2, 3, 4):
        samples = benchmark_samples("Set5", scale, root=DATA)
        methods = ["bicubic", "espcn", "deconv"] + (["espcn-large"] if scale in LARGE_SCALES else [])
        for method in methods:
            scores[(method, scale)] = score_method(client, samples, method, scale).psnr_db
    return scores


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_beats_bicubic_by_a_decibel_on_set5(set5_scores: dict[tuple[str, int], float], scale: int) -> None:
    assert set5_scores[("espcn", scale)] >= set5_scores[("bicubic", scale)] + 1.0


def test_espcn_x3_reaches_31_4_db_on_set5(set5_scores: dict[tuple[str, int], float]) -> None:
    assert set5_scores[("espcn", 3)] >= 31.4


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_is_within_0_3_db_of_the_floor_on_set5(set5_scores: dict[tuple[str, int], float], scale: int) -> None:
    assert set5_scores[("espcn", scale)] >= SET5_FLOOR_DB[scale] - 0.3


def test_the_large_tier_ships_for_every_scale() -> None:
    assert LARGE_SCALES == [2, 3, 4]


def test_espcn_large_x3_reaches_the_papers_best_espcn_on_set5(set5_scores: dict[tuple[str, int], float]) -> None:
    # Shi et al.'s ImageNet-trained ESPCN: 33.13 dB (the issue's target for the large tier).
    assert set5_scores[("espcn-large", 3)] >= 33.13


@pytest.mark.parametrize("scale", LARGE_SCALES)
def test_espcn_large_beats_espcn_on_set5(set5_scores: dict[tuple[str, int], float], scale: int) -> None:
    assert set5_scores[("espcn-large", scale)] > set5_scores[("espcn", scale)]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_deconv_scores_like_espcn(set5_scores: dict[tuple[str, int], float], scale: int) -> None:
    assert abs(set5_scores[("deconv", scale)] - set5_scores[("espcn", scale)]) < 0.01


@pytest.mark.parametrize(
    ("method", "scale"), [("espcn", 2), ("espcn", 3), ("espcn", 4)] + [("espcn-large", s) for s in LARGE_SCALES]
)
def test_card_numbers_are_what_the_evaluation_prints(
    set5_scores: dict[tuple[str, int], float], method: str, scale: int
) -> None:
    card = next(c for c in discover(SHIPPED_STORE) if c.arch == method and c.scale == scale)
    set5 = card.raw["benchmarks"]["Set5"]
    assert set5["psnr_db"] == pytest.approx(set5_scores[(method, scale)], abs=0.01)
    assert set5["bicubic_psnr_db"] == pytest.approx(set5_scores[("bicubic", scale)], abs=0.01)
