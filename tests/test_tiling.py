"""Tiled, batched inference equals whole-image inference: every size, tile size and border."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from service.models.espcn import ESPCN
from service.models.large import ESPCNLarge
from service.models.store import discover, load_weights
from service.serving.tiling import assemble, axis_spans, place, plan_tiles, window_of

from .helpers import SHIPPED_STORE


def _random_model(kind: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(scale)
    model = ESPCN(scale) if kind == "espcn" else ESPCNLarge(scale, width=8, blocks=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


MODELS = {(k, r): _random_model(k, r) for k in ("espcn", "large") for r in (2, 3, 4)}
SHIPPED = {c.scale: load_weights(c) for c in discover(SHIPPED_STORE) if c.arch == "espcn"}


def tiled(model: torch.nn.Module, plane: torch.Tensor, tile: int, batch: int) -> torch.Tensor:
    """What the batcher does, without the scheduling: windows -> canvases -> places."""
    r = model.scale
    tiles = plan_tiles(plane.shape[0], plane.shape[1], tile, model.halo)
    out = torch.full((plane.shape[0] * r, plane.shape[1] * r), float("nan"))
    for start in range(0, len(tiles), batch):
        group = tiles[start : start + batch]
        canvas, mask = assemble([window_of(plane, t) for t in group])
        with torch.no_grad():
            result = model(canvas, mask)
        for k, t in enumerate(group):
            place(out, result[k, 0], t, r)
    return out


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 300),
    tile=st.integers(1, 64),
    halo=st.integers(0, 12),
)
def test_centres_cover_each_axis_once_and_windows_stay_inside(length: int, tile: int, halo: int) -> None:
    spans = axis_spans(length, tile, halo)
    covered = [i for s in spans for i in range(s.centre_start, s.centre_start + s.centre_length)]
    assert covered == list(range(length))
    for s in spans:
        assert 0 <= s.window_start and s.window_start + s.window_length <= length
        # Every centre pixel has its halo inside the window, or the image ends first.
        assert s.centre_start - s.window_start >= min(halo, s.centre_start)
        window_end = s.window_start + s.window_length
        centre_end = s.centre_start + s.centre_length
        assert window_end - centre_end >= min(halo, length - centre_end)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    tile=st.integers(4, 40),
    batch=st.integers(1, 9),
    scale=st.sampled_from([2, 3, 4]),
    kind=st.sampled_from(["espcn", "large"]),
    seed=st.integers(0, 2**16),
)
def test_tiled_equals_whole_image(
    height: int, width: int, tile: int, batch: int, scale: int, kind: str, seed: int
) -> None:
    model = MODELS[(kind, scale)]
    plane = torch.rand(height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        whole = model(plane[None, None])[0, 0]
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
    with torch.no_grad():
        whole = model(plane[None, None])[0, 0]
    out = tiled(model, plane, tile, batch)
    assert (out - whole).abs().max().item() <= 1e-4
    grey = lambda t: (t.clamp(0, 1) * 255).round()  # noqa: E731
    # A float difference of 1e-5 can flip a value sitting on .5; almost never does.
    assert (grey(out) != grey(whole)).float().mean().item() < 1e-3


def test_mixed_image_sizes_in_one_canvas() -> None:
    """Tiles of a large image and whole small images share one batch and stay exact."""
    model = MODELS[("espcn", 3)]
    planes = [torch.rand(50, 61), torch.rand(1, 1), torch.rand(9, 2), torch.rand(13, 17)]
    tile = 16
    work = [(i, t) for i, p in enumerate(planes) for t in plan_tiles(*p.shape, tile, model.halo)]
    canvas, mask = assemble([window_of(planes[i], t) for i, t in work])
    assert mask is not None  # small images need the mask
    with torch.no_grad():
        result = model(canvas, mask)
    outs = [torch.zeros(p.shape[0] * 3, p.shape[1] * 3) for p in planes]
    for k, (i, t) in enumerate(work):
        place(outs[i], result[k, 0], t, 3)
    for plane, out in zip(planes, outs, strict=True):
        with torch.no_grad():
            whole = model(plane[None, None])[0, 0]
        assert (out - whole).abs().max().item() <= 1e-4


def test_zero_padding_without_the_mask_would_be_wrong() -> None:
    """The reason for the mask: zeros in the input are not zero padding inside the network."""
    model = MODELS[("espcn", 2)]
    plane = torch.rand(5, 5) + 0.5
    canvas = torch.zeros(1, 1, 12, 12)
    canvas[0, 0, :5, :5] = plane
    with torch.no_grad():
        whole = model(plane[None, None])[0, 0]
        unmasked = model(canvas)[0, 0, :10, :10]
        mask = torch.zeros_like(canvas)
        mask[..., :5, :5] = 1
        masked = model(canvas, mask)[0, 0, :10, :10]
    assert (unmasked - whole).abs().max() > 1e-3
    assert (masked - whole).abs().max() <= 1e-5


def test_rounding_to_grey_levels_is_unchanged_in_the_common_case() -> None:
    model = MODELS[("espcn", 3)]
    plane = torch.rand(40, 33)
    with torch.no_grad():
        whole = (model(plane[None, None])[0, 0].clamp(0, 1) * 255).round()
    out = (tiled(model, plane, 12, 4).clamp(0, 1) * 255).round()
    assert (out != whole).float().mean() < 1e-3


def test_border_extension_repeats_edges_and_crop_undoes_it() -> None:
    from service.imaging.borders import crop_borders, extend_borders

    plane = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    ext = extend_borders(plane, 2)
    assert ext.shape == (6, 7)
    assert torch.equal(ext[0], torch.tensor([0.0, 0, 0, 1, 2, 2, 2]))
    assert torch.equal(crop_borders(ext, 2), plane)
    assert torch.equal(extend_borders(plane, 0), plane)
