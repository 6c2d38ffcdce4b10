"""The method-choice policy on synthetic tables, the cost model, and the API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.imaging.resamplers import CLASSICAL_METHODS
from service.serving.choice import Candidate, CostModel, LinearCost, choose

from .helpers import SHIPPED_STORE, assert_problem, image_bytes


def table() -> list[Candidate]:
    return [
        Candidate("nearest", 5.0, 25.0),
        Candidate("bicubic", 10.0, 27.5),
        Candidate("espcn", 40.0, 29.0),
        Candidate("espcn-large", 200.0, 29.6),
    ]


def test_quality_picks_the_best_psnr_within_the_budget() -> None:
    choice = choose(table(), objective="quality", max_latency_ms=50, min_psnr_db=None)
    assert choice.method == "espcn" and choice.predicted_latency_ms == 40.0
    by_name = {c.method: c for c in choice.candidates}
    assert not by_name["espcn-large"].eligible and "150 ms over" in by_name["espcn-large"].reason
    assert by_name["espcn"].reason.startswith("chosen")


def test_quality_without_a_budget_takes_the_best() -> None:
    assert choose(table(), objective="quality", max_latency_ms=None, min_psnr_db=None).method == "espcn-large"


def test_speed_picks_the_fastest_meeting_the_floor() -> None:
    choice = choose(table(), objective="speed", max_latency_ms=None, min_psnr_db=27.0)
    assert choice.method == "bicubic"
    assert "under the floor" in {c.method: c for c in choice.candidates}["nearest"].reason


def test_nothing_fits_says_which_constraint_and_by_how_much() -> None:
    choice = choose(table(), objective="quality", max_latency_ms=2, min_psnr_db=None)
    assert choice.method is None
    assert "max_latency_ms=2" in choice.reason and "nearest" in choice.reason and "3 ms over" in choice.reason
    choice = choose(table(), objective="speed", max_latency_ms=None, min_psnr_db=31)
    assert choice.method is None and "1.40 dB short" in choice.reason
    choice = choose(table(), objective="quality", max_latency_ms=20, min_psnr_db=29)
    assert choice.method is None and "both" in choice.reason


def test_ties_break_towards_speed_then_name() -> None:
    tied = [Candidate("b", 10.0, 30.0), Candidate("a", 10.0, 30.0), Candidate("c", 5.0, 30.0)]
    assert choose(tied, objective="quality", max_latency_ms=None, min_psnr_db=None).method == "c"
    tied = [Candidate("b", 10.0, 30.0), Candidate("a", 10.0, 30.0)]
    assert choose(tied, objective="speed", max_latency_ms=None, min_psnr_db=None).method == "a"


def test_unmeasured_latency_never_fits_a_budget() -> None:
    choice = choose([Candidate("espcn", None, 30.0)], objective="quality", max_latency_ms=100, min_psnr_db=None)
    assert choice.method is None
    assert choose([Candidate("espcn", None, 30.0)], objective="quality", max_latency_ms=None,
                  min_psnr_db=None).method == "espcn"


def test_linear_cost_fit_recovers_a_line() -> None:
    fit = LinearCost.fit([(0.1, 7.0), (0.5, 15.0), (1.0, 25.0)])
    assert fit.fixed_ms == pytest.approx(5.0) and fit.ms_per_megapixel == pytest.approx(20.0)
    assert LinearCost.fit([(1.0, -5.0), (2.0, 10.0)]).fixed_ms == 0.0


def test_online_observations_pull_predictions_towards_measurements() -> None:
    model = CostModel(process={("espcn", 3): LinearCost(0.0, 100.0)})
    assert model.predict_ms("espcn", 3, 1000, 1000, "png") == pytest.approx(900.0)
    for _ in range(30):
        model.observe("espcn", 3, 1000, 1000, "png", 1800.0)
    assert model.predict_ms("espcn", 3, 1000, 1000, "png") == pytest.approx(1800.0, rel=0.02)


@pytest.fixture(scope="module")
def calibrated() -> Iterator[TestClient]:
    from service.app import create_app
    from service.config import Settings

    with TestClient(create_app(Settings(model_store=SHIPPED_STORE, device="cpu", calibrate=True))) as c:
        yield c


def test_methods_lists_measured_quality_and_cost(calibrated: TestClient) -> None:
    body = calibrated.get("/v1/methods").json()
    methods = {m["name"]: m for m in body["methods"]}
    assert {"nearest", "bilinear", "bicubic", "espcn", "deconv"} <= set(methods)
    assert methods["espcn"]["learned"] and not methods["bicubic"]["learned"]
    for name in ("bicubic", "espcn"):
        for scale in ("2", "3", "4"):
            assert methods[name]["ms_per_megapixel"][scale] > 0
            assert methods[name]["psnr_db"][scale]["Set5"] > 20
    # Measured, not assumed: the network costs more per pixel than nearest.
    assert methods["espcn"]["ms_per_megapixel"]["3"] > methods["nearest"]["ms_per_megapixel"]["3"]


def test_choose_endpoint(calibrated: TestClient) -> None:
    body = calibrated.post("/v1/methods/choose", json={"width": 256, "height": 256, "scale": 3,
                                                      "objective": "quality"}).json()
    # For quality: the learned method with the best expected PSNR there is (no budget given).
    best = max(c["expected_psnr_db"] for c in body["candidates"] if c["expected_psnr_db"] is not None)
    assert body["method"] not in ("nearest", "bilinear", "bicubic") and body["expected_psnr_db"] == best
    assert body["predicted_latency_ms"] > 0 and body["expected_psnr_db"] > 25
    assert {c["method"] for c in body["candidates"]} >= {"nearest", "bicubic", "espcn"}
    fast = calibrated.post("/v1/methods/choose", json={"width": 256, "height": 256, "scale": 3,
                                                      "objective": "speed"}).json()
    assert fast["predicted_latency_ms"] <= body["predicted_latency_ms"]
    none = calibrated.post("/v1/methods/choose", json={"width": 256, "height": 256, "scale": 3,
                                                      "max_latency_ms": 0.001}).json()
    assert none["method"] is None and "max_latency_ms" in none["reason"]


@pytest.mark.parametrize(
    "body",
    [
        {"width": -1, "height": 10, "scale": 2},
        {"width": 10, "height": 0, "scale": 2},
        {"width": 10, "height": 10, "scale": 5},
        {"width": 10, "height": 10, "scale": 2, "objective": "beauty"},
        {"width": 10, "scale": 2},
        {"height": 10, "width": 10},
        {"width": 10, "height": 10, "scale": 2, "max_latency_ms": -5},
    ],
)
def test_choose_rejects_bad_bodies(calibrated: TestClient, body: dict[str, object]) -> None:
    assert_problem(calibrated.post("/v1/methods/choose", json=body), 422, "invalid_parameter")


def test_choose_rejects_non_json(calibrated: TestClient) -> None:
    # A body that is not JSON at all is a malformed request (400), not an invalid parameter (422).
    response = calibrated.post("/v1/methods/choose", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "invalid_body")


def test_auto_upscales_with_the_chosen_method(calibrated: TestClient) -> None:
    data = image_bytes(size=(40, 30))
    r = calibrated.post("/v1/upscale?scale=2&method=auto&objective=quality", content=data,
                        headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    assert r.headers["x-sr-method"] not in CLASSICAL_METHODS  # for quality: a network
    assert r.headers["x-sr-auto"].startswith("chosen")
    r = calibrated.post("/v1/upscale?scale=2&method=auto&objective=speed&min_psnr_db=1", content=data,
                        headers={"Content-Type": "image/png"})
    # The fastest by measurement: one of the resamplers, never the network.
    assert r.headers["x-sr-method"] in ("nearest", "bilinear", "bicubic")
    r = calibrated.post("/v1/upscale?scale=2&method=auto&max_latency_ms=0.0001", content=data,
                        headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.headers["x-sr-auto"].startswith("fallback")


@pytest.mark.parametrize("query", ["objective=beauty", "max_latency_ms=-1", "min_psnr_db=-3"])
def test_auto_rejects_bad_parameters(calibrated: TestClient, query: str) -> None:
    r = calibrated.post(f"/v1/upscale?method=auto&{query}", content=image_bytes(),
                        headers={"Content-Type": "image/png"})
    assert_problem(r, 422, "invalid_parameter")


