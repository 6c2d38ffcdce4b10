"""A deterministic synthetic picture: what calibration times, benchmarks send and tests check."""

from __future__ import annotations

import numpy as np


def pattern(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """(height, width, channels) uint8: gradients, an edge, and some texture, like a photo's mix
    of smooth shading and detail (so PNG neither compresses it to nothing nor not at all)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 40 + 150 * (xx / max(width - 1, 1)) * (c % 2) + 100 * (yy / max(height - 1, 1)) * ((c + 1) % 2)
        base += 40 * ((xx + 2 * yy + 7 * c) % 9 < 4)
        base += rng.normal(0, 6, size=base.shape)
        planes.append(base)
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
