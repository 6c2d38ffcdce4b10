"""The content-aware gain estimate and its use by method=auto."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.imaging.gain import GAIN_FILE, GainModel, load_gain_models, proxy_gain_db
from service.imaging.resamplers import CLASSICAL_METHODS
from service.models.store import discover, load_weights
from service.offline.gain_fit import spearman

from .helpers import DATA, SHIPPED_STORE, image_bytes


@pytest.fixture(scope="module")
def espcn_x3() -> torch.nn.Module:
    card = next(c for c in discover(SHIPPED_STORE) if c.arch == "espcn" and c.scale == 3)
    return load_weights(card)


def _y(path: str) -> torch.Tensor:
    from service.offline.datasets import load_y

    return load_y(DATA / path)


def test_proxy_gain_is_zero_on_a_flat_image_and_none_on_a_tiny_one(espcn_x3: torch.nn.Module) -> None:
    assert proxy_gain_db(espcn_x3, torch.full((90, 90), 120.0), 3) == pytest.approx(0.0, abs=0.05)
    assert proxy_gain_db(espcn_x3, torch.rand(20, 20) * 255, 3) is None


def test_proxy_gain_ranks_edges_above_blur(espcn_x3: torch.nn.Module) -> None:
    sharp = _y("eval/Set5/x3/HR/img_003.png")  # butterfly: strong edges
    blurred = torch.nn.functional.avg_pool2d(sharp[None, None], 5, 1, 2)[0, 0]
    sharp_gain = proxy_gain_db(espcn_x3, sharp, 3)
    blurred_gain = proxy_gain_db(espcn_x3, blurred, 3)
    assert sharp_gain is not None and blurred_gain is not None
    assert sharp_gain > blurred_gain + 0.5


def test_shipped_gain_models_are_increasing_lines() -> None:
    models = load_gain_models(SHIPPED_STORE / GAIN_FILE)
    assert set(models) == {2, 3, 4}
    assert all(m.slope_db > 0 for m in models.values())


def test_gain_model_fit_is_a_line_through_the_origin() -> None:
    model = GainModel.fit([1.0, 2.0, 4.0], [0.5, 1.0, 2.0])
    assert model.intercept_db == 0.0 and model.slope_db == pytest.approx(0.5)
    assert model.predict_db(0.0) == 0.0 and model.predict_db(3.0) == pytest.approx(1.5)


def test_spearman_known_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)  # ties share ranks


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_auto_gives_a_flat_image_bicubic_and_a_detailed_one_the_network(make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client(calibrate=True)
    flat = np.full((96, 96, 3), (120, 130, 140), dtype=np.uint8)
    r = client.post("/v1/upscale?scale=3&method=auto", content=_png(flat), headers={"Content-Type": "image/png"})
    assert r.headers["x-sr-method"] == "bicubic", r.headers["x-sr-auto"]
    detailed = (DATA / "eval/Set5/x3/HR/img_003.png").read_bytes()
    r = client.post("/v1/upscale?scale=3&method=auto", content=detailed, headers={"Content-Type": "image/png"})
    assert r.headers["x-sr-method"] not in CLASSICAL_METHODS, r.headers["x-sr-auto"]  # a network
    r = client.post("/v1/upscale?scale=3&method=auto", content=image_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200  # too small for the proxy: the set averages decide


def test_the_fit_sees_a_grey_image_as_the_server_does(client: TestClient) -> None:
    """`gain fit` measures the proxy on the luminance the server's `auto` computes: a grey image
    is its grey RGB twin on the studio swing, so both get the same proxy."""
    from service.offline.evaluate import Sample
    from service.offline.gain_fit import _measure

    grey = np.array(Image.open(DATA / "eval/Set5/x3/LR/img_003.png").convert("L"))
    twin = np.repeat(grey[:, :, None], 3, axis=2)
    hr_y = _y("eval/Set5/x3/HR/img_003.png")  # only the measured gain reads it
    samples = []
    for pixels in (grey, twin):
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        samples.append(Sample("butterfly", out.getvalue(), hr_y))
    proxies, _ = _measure(3, samples, client)
    assert len(proxies) == 2
    # The old full-swing grey was off by 0.0007 dB here: small, but a second definition.
    assert proxies[0] == pytest.approx(proxies[1], abs=1e-4)
