"""Border extension: the context a network sees beyond an image's edge, and taking it off again."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def extend_borders(plane: torch.Tensor, halo: int) -> torch.Tensor:
    """(H, W) -> (H + 2 halo, W + 2 halo), repeating the edge pixels outwards.

    The networks are trained on interior patches (loss on the centre, context all around), so
    they never learn what zero padding at an image border means; replicated edges give them
    the context they know. On ESPCN x3 this is worth about 1 dB on Set5, all of it in the
    outer few pixels. The network's own zero padding then only touches the extension, which
    :func:`crop_borders` removes.
    """
    if halo == 0:
        return plane
    return F.pad(plane[None, None], (halo, halo, halo, halo), mode="replicate")[0, 0]


def crop_borders(plane: torch.Tensor, border: int) -> torch.Tensor:
    """``border`` pixels off every side of the last two axes (also the protocol's shave)."""
    if border <= 0:
        return plane
    return plane[..., border:-border, border:-border]


def upscale_plane(network: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Whole-plane inference with the border extension: (H, W) 0..1 -> (rH, rW) 0..1, unclamped.

    ``network`` is a module with ``halo`` and ``scale``. The reference that tiled, batched
    inference must equal; training validates with it and the gain estimate runs it.
    """
    halo, scale = int(network.halo), int(network.scale)  # type: ignore[attr-defined]
    out = network(extend_borders(y, halo)[None, None])[0, 0]
    return crop_borders(out, halo * scale)
