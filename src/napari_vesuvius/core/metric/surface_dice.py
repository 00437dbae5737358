"""SurfaceDice at a tolerance, exactly as DeepMind's ``surface-distance`` computes it, but fast.

The reference (``compute_surface_distances`` + ``compute_surface_dice_at_tolerance``) works on the grid of
voxel *corners*: each corner gets an 8-bit code from its 2×2×2 voxel neighbourhood, corners whose code is
neither 0 nor 255 are surface elements ("surfels") with a marching-cubes area, and every surfel of one mask
is matched with the closest surfel of the other through a full Euclidean distance transform. The Dice is the
area of surfels within the tolerance of the other surface over the total area.

For a fixed tolerance only "is there a surfel of the other mask within τ" matters, so instead of two full
distance transforms this module tests, for the surfels only, the finite set of integer corner offsets whose
(spacing-scaled) length is ≤ τ — computed with the same float formula as ``scipy.ndimage``'s EDT, so ties
at exactly τ are decided identically. Surfels already matched drop out after each offset, so the cost is
a few vectorised gathers over the surfels instead of two distance transforms over the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

#: Surfel area vectors per neighbourhood code (absolute components × 8, one "zyx" digit triple per
#: triangle, triangles separated by "."). These are the marching-cubes triangle normals of DeepMind's
#: surface-distance lookup table (Apache-2.0); they are needed to reproduce its surfel areas exactly.
_SURFEL_NORMALS_X8 = (
    "000 111 111 220.220 111 202.202 111.111 400.222.111 "
    "111 111.111 202.202 400.222.111 220.220 400.222.111 400.222.111 400.400 "
    "111 022.022 111.111 040.222.111 111.111 004.222.111 111.111.111 111.222.222.111 "
    "111.111 022.022.111 202.202.111 111.333.022.202 111.220.220 333.022.111.220 400.111.222.111 400.111.222 "
    "111 111.111 022.022 040.111.222 111.111 111.202.202 022.022.111 333.022.111.202 "
    "111.111 111.111.111 004.222.111 222.222.111.111 111.220.220 400.222.111.111 022.333.111.220 400.222.111 "
    "220.220 040.222.111 040.111.222 040.040 220.220.111 333.202.111.220 111.040.222.111 040.222.111 "
    "111.220.220 040.222.111.111 333.220.111.202 040.222.111 220.220.220.220 220.220.111 111.220.220 220.220 "
    "111 111.111 111.111 111.220.220 022.022 004.222.111 022.022.111 333.022.111.220 "
    "111.111 111.111.111 111.202.202 400.222.111.111 040.222.111 222.222.111.111 202.333.022.111 400.222.111 "
    "202.202 004.222.111 111.202.202 202.333.220.111 004.222.111 004.004 111.111.222.004 111.222.004 "
    "202.202.111 004.222.111.111 202.202.202.202 111.202.202 202.333.220.111 004.222.111 111.202.202 202.202 "
    "111.111 111.111.111 111.022.022 040.111.222.111 022.022.111 004.222.111.111 022.022.022.022 022.022.111 "
    "111.111.111 111.111.111.111 004.222.111.111 111.111.111 040.222.111.111 111.111.111 022.022.111 111.111 "
    "400.222.111 222.111.222.111 333.022.111.202 040.222.111 333.220.022.111 111.222.004 111.022.022 022.022 "
    "400.222.111.111 111.111.111 202.202.111 111.111 220.220.111 111.111 111.111 111 "
    "111 111.111 111.111 220.220.111 111.111 202.202.111 111.111.111 400.222.111.111 "
    "022.022 111.022.022 111.222.004 333.220.022.111 040.222.111 333.022.111.202 222.111.222.111 400.222.111 "
    "111.111 022.022.111 111.111.111 040.222.111.111 111.111.111 004.222.111.111 111.111.111.111 111.111.111 "
    "022.022.111 022.022.022.022 004.222.111.111 022.022.111 040.111.222.111 111.022.022 111.111.111 111.111 "
    "202.202 111.202.202 004.222.111 202.333.220.111 111.202.202 202.202.202.202 004.222.111.111 202.202.111 "
    "111.222.004 111.111.222.004 004.004 004.222.111 202.333.220.111 111.202.202 004.222.111 202.202 "
    "400.222.111 202.333.022.111 222.222.111.111 040.222.111 400.222.111.111 111.202.202 111.111.111 111.111 "
    "333.022.111.220 022.022.111 004.222.111 022.022 111.220.220 111.111 111.111 111 "
    "220.220 111.220.220 220.220.111 220.220.220.220 040.222.111 333.220.111.202 040.222.111.111 111.220.220 "
    "040.222.111 111.040.222.111 333.202.111.220 220.220.111 040.040 040.111.222 040.222.111 220.220 "
    "400.222.111 022.333.111.220 400.222.111.111 111.220.220 222.222.111.111 004.222.111 111.111.111 111.111 "
    "333.022.111.202 022.022.111 111.202.202 111.111 040.111.222 022.022 111.111 111 "
    "400.111.222 400.111.222.111 333.022.111.220 111.220.220 111.333.022.202 202.202.111 022.022.111 111.111 "
    "111.222.222.111 111.111.111 004.222.111 111.111 040.222.111 111.111 022.022 111 "
    "400.400 400.222.111 400.222.111 220.220 400.222.111 202.202 111.111 111 "
    "400.222.111 111.111 202.202 111 220.220 111 111 000 "
)


def _validate_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive finite numbers, got {tuple(spacing)!r}")
    return values  # type: ignore[return-value]


@lru_cache(maxsize=16)
def surfel_area_table(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Area of the surface inside one 2×2×2 neighbourhood, for each of the 256 codes (float64)."""
    sz, sy, sx = spacing
    codes = _SURFEL_NORMALS_X8.split()
    if len(codes) != 256:  # pragma: no cover - guards the literal above
        raise RuntimeError("corrupt surfel table")
    table = np.zeros(256, dtype=np.float64)
    for code, triangles in enumerate(codes):
        area = 0.0
        for digits in triangles.split("."):
            n = np.array([int(d) for d in digits], dtype=np.float64) * 0.125
            vector = np.array([n[0] * sy * sx, n[1] * sz * sx, n[2] * sz * sy])
            area += float(np.linalg.norm(vector))
        table[code] = area
    table.flags.writeable = False
    return table


