"""Z-score statistics of a volume, taken over the voxels nnU-Net v2 takes them over.

nnU-Net preprocesses an image by ``crop_to_nonzero`` (crop to the bounding box of
``binary_fill_holes(image != 0)``; an all-zero image keeps its full extent) and then
``ZScoreNormalization``: the mean/std of the whole cropped image, or with ``use_mask_for_norm`` of
the voxels inside the hole-filled non-zero mask (so zeros enclosed by the scan count, the air
around it does not), with ``std`` floored at 1e-8. Statistics over the whole volume instead would
mix in the air outside the scanned region, which dominates a full scroll. The masked variant is
also the built-in training default (``Normalization(kind="zscore", use_mask=True)``): a volume's
statistics then do not depend on how much air around the scan it holds.

Inputs may be NumPy or dask arrays of any size: one pass finds the bounding box (per-axis
"any non-zero" projections), a second accumulates count / mean / sum of squared deviations per
chunk, combined exactly (Chan et al.) in float64, so memory stays bounded by a chunk. The holes of
the masked variant need the non-zero mask in memory; above :data:`FILL_HOLES_MAX_VOXELS` voxels
(whole scrolls) enclosed zeros are left out of the statistics, a difference of the zero voxels only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Largest bounding box (voxels) whose non-zero mask is loaded to fill its holes (masked variant).
FILL_HOLES_MAX_VOXELS = 2**28
#: nnU-Net's floor on the standard deviation (float32 target dtype).
STD_EPSILON = 1e-8

Moments = tuple[float, float, float]  # count, mean, sum of squared deviations


def _as_dask(volume: Any) -> Any:
    import dask.array as da

    return volume if isinstance(volume, da.Array) else da.from_array(np.asarray(volume))


def nonzero_box(volume: Any) -> tuple[slice, ...]:
    """nnU-Net's ``crop_to_nonzero`` box: the non-zero voxels' bounding box (all of an all-zero volume).

    Filling holes never changes a bounding box, so the projections of ``volume != 0`` suffice.
    """
    import dask.array as da

    data = _as_dask(volume)
    nonzero = data != 0
    axes = range(data.ndim)
    projections = da.compute(*(nonzero.any(axis=tuple(a for a in axes if a != axis)) for axis in axes))
    box = []
    for size, hits in zip(data.shape, projections, strict=True):
        found = np.flatnonzero(hits)
        box.append(slice(int(found[0]), int(found[-1]) + 1) if found.size else slice(0, size))
    return tuple(box)


def _histogram_moments(block: np.ndarray, skip_zeros: bool) -> Moments:
    """Exact moments of an 8/16-bit block from its histogram (one fast pass, no float copy)."""
    counts = np.bincount(block.ravel(), minlength=1).astype(np.float64)
    if skip_zeros:
        counts[0] = 0.0
    count = float(counts.sum())
    if count == 0:
        return 0.0, 0.0, 0.0
    values = np.arange(counts.size, dtype=np.float64)
    mean = float(counts @ values) / count
    return count, mean, float(counts @ np.square(values - mean))


def _block_moments(block: np.ndarray, skip_zeros: bool) -> Moments:
    block = np.asarray(block)
    if block.dtype in (np.uint8, np.uint16):
        return _histogram_moments(block, skip_zeros)
    values = block.astype(np.float64, copy=False)
    if skip_zeros:
        values = values[values != 0]
    count = values.size
    if count == 0:
        return 0.0, 0.0, 0.0
    mean = float(values.mean())
    return float(count), mean, float(np.square(values - mean).sum())


def _combine(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint sets (Chan, Golub & LeVeque)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, sa + sb + delta * delta * na * nb / n


def _moments(data: Any, skip_zeros: bool) -> Moments:
    import dask

    parts = [dask.delayed(_block_moments)(block, skip_zeros) for block in data.to_delayed().ravel()]
    total: Moments = (0.0, 0.0, 0.0)
    for part in dask.compute(*parts):
        total = _combine(total, part)
    return total


def _enclosed_zeros(data: Any) -> int:
    """Zero voxels of ``data`` (a cropped box) enclosed by non-zero ones (nnU-Net's filled holes)."""
    nonzero = np.asarray((data != 0).compute())
    if nonzero.ndim == 3:
        from napari_vesuvius.core.postprocess.components import fill_cavities_3d

        filled = fill_cavities_3d(nonzero)
    else:
        from scipy.ndimage import binary_fill_holes

        filled = binary_fill_holes(nonzero)
    return int(np.count_nonzero(filled)) - int(np.count_nonzero(nonzero))


def zscore_statistics(volume: Any, *, use_mask: bool = False) -> tuple[float, float]:
    """``(mean, std)`` as nnU-Net's ``crop_to_nonzero`` + ``ZScoreNormalization`` compute them.

    ``use_mask``: nnU-Net's ``use_mask_for_norm`` (statistics inside the hole-filled non-zero
    mask). An empty mask gives ``(0, 1)``. NaN/Inf voxels give non-finite values (the caller checks).
    """
    data = _as_dask(volume)[nonzero_box(volume)]
    count, mean, squares = _moments(data, skip_zeros=use_mask)
    if use_mask and data.size <= FILL_HOLES_MAX_VOXELS:
        holes = _enclosed_zeros(data)
        count, mean, squares = _combine((count, mean, squares), (float(holes), 0.0, 0.0))
    if count == 0:
        return 0.0, 1.0
    std = math.sqrt(squares / count)  # NaN / Inf pass through for the caller's check
    return mean, max(std, STD_EPSILON) if math.isfinite(std) else std
