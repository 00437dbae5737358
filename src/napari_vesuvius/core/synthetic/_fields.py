"""Cheap smooth random fields: coarse white noise, smoothed, then interpolated up to full size.

Smoothing a full-resolution volume with a wide Gaussian costs O(N·σ); generating the noise on a grid
``scale`` times coarser and interpolating it up costs O(N), which keeps 320³ generation at a few seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _coarse_shape(shape: tuple[int, ...], scale: float) -> tuple[int, ...]:
    return tuple(int(np.ceil(n / scale)) + 4 for n in shape)


def _normalise(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32, copy=False)


def _cubic_matrix(n: int, m: int, scale: float, offset: float) -> np.ndarray:
    """(n, m) matrix of Catmull-Rom weights sampling a length-``m`` signal at ``i / scale + 1.5 + offset``."""
    pos = np.arange(n) / scale + 1.5 + offset
    base = np.floor(pos).astype(np.intp)
    t = pos - base
    weights = np.stack(
        [
            ((-t + 2.0) * t - 1.0) * t / 2.0,
            ((3.0 * t - 5.0) * t * t + 2.0) / 2.0,
            ((-3.0 * t + 4.0) * t + 1.0) * t / 2.0,
            (t - 1.0) * t * t / 2.0,
        ],
        axis=1,
    )
    matrix = np.zeros((n, m))
    rows = np.repeat(np.arange(n), 4)
    cols = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, m - 1).ravel()
    np.add.at(matrix, (rows, cols), weights.ravel())
    return matrix


def smooth_noise_2d(
    rng: np.random.Generator, shape: tuple[int, int], scale: float | tuple[float, float]
) -> np.ndarray:
    """Zero-mean, unit-variance 2D field (float32) with bumps about ``scale`` pixels wide.

    ``scale`` may differ per axis (elongated bumps). Separable cubic (Catmull-Rom) interpolation of a
    smoothed coarse grid, done as two small matrix products: the result has continuous slopes, so
    height fields built from it give sheets without kinks.
    """
    scales = np.broadcast_to(np.maximum(np.asarray(scale, dtype=float), 1.0), (2,))
    coarse_shape = tuple(int(np.ceil(n / sc)) + 4 for n, sc in zip(shape, scales, strict=True))
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 0.6, mode="wrap")
    offset = rng.uniform(0.0, 1.0, size=2)
    rows = _cubic_matrix(shape[0], coarse_shape[0], scales[0], offset[0])
    cols = _cubic_matrix(shape[1], coarse_shape[1], scales[1], offset[1])
    # einsum's own loop, not BLAS: tiny products where BLAS threads only add overhead on busy machines.
    partial = np.einsum("ij,jk->ik", rows, coarse, optimize=False)
    return _normalise(np.einsum("ik,lk->il", partial, cols, optimize=False))


def anisotropic_noise_2d(
    rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]
) -> np.ndarray:
    """Zero-mean, unit-variance 2D white noise smoothed with a stretched Gaussian (fibre-like streaks)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    return _normalise(ndimage.gaussian_filter(noise, sigma, mode="reflect"))


def _lerp_axis(data: np.ndarray, axis: int, n: int, scale: float, offset: float) -> np.ndarray:
    pos = np.arange(n, dtype=np.float64) / scale + 1.0 + offset
    lo = np.floor(pos).astype(np.intp)
    view = [1] * data.ndim
    view[axis] = n
    frac = (pos - lo).astype(np.float32).reshape(view)
    a = np.take(data, lo, axis=axis)
    b = np.take(data, lo + 1, axis=axis)
    b -= a
    b *= frac
    b += a
    return b


def upsample_linear(
    coarse: np.ndarray, shape: tuple[int, ...], scale: float, offset: np.ndarray
) -> np.ndarray:
    """Separable linear interpolation of ``coarse`` onto a grid ``scale`` times finer (float32).

    Sample ``i`` of axis ``k`` sits at coarse coordinate ``i / scale + 1 + offset[k]``, so a
    2×-subsampled output equals this call with ``scale / 2`` and half the shape (used for cheap
    quantiles). Axes are done one at a time, last axis first, so most work is on small arrays.
    """
    out = coarse.astype(np.float32)
    for axis in reversed(range(out.ndim)):
        out = _lerp_axis(out, axis, shape[axis], scale, float(offset[axis]))
    return out


def upsample_threshold(
    coarse: np.ndarray, shape: tuple[int, int, int], scale: float, offset: np.ndarray, threshold: float
) -> np.ndarray:
    """``upsample_linear(...) > threshold`` computed slice by slice, never holding the float volume."""
    plane = coarse.astype(np.float32)
    for axis in (2, 1):
        plane = _lerp_axis(plane, axis, shape[axis], scale, float(offset[axis]))
    pos = np.arange(shape[0], dtype=np.float64) / scale + 1.0 + float(offset[0])
    lo = np.floor(pos).astype(np.intp)
    frac = (pos - lo).astype(np.float32)
    out = np.empty(shape, dtype=bool)
    buf = np.empty(shape[1:], dtype=np.float32)
    for z in range(shape[0]):
        np.subtract(plane[lo[z] + 1], plane[lo[z]], out=buf)
        buf *= frac[z]
        buf += plane[lo[z]]
        np.greater(buf, threshold, out=out[z])
    return out


def cumsum_axis0(volume: np.ndarray) -> np.ndarray:
    """In-place cumulative sum along axis 0 (slice by slice: many times faster than ``np.cumsum``)."""
    for z in range(1, volume.shape[0]):
        np.add(volume[z], volume[z - 1], out=volume[z])
    return volume


def coarse_noise_3d(
    rng: np.random.Generator, shape: tuple[int, int, int], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """A smoothed coarse 3D noise grid and a random sub-cell offset, for :func:`upsample_linear`.

    Interpolated up, it gives blobs about ``scale`` voxels wide.
    """
    scale = max(float(scale), 1.0)
    coarse = ndimage.gaussian_filter(rng.standard_normal(_coarse_shape(shape, scale)), 0.7, mode="wrap")
    return coarse.astype(np.float32), rng.uniform(0.0, 1.0, size=3)
