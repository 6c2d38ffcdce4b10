"""The content-aware gain estimate and its use by method=auto."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from service.gain import GainModel, detail_energy, spearman

from .conftest import image_bytes


def test_detail_energy_is_zero_on_flat_and_ramps_and_grows_with_texture() -> None:
    assert detail_energy(torch.full((20, 20), 77.0)) == 0.0
    ramp = torch.arange(20, dtype=torch.float32).repeat(20, 1) * 3
    assert detail_energy(ramp) == pytest.approx(0.0, abs=1e-5)  # a Laplacian ignores gradients
    rng = torch.Generator().manual_seed(0)
    soft, hard = (torch.rand(32, 32, generator=rng) * a for a in (20.0, 200.0))
    assert detail_energy(hard) > detail_energy(soft) > 0
    assert detail_energy(torch.zeros(2, 50)) == 0.0  # too small for the kernel


def test_gain_model_fit_recovers_a_log_line() -> None:
    energies = [1.0, 5.0, 20.0, 60.0]
    gains = [0.1 + 0.5 * np.log1p(e) for e in energies]
    model = GainModel.fit(energies, gains)
    assert model.intercept_db == pytest.approx(0.1) and model.slope_db == pytest.approx(0.5)
    assert model.predict_db(5.0) == pytest.approx(gains[1])


def test_spearman_known_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)  # ties share ranks


def _flat_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (120, 130, 140)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_auto_gives_a_flat_image_bicubic_and_a_detailed_one_the_network(
    make_client,  # type: ignore[no-untyped-def]
) -> None:
    client: TestClient = make_client(calibrate=True)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    # A gain model that predicts 0 dB on flat input and plenty on detailed input.
    runtime.gain_models = {2: GainModel(-0.5, 1.0)}
    flat = client.post("/v1/upscale?scale=2&method=auto", content=_flat_png(),
                       headers={"Content-Type": "image/png"})
    assert flat.headers["x-sr-method"] == "bicubic", flat.headers["x-sr-auto"]
    detailed = client.post("/v1/upscale?scale=2&method=auto", content=image_bytes(size=(48, 40)),
                           headers={"Content-Type": "image/png"})
    assert detailed.headers["x-sr-method"] in ("espcn", "deconv", "espcn-large")
