"""Sliding-window geometry shared by the engine and its tests: tile positions, padding, Gaussian weights.

The definitions follow nnU-Net v2's predictor so that results can be compared voxel for voxel:
tile starts as its ``compute_steps_for_sliding_window``, Gaussian importance as its
``compute_gaussian`` (σ = patch/8, maximum scaled to 10, zeros replaced by the smallest non-zero
value), and volumes smaller than the patch padded symmetrically (the extra voxel after) with zeros
*after* normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

Shape3 = tuple[int, int, int]


def tile_starts(size: int, tile: int, step: float) -> list[int]:
    """Start offsets of the tiles along one axis of length ``size >= tile`` (nnU-Net semantics)."""
    if size < tile:
        raise ValueError(f"axis of length {size} is smaller than the tile ({tile}); pad first")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    count = math.ceil((size - tile) / (tile * step)) + 1
    if count == 1:
        return [0]
    spacing = (size - tile) / (count - 1)
    return [round(spacing * i) for i in range(count)]


def padded_shape(shape: Sequence[int], patch: Sequence[int]) -> tuple[Shape3, Shape3]:
    """Shape after padding to at least ``patch`` and the padding before the data on each axis."""
    full = tuple(max(int(s), int(p)) for s, p in zip(shape, patch, strict=True))
    before = tuple((f - int(s)) // 2 for f, s in zip(full, shape, strict=True))
    return (full[0], full[1], full[2]), (before[0], before[1], before[2])


@lru_cache(maxsize=8)
def _gaussian_cached(patch: Shape3, sigma_scale: float, max_value: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(patch, dtype=np.float64)
    impulse[tuple(p // 2 for p in patch)] = 1.0
    sigmas = [p * sigma_scale for p in patch]
    weights = gaussian_filter(impulse, sigmas, 0, mode="constant", cval=0.0)
    weights = (weights / weights.max() * max_value).astype(np.float32)
    nonzero = weights > 0
    weights[~nonzero] = weights[nonzero].min()
    weights.setflags(write=False)
    return weights


def gaussian_weights(
    patch: Sequence[int], sigma_scale: float = 1.0 / 8, max_value: float = 10.0
) -> np.ndarray:
    """Gaussian importance map of a tile (float32, read-only), as nnU-Net's ``compute_gaussian``."""
    key = (int(patch[0]), int(patch[1]), int(patch[2]))
    return _gaussian_cached(key, float(sigma_scale), float(max_value))


def tile_grid(shape: Sequence[int], patch: Sequence[int], step: float) -> list[list[int]]:
    """Tile starts per axis for a volume of ``shape`` (already padded to at least ``patch``)."""
    return [tile_starts(int(s), int(p), step) for s, p in zip(shape, patch, strict=True)]


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All non-empty subsets of the spatial mirror axes, plus the identity ``()`` first."""
    from itertools import combinations

    axes = sorted(set(int(a) for a in axes))
    combos: list[tuple[int, ...]] = [()]
    for k in range(1, len(axes) + 1):
        combos += list(combinations(axes, k))
    return combos
