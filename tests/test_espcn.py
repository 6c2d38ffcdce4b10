"""The ESPCN network, its transposed-convolution twin, and the architecture registry."""

from __future__ import annotations

import pytest
import torch

from service.models.espcn import ESPCN, SubPixelDeconv
from service.models.large import ESPCNLarge
from service.models.registry import ARCHITECTURES, Registry, count_parameters, macs_per_lr_pixel


@pytest.mark.parametrize(("r", "params"), [(2, 21_284), (3, 22_729), (4, 24_752)])
def test_parameter_count_matches_the_paper_layout(r: int, params: int) -> None:
    assert count_parameters(ESPCN(r)) == params


def test_multiply_adds_per_lr_pixel_x3() -> None:
    assert macs_per_lr_pixel(ESPCN(3)) == 1 * 64 * 25 + 64 * 32 * 9 + 32 * 9 * 9


@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (16, 16)])
def test_deconv_twin_equals_pixel_shuffle(r: int, size: tuple[int, int]) -> None:
    torch.manual_seed(r * 100 + size[0])
    model = ESPCN(r)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # random weights and biases, far from any trained state
    twin = SubPixelDeconv(model)
    x = torch.rand(3, 1, *size)
    with torch.no_grad():
        a, b = model(x), twin(x)
    assert a.shape == b.shape == (3, 1, size[0] * r, size[1] * r)
    assert (a - b).abs().max().item() <= 1e-4


def test_deconv_twin_works_for_the_large_network_too() -> None:
    torch.manual_seed(0)
    model = ESPCNLarge(3, width=8, blocks=1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    twin = SubPixelDeconv(model)
    x = torch.rand(1, 1, 9, 11)
    body = model.shuffle(model.head_out(model.features(x)))
    with torch.no_grad():
        assert torch.allclose(body, twin(x), atol=1e-5)


def test_deconv_rejects_a_head_that_is_not_3x3() -> None:
    model = ESPCN(2)
    model.conv3 = torch.nn.Conv2d(32, 4, 5, padding=2)
    with pytest.raises(ValueError, match="3x3 head"):
        SubPixelDeconv(model)


def test_output_is_r_times_the_input() -> None:
    out = ESPCN(4)(torch.rand(2, 1, 5, 9))
    assert out.shape == (2, 1, 20, 36)


def test_registry_refuses_duplicates_and_names_what_it_knows() -> None:
    registry = Registry()
    registry.register("espcn", ESPCN)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("espcn", ESPCN)
    with pytest.raises(KeyError, match="known: espcn"):
        registry.build("srcnn", scale=2)


def test_shipped_architectures_are_registered() -> None:
    assert {"espcn", "espcn-large"} <= set(ARCHITECTURES.names())
    model = ARCHITECTURES.build("espcn-large", scale=2)
    assert model(torch.rand(1, 1, 6, 6)).shape == (1, 1, 12, 12)
