"""Z-score statistics of a volume, taken over the voxels nnU-Net v2 takes them over.

nnU-Net preprocesses an image by ``crop_to_nonzero`` (crop to the bounding box of
``binary_fill_holes(image != 0)``; an all-zero image keeps its full extent) and then
``ZScoreNormalization``: the mean/std of the whole cropped image, or with ``use_mask_for_norm`` of
the voxels inside the hole-filled non-zero mask (so zeros enclosed by the scan count, the air
around it does not), with ``std`` floored at 1e-8. Statistics over the whole volume instead would
mix in the air outside the scanned region, which dominates a full scroll. The masked variant is
also what built-in models trained with ``zscore`` use (``Normalization(kind="zscore", use_mask=True)``;
the default ``percentile`` takes the same voxels): a volume's statistics then do not depend on how much
air around the scan it holds.

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


#: Percentiles of the scanned voxels that ``Normalization(kind="percentile")`` maps to -1 and +1.
PERCENTILE_LOW, PERCENTILE_HIGH = 1.0, 99.0
#: Float volumes: at most about this many voxels are sampled (evenly strided) for their percentiles.
PERCENTILE_SAMPLE = 8_000_000


def _block_counts(block: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.asarray(block).ravel(), minlength=1).astype(np.int64)
    counts[0] = 0
    return counts


def _block_sample(block: np.ndarray, step: int) -> np.ndarray:
    values = np.asarray(block).ravel()[::step]
    return values[values != 0].astype(np.float64)


def _percentile_of_counts(counts: np.ndarray, q: float) -> float:
    """``np.percentile`` (linear) of the multiset whose value ``v`` occurs ``counts[v]`` times."""
    total = int(counts.sum())
    position = q / 100.0 * (total - 1)
    below = math.floor(position)
    fraction = position - below
    cumulative = np.cumsum(counts)
    first = int(np.searchsorted(cumulative, below, side="right"))
    second = int(np.searchsorted(cumulative, min(below + 1, total - 1), side="right"))
    return float(first + (second - first) * fraction)


def percentile_statistics(
    volume: Any, low: float = PERCENTILE_LOW, high: float = PERCENTILE_HIGH
) -> tuple[float, float]:
    """The ``low``/``high`` percentiles of the scanned (non-zero) voxels, streamed chunk by chunk in one
    pass (zeros are left out voxel by voxel, so no bounding-box pass is needed first).

    8/16-bit volumes: exact (a histogram per chunk, summed; equal to ``np.percentile`` of the
    non-zero values). Float volumes: of an evenly strided sample of at most ~``PERCENTILE_SAMPLE``
    voxels (deterministic). No scanned voxel: ``(-1, 1)`` (the identity map). NaN/Inf voxels give
    non-finite values (the caller checks).
    """
    import dask

    data = _as_dask(volume)
    blocks = data.to_delayed().ravel()
    if data.dtype in (np.uint8, np.uint16):
        parts = dask.compute(*(dask.delayed(_block_counts)(block) for block in blocks))
        counts = np.zeros(max(len(p) for p in parts), np.int64)
        for part in parts:
            counts[: len(part)] += part
        if counts.sum() == 0:
            return -1.0, 1.0
        return _percentile_of_counts(counts, low), _percentile_of_counts(counts, high)
    step = max(1, int(data.size) // PERCENTILE_SAMPLE)
    values = np.concatenate(dask.compute(*(dask.delayed(_block_sample)(block, step) for block in blocks)))
    if values.size == 0:
        return -1.0, 1.0
    if not np.all(np.isfinite(values)):
        return math.nan, math.nan
    first, second = np.percentile(values, [low, high])
    return float(first), float(second)
