"""Tiled, batched inference equals whole-image inference: every size, tile size and border.

The whole-image reference is ``borders.upscale_plane``: the plane extended by the halo, the
network's zero-padded ``forward``, the extension cropped off. Serving runs each model's
unpadded ``forward_valid`` on windows of the extended plane, which must give the same pixels.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from service.imaging.borders import crop_borders, extend_borders, upscale_plane
from service.models.ecb import RepSubPixel
from service.models.espcn import ESPCN, SubPixelDeconv
from service.models.large import ESPCNLarge
from service.models.store import discover, load_weights
from service.serving.tiling import assemble, axis_spans, place, plan_tiles, window_of

from .helpers import SHIPPED_STORE


def _random_model(kind: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(scale)
    if kind == "espcn":
        model: torch.nn.Module = ESPCN(scale)
    elif kind == "large":
        model = ESPCNLarge(scale, width=8, blocks=2)
    else:
        model = RepSubPixel(scale, channels=5, blocks=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    if kind == "ecbsr":
        model = model.fold()
    elif kind == "deconv":
        model = SubPixelDeconv(_random_model("espcn", scale))
    return model.eval()


KINDS = ("espcn", "deconv", "large", "ecbsr")
MODELS = {(k, r): _random_model(k, r) for k in KINDS if k != "deconv" for r in (2, 3, 4)}
MODELS.update({("deconv", r): SubPixelDeconv(MODELS[("espcn", r)]).eval() for r in (2, 3, 4)})
SHIPPED = {c.scale: load_weights(c) for c in discover(SHIPPED_STORE) if c.arch == "espcn"}


def tiled(model: torch.nn.Module, plane: torch.Tensor, tile: int, batch: int) -> torch.Tensor:
    """What the batcher does, without the scheduling: extend, windows -> canvases -> places."""
    r, halo = model.scale, model.halo
    extended = extend_borders(plane, halo)
    tiles = plan_tiles(extended.shape[0], extended.shape[1], tile, halo)
    out = torch.full((plane.shape[0] * r, plane.shape[1] * r), float("nan"))
    for start in range(0, len(tiles), batch):
        group = tiles[start : start + batch]
        canvas = assemble([window_of(extended, t) for t in group])
        with torch.no_grad():
            result = model.forward_valid(canvas)
        for k, t in enumerate(group):
            place(out, result[k, 0], t, r, halo)
    return out


def whole_image(model: torch.nn.Module, plane: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return upscale_plane(model, plane)


@settings(max_examples=60, deadline=None)
@given(
    image=st.integers(1, 300),
    tile=st.integers(1, 64),
    halo=st.integers(0, 12),
)
def test_centres_cover_the_image_once_and_windows_hold_their_halo(image: int, tile: int, halo: int) -> None:
    length = image + 2 * halo  # the extended axis
    spans = axis_spans(length, tile, halo)
    covered = [i for s in spans for i in range(s.centre_start, s.centre_start + s.centre_length)]
    assert covered == list(range(halo, length - halo))
    assert len({s.window_length for s in spans}) == 1  # one canvas size per axis
    for s in spans:
        assert 0 <= s.window_start and s.window_start + s.window_length <= length
        assert s.centre_start - s.window_start >= halo
        assert s.window_start + s.window_length - (s.centre_start + s.centre_length) >= halo


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    tile=st.integers(4, 40),
    batch=st.integers(1, 9),
    scale=st.sampled_from([2, 3, 4]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**16),
)
def test_tiled_equals_whole_image(
    height: int, width: int, tile: int, batch: int, scale: int, kind: str, seed: int
) -> None:
    model = MODELS[(kind, scale)]
    plane = torch.rand(height, width, generator=torch.Generator().manual_seed(seed))
    whole = whole_image(model, plane)
    out = tiled(model, plane, tile, batch)
    assert not torch.isnan(out).any()
    # Random weights give outputs far outside 0..1; float error grows with them.
    assert (out - whole).abs().max().item() <= 1e-4 * max(1.0, whole.abs().max().item())


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    tile=st.integers(8, 48),
    batch=st.integers(1, 8),
    scale=st.sampled_from([2, 3, 4]),
)
def test_tiled_equals_whole_image_on_shipped_weights(
    height: int, width: int, tile: int, batch: int, scale: int
) -> None:
    model = SHIPPED[scale]
    plane = torch.rand(height, width, generator=torch.Generator().manual_seed(height * width))
    whole = whole_image(model, plane)
    out = tiled(model, plane, tile, batch)
    assert (out - whole).abs().max().item() <= 1e-4
    grey = lambda t: (t.clamp(0, 1) * 255).round()  # noqa: E731
    # A float difference of 1e-5 can flip a value sitting on .5; almost never does: at most one
    # value in a thousand, or one value where the image has fewer than a thousand.
    flipped = int((grey(out) != grey(whole)).sum().item())
    assert flipped <= max(1, out.numel() // 1000)


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_image_sizes_in_one_canvas(kind: str) -> None:
    """Tiles of a large image and whole small images share one batch and stay exact."""
    model = MODELS[(kind, 3)]
    halo = model.halo
    planes = [torch.rand(50, 61), torch.rand(1, 1), torch.rand(9, 2), torch.rand(13, 17)]
    extended = [extend_borders(p, halo) for p in planes]
    tile = 16
    work = [(i, t) for i, p in enumerate(extended) for t in plan_tiles(*p.shape, tile, halo)]
    canvas = assemble([window_of(extended[i], t) for i, t in work])
    with torch.no_grad():
        result = model.forward_valid(canvas)
    outs = [torch.zeros(p.shape[0] * 3, p.shape[1] * 3) for p in planes]
    for k, (i, t) in enumerate(work):
        place(outs[i], result[k, 0], t, 3, halo)
    for plane, out in zip(planes, outs, strict=True):
        assert (out - whole_image(model, plane)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_the_unpadded_form_is_the_centre_of_the_padded_one_and_blind_beyond_the_window(kind: str) -> None:
    """Why no batch needs a validity mask: nothing beyond a window reaches its centre."""
    model = MODELS[(kind, 2)]
    halo, r = model.halo, 2
    window = torch.rand(1, 1, 2 * halo + 5, 2 * halo + 3)
    with torch.no_grad():
        padded = model(window)
        valid = model.forward_valid(window)
        assert valid.shape[-2:] == (5 * r, 3 * r)
        assert (valid - crop_borders(padded, halo * r)).abs().max().item() <= 1e-5
        canvas = torch.full((1, 1, 2 * halo + 20, 2 * halo + 20), 1e3)  # garbage around the window
        canvas[..., : window.shape[-2], : window.shape[-1]] = window
        on_canvas = model.forward_valid(canvas)[..., : 5 * r, : 3 * r]
    assert (on_canvas - valid).abs().max().item() <= 1e-5


def test_rounding_to_grey_levels_is_unchanged_in_the_common_case() -> None:
    model = MODELS[("espcn", 3)]
    plane = torch.rand(40, 33)
    whole = (whole_image(model, plane).clamp(0, 1) * 255).round()
    out = (tiled(model, plane, 12, 4).clamp(0, 1) * 255).round()
    assert (out != whole).float().mean() < 1e-3


def test_border_extension_repeats_edges_and_crop_undoes_it() -> None:
    plane = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    ext = extend_borders(plane, 2)
    assert ext.shape == (6, 7)
    assert torch.equal(ext[0], torch.tensor([0.0, 0, 0, 1, 2, 2, 2]))
    assert torch.equal(crop_borders(ext, 2), plane)
    assert torch.equal(extend_borders(plane, 0), plane)
