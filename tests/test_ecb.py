"""The re-parameterisable sub-pixel family: every form of a block computes the same function."""

from __future__ import annotations

import pytest
import torch

from service.imaging.borders import crop_borders
from service.models.ecb import EdgeBlock, PlainSubPixel, RepSubPixel
from service.models.registry import ARCHITECTURES, macs_per_lr_pixel
from service.models.valid import BICUBIC_RADIUS, bicubic_base, bicubic_base_valid, bicubic_kernel


def _randomise(module: torch.nn.Module, std: float = 0.3) -> None:
    # Far from the init, where several branches start near zero and would hide a wrong fold.
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


@pytest.mark.parametrize(("inp", "out", "act"), [(1, 8, True), (6, 6, True), (6, 9, False), (5, 5, False)])
def test_a_block_merged_and_folded_equals_its_branches(inp: int, out: int, act: bool) -> None:
    torch.manual_seed(inp * 10 + out)
    block = EdgeBlock(inp, out, act=act)
    _randomise(block)
    x = torch.rand(2, inp, 7, 11)
    with torch.no_grad():
        branches = block.forward_branches(x)
        merged = block(x)
        folded = block.fold()(x)
    assert block.identity == (inp == out)
    assert (merged - branches).abs().max().item() <= 1e-5
    assert (folded - branches).abs().max().item() <= 1e-5


@pytest.mark.parametrize("branch", ["conv3x3", "expand", "sobel_x", "sobel_y", "laplacian", "identity"])
def test_each_branch_alone_folds_exactly(branch: str) -> None:
    """Every branch but one silenced: a fold that drops or misplaces one branch fails here."""
    torch.manual_seed(1)
    block = EdgeBlock(4, 4, act=False)
    _randomise(block)
    with torch.no_grad():
        parts = {"conv3x3": block.conv3x3, "expand": block.expand, **block.edges}
        for name, part in parts.items():
            if name != branch:
                for p in part.parameters():
                    p.zero_()
        block.identity = branch == "identity"
    x = torch.rand(1, 4, 5, 6)
    with torch.no_grad():
        assert (block.fold()(x) - block.forward_branches(x)).abs().max().item() <= 1e-5
        assert block.forward_branches(x).abs().max().item() > 1e-3  # the branch does something


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_served_network_equals_the_training_network(scale: int) -> None:
    torch.manual_seed(scale)
    net = RepSubPixel(scale, channels=6, blocks=2)
    _randomise(net, 0.2)
    folded = net.fold()
    assert isinstance(folded, PlainSubPixel)
    assert all(isinstance(m, torch.nn.Conv2d | torch.nn.PReLU) for layer in folded.layers for m in layer)
    x = torch.rand(3, 1, 9, 13)
    with torch.no_grad():
        reference = net.forward_branches(x)
        assert reference.shape == (3, 1, 9 * scale, 13 * scale)
        assert (net(x) - reference).abs().max().item() <= 1e-5
        assert (folded(x) - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_tiers_cost_no_more_than_the_networks_they_compete_with(scale: int) -> None:
    def macs(arch: str) -> int:
        return macs_per_lr_pixel(ARCHITECTURES.build(arch, scale=scale))

    assert macs("ecbsr") <= macs("espcn")
    assert macs("ecbsr-large") <= macs("espcn-large")


def test_macs_count_the_folded_convolutions_and_the_bicubic_base() -> None:
    net = RepSubPixel(3, channels=4, blocks=1)
    convs = 1 * 4 * 9 + 4 * 4 * 9 + 4 * 9 * 9
    assert macs_per_lr_pixel(net) == convs + 16 * 9


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_served_bicubic_base_is_the_centre_of_torch_bicubic(scale: int) -> None:
    # The served form convolves where training interpolates; away from the clamped borders the
    # two are one linear map, so in float64 they agree to rounding.
    y = torch.rand(2, 1, 19, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(scale))
    kernel = bicubic_kernel(scale).double()
    served = bicubic_base_valid(y, kernel)
    trained = crop_borders(bicubic_base(y, scale), BICUBIC_RADIUS * scale)
    assert served.shape == trained.shape == (2, 1, 15 * scale, 19 * scale)
    assert (served - trained).abs().max().item() <= 1e-6
    # Each output phase reads at most 4x4 of the 5x5 taps (at an odd scale the centre phase sits
    # on its LR pixel and reads one), and the weights of an interpolation sum to one.
    assert ((kernel != 0).sum(dim=(2, 3)) <= 16).all()
    assert torch.allclose(kernel.sum(dim=(2, 3)), torch.ones(scale * scale, 1, dtype=torch.float64))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_large_counts_its_bicubic_base_as_the_tiers_do(scale: int) -> None:
    convs = 1 * 48 * 25 + 6 * 48 * 48 * 9 + 48 * scale * scale * 9
    assert macs_per_lr_pixel(ARCHITECTURES.build("espcn-large", scale=scale)) == convs + 16 * scale * scale
