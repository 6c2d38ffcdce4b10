"""Cutting a border-extended luminance plane into fixed-size, overlapping windows, and putting
the network's answers back.

The plane arrives extended by the network's ``halo`` on every side (``imaging.borders``). Each
tile owns a centre region of at most ``tile`` x ``tile`` pixels of the image itself and is
computed from a window that adds ``halo`` pixels of context (the network's receptive radius)
on every side; the network runs unpadded and answers the centre of its window alone
(``models.valid``). Windows stay inside the extended plane: near its end a window slides
inwards rather than hanging over it, and then its centre has more context than it needs. An
axis no longer than a window is taken whole; such windows are smaller than the batch canvas,
and what :func:`assemble` puts beyond them only reaches outputs that are thrown away.
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
    """Spans over an extended axis of ``length`` (> 2 halo): the centres cover the image,
    [halo, length - halo), once; each window holds its centre and ``halo`` either side."""
    size = tile + 2 * halo
    if length <= size:
        return [Span(0, length, halo, length - 2 * halo)]
    spans = []
    for centre in range(halo, length - halo, tile):
        n = min(tile, length - halo - centre)
        spans.append(Span(min(centre - halo, length - size), size, centre, n))
    return spans


def plan_tiles(height: int, width: int, tile: int, halo: int) -> list[Tile]:
    """The tiles of a (height, width) plane already extended by ``halo`` on every side."""
    rows, cols = axis_spans(height, tile, halo), axis_spans(width, tile, halo)
    return [Tile(r, c) for r in rows for c in cols]


def window_of(plane: torch.Tensor, tile: Tile) -> torch.Tensor:
    r, c = tile.rows, tile.cols
    return plane[
        r.window_start : r.window_start + r.window_length,
        c.window_start : c.window_start + c.window_length,
    ]


def assemble(windows: list[torch.Tensor]) -> torch.Tensor:
    """Stack windows into one (N, 1, H, W) canvas, H and W the largest window sides.

    A smaller window is extended by replicating its edge; any values would do (they feed only
    outputs beyond the window's centre, which :func:`place` does not read), and these keep the
    canvas in the range the network knows.
    """
    height = max(w.shape[0] for w in windows)
    width = max(w.shape[1] for w in windows)
    canvas = torch.empty(len(windows), 1, height, width, dtype=torch.float32)
    for i, window in enumerate(windows):
        h, w = window.shape
        if (h, w) == (height, width):
            canvas[i, 0] = window
        else:
            padded = F.pad(window[None, None], (0, width - w, 0, height - h), mode="replicate")
            canvas[i, 0] = padded[0, 0]
    return canvas


def place(output: torch.Tensor, result: torch.Tensor, tile: Tile, scale: int, halo: int) -> None:
    """Copy the tile's centre from a network answer into the image's (rH, rW) output.

    ``result`` is the unpadded network's answer for the tile's window on the canvas: its
    pixel (0, 0) is the window's (halo, halo), and the output's (0, 0) is the extended plane's
    (halo, halo), the image's own first pixel."""
    r, c = tile.rows, tile.cols
    top = (r.centre_start - r.window_start - halo) * scale
    left = (c.centre_start - c.window_start - halo) * scale
    output[
        (r.centre_start - halo) * scale : (r.centre_start - halo + r.centre_length) * scale,
        (c.centre_start - halo) * scale : (c.centre_start - halo + c.centre_length) * scale,
    ] = result[top : top + r.centre_length * scale, left : left + c.centre_length * scale]