@lru_cache(maxsize=16)
def tolerance_offsets(tolerance: float, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Integer corner offsets ``(dz, dy, dx)`` whose scaled length is ≤ ``tolerance``, nearest first.

    The length is evaluated exactly like ``scipy.ndimage.distance_transform_edt`` evaluates it
    (``sqrt((dz·sz)² + (dy·sy)² + (dx·sx)²)`` in float64), so the comparison with the tolerance matches
    the reference bit for bit.
    """
    radius = [int(np.floor(tolerance / s)) + 1 for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    scaled = offsets.astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    squared = scaled * scaled
    length = np.sqrt((squared[:, 0] + squared[:, 1]) + squared[:, 2])
    keep = length <= tolerance
    order = np.argsort(length[keep], kind="stable")
    result = offsets[keep][order]
    result.flags.writeable = False
    return result


def _neighbour_codes(padded: np.ndarray) -> np.ndarray:
    """8-bit 2×2×2 neighbourhood code of every corner of a zero-padded uint8 {0,1} volume.

    Bit weights follow the reference kernel: 128 for the (-,-,-) voxel down to 1 for the (+,+,+) one.
    At most two corner-grid-sized temporaries are alive at once.
    """
    codes = padded[:, :, :-1] * np.uint8(2)
    codes += padded[:, :, 1:]
    pairs = codes[:, :-1, :] * np.uint8(4)
    pairs += codes[:, 1:, :]
    del codes
    result = pairs[:-1] * np.uint8(16)
    result += pairs[1:]
    return result


def _surfels(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the surfel corners (int32 when they fit), their codes, and a flat surfel map.

    Codes (1 byte) stand in for areas (8 bytes): the areas are looked up when summed, which gives the
    same float64 values in the same order, so the same sums.
    """
    is_surfel = codes != 0
    is_surfel &= codes != 255
    index = np.flatnonzero(is_surfel)
    if codes.size < 2**31:
        index = index.astype(np.int32)
    return index, codes.ravel()[index], is_surfel.ravel()


def _area_within(
    index: np.ndarray, codes: np.ndarray, areas: np.ndarray, other_map: np.ndarray, flat_offsets: np.ndarray
) -> float:
    """Total area of the surfels ``index`` that have a surfel of ``other_map`` at one of the offsets."""
    pending = np.arange(index.size, dtype=index.dtype)
    hit_area = 0.0
    for offset in flat_offsets.astype(index.dtype):
        if pending.size == 0:
            break
        found = other_map[index[pending] + offset]
        hit_area += float(areas[codes[pending[found]]].sum())
        pending = pending[~found]
    return hit_area


def surface_dice(
    pred: np.ndarray,
    label: np.ndarray,
    *,
    tolerance: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> float:
    """SurfaceDice of two boolean 3D masks at ``tolerance`` (in spacing units).

    Equals ``surface_distance.compute_surface_dice_at_tolerance(compute_surface_distances(label, pred,
    spacing), tolerance)`` to rounding, with the leaderboard's conventions for empty masks: both empty
    → 1.0, exactly one empty → 0.0.
    """
    pred = np.asarray(pred, dtype=bool)
    label = np.asarray(label, dtype=bool)
    if pred.ndim != 3 or pred.shape != label.shape:
        raise ValueError(f"surface_dice needs two 3D masks of one shape, got {pred.shape} and {label.shape}")
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    spacing3 = _validate_spacing(spacing)
    pred_any, label_any = bool(pred.any()), bool(label.any())
    if not pred_any and not label_any:
        return 1.0
    if pred_any != label_any:
        return 0.0

    box = _union_box(pred, label)
    offsets = tolerance_offsets(float(tolerance), spacing3)
    # Pad by one voxel (the corner grid is one larger than the voxel grid) plus the largest offset, so
    # that shifted flat indices of surfels never leave the array or wrap to another row.
    margin = 1 + int(np.abs(offsets).max(initial=0))
    areas_table = surfel_area_table(spacing3)

    def surfels_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
        cropped = mask[box]
        padded = np.zeros(tuple(n + 2 * margin for n in cropped.shape), dtype=np.uint8)
        padded[tuple(slice(margin, margin + n) for n in cropped.shape)] = cropped
        codes = _neighbour_codes(padded)
        del padded
        return (*_surfels(codes), codes.shape)

    pred_index, pred_codes, pred_map, grid = surfels_of(pred)
    label_index, label_codes, label_map, _ = surfels_of(label)
    strides = np.array([grid[1] * grid[2], grid[2], 1], dtype=np.int64)
    flat_offsets = offsets.astype(np.int64) @ strides

    label_hit = _area_within(label_index, label_codes, areas_table, pred_map, flat_offsets)
    pred_hit = _area_within(pred_index, pred_codes, areas_table, label_map, flat_offsets)
    total = float(areas_table[label_codes].sum()) + float(areas_table[pred_codes].sum())
    return (label_hit + pred_hit) / total


def _union_box(pred: np.ndarray, label: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``pred | label`` (both non-empty) from per-axis projections."""
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(pred.any(axis=others) | label.any(axis=others))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
