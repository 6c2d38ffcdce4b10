"""Cutting a luminance plane into fixed-size, overlapping windows, and putting it back.

Each tile owns a centre region of at most ``tile`` x ``tile`` LR pixels and is computed from a
window that adds ``halo`` pixels of context (the network's receptive radius) on every side.
Windows are kept inside the image: near a border the window slides inwards rather than
hanging over the edge, so the only zero padding a network ever sees is at the image's real
border, exactly as when it runs on the whole image. An axis shorter than a window is taken
whole; such windows are smaller than the batch canvas and run with a validity mask (see
:func:`assemble`), which makes the network treat the canvas beyond them as outside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Span:
    """One axis of a tile: the window cut from the image and the centre it is responsible for."""

    window_start: int
    window_length: int
    centre_start: int
    centre_length: int


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span


def axis_spans(length: int, tile: int, halo: int) -> list[Span]:
    size = tile + 2 * halo
    if length <= size:
        return [Span(0, length, 0, length)]
    spans = []
    for centre in range(0, length, tile):
        n = min(tile, length - centre)
        start = min(max(centre - halo, 0), length - size)
        spans.append(Span(start, size, centre, n))
    return spans


def plan_tiles(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    rows, cols = axis_spans(height, tile, halo), axis_spans(width, tile, halo)
    return [Tile(r, c) for r in rows for c in cols]


def window_of(plane: torch.Tensor, tile: Tile) -> torch.Tensor:
    r, c = tile.rows, tile.cols
    return plane[
        r.window_start : r.window_start + r.window_length,
        c.window_start : c.window_start + c.window_length,
    ]


def assemble(windows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack windows into one (N, 1, H, W) canvas, H and W the largest window sides.

    A smaller window is extended by replicating its edge (what bicubic resampling does at a
    border) and gets a mask of ones over its real pixels; the mask is None when every window
    fills the canvas, which is the common case of tiles cut from large images.
    """
    height = max(w.shape[0] for w in windows)
    width = max(w.shape[1] for w in windows)
    canvas = torch.empty(len(windows), 1, height, width, dtype=torch.float32)
    needs_mask = any(w.shape != (height, width) for w in windows)
    mask = torch.zeros(len(windows), 1, height, width) if needs_mask else None
    for i, window in enumerate(windows):
        h, w = window.shape
        if (h, w) == (height, width):
            canvas[i, 0] = window
        else:
            padded = F.pad(window[None, None], (0, width - w, 0, height - h), mode="replicate")
            canvas[i, 0] = padded[0, 0]
        if mask is not None:
            mask[i, 0, :h, :w] = 1.0
    return canvas, mask


def place(output: torch.Tensor, result: torch.Tensor, tile: Tile, scale: int) -> None:
    """Copy the tile's centre from a (rH, rW) network result into the (rH, rW) image output."""
    r, c = tile.rows, tile.cols
    top = (r.centre_start - r.window_start) * scale
    left = (c.centre_start - c.window_start) * scale
    output[
        r.centre_start * scale : (r.centre_start + r.centre_length) * scale,
        c.centre_start * scale : (c.centre_start + c.centre_length) * scale,
    ] = result[top : top + r.centre_length * scale, left : left + c.centre_length * scale]
