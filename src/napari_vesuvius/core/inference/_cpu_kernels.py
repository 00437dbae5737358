"""Numba kernels for the CPU forward: instance-norm statistics, fused normalise/add/activate, pooling.

They work on ``channels_last_3d`` activations seen as ``(voxels, channels)`` rows and replace chains of
PyTorch calls that each sweep a 67 MB activation (``sum`` + a Gram-matrix product for the statistics,
``addcmul`` + ``add_`` + ``leaky_relu_`` to apply them): profiling a 128³ nnU-Net ResEncM tile showed
those sweeps, not arithmetic, as the largest cost after the convolutions (docs/benchmarks.md).

* :func:`channel_moments`: per-channel mean and variance in one pass, accumulated in float64 around
  the first voxel's value (a shifted sum: no cancellation when the mean dwarfs the spread);
* :func:`normalize_`: ``y = x·scale + shift (+ residual)``, then LeakyReLU with ``slope`` (1: none),
  written over ``x`` in one pass;
* :func:`avg_pool`: mean over non-overlapping ``kz×ky×kx`` windows (``AvgPool3d`` with kernel ==
  stride), reading each voxel once.

The kernels release the GIL. When the calling thread may use several torch threads, rows are split
over a small thread pool; in the engine's side-by-side mode (one single-threaded forward per core)
each call stays on its own thread.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba as nb
import numpy as np
import torch

_NJIT = {"nogil": True, "cache": True}
#: below this many values a call is not split over threads (the hand-off costs more)
_SPLIT_MIN_VALUES = 1 << 20


@nb.njit(**_NJIT)
def _moments(rows: np.ndarray, start: int, stop: int, total: np.ndarray, squares: np.ndarray) -> None:
    channels = rows.shape[1]
    for v in range(start, stop):
        for k in range(channels):
            d = np.float64(rows[v, k]) - np.float64(rows[0, k])
            total[k] += d
            squares[k] += d * d


@nb.njit(**_NJIT)
def _normalize(
    rows: np.ndarray, start: int, stop: int, scale: np.ndarray, shift: np.ndarray, slope: np.float32
) -> None:
    channels = rows.shape[1]
    for v in range(start, stop):
        for k in range(channels):
            y = rows[v, k] * scale[k] + shift[k]
            rows[v, k] = y if y >= 0 else y * slope


@nb.njit(**_NJIT)
def _normalize_add(
    rows: np.ndarray,
    residual: np.ndarray,
    start: int,
    stop: int,
    scale: np.ndarray,
    shift: np.ndarray,
    slope: np.float32,
) -> None:
    channels = rows.shape[1]
    for v in range(start, stop):
        for k in range(channels):
            y = rows[v, k] * scale[k] + shift[k] + residual[v, k]
            rows[v, k] = y if y >= 0 else y * slope


@nb.njit(**_NJIT)
def _avg_pool(src: np.ndarray, dst: np.ndarray, kz: int, ky: int, kx: int, z0: int, z1: int) -> None:
    # src (D, H, W, C), dst (D/kz, H/ky, W/kx, C); output planes [z0, z1)
    inv = np.float32(1.0 / (kz * ky * kx))
    channels = src.shape[3]
    acc = np.zeros(channels, dtype=np.float32)
    for z in range(z0, z1):
        for y in range(dst.shape[1]):
            for x in range(dst.shape[2]):
                acc[:] = 0
                for a in range(kz):
                    for b in range(ky):
                        for c in range(kx):
                            acc += src[z * kz + a, y * ky + b, x * kx + c]
                dst[z, y, x] = acc * inv


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="cpu-kernel")


def _ranges(count: int, values_per_item: int) -> list[tuple[int, int]]:
    """Split ``range(count)`` over the calling thread's torch threads (one part when single-threaded)."""
    workers = torch.get_num_threads()
    if workers <= 1 or count * values_per_item < _SPLIT_MIN_VALUES:
        return [(0, count)]
    bounds = np.linspace(0, count, min(workers, count) + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _run(kernel, ranges: list[tuple[int, int]], make_args) -> None:  # type: ignore[no-untyped-def]
    if len(ranges) == 1:
        kernel(*make_args(0, *ranges[0]))
        return
    futures = [_pool(len(ranges)).submit(kernel, *make_args(i, a, b)) for i, (a, b) in enumerate(ranges)]
    for future in futures:
        future.result()


def channel_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (biased) variance of ``(voxels, channels)`` float32 rows, in float64."""
    count, channels = rows.shape
    ranges = _ranges(count, channels)
    totals = np.zeros((len(ranges), channels))
    squares = np.zeros((len(ranges), channels))
    _run(_moments, ranges, lambda i, a, b: (rows, a, b, totals[i], squares[i]))
    total, square = totals.sum(0) / count, squares.sum(0) / count
    mean = rows[0].astype(np.float64) + total
    return mean, np.maximum(square - total * total, 0.0)


def normalize_(
    rows: np.ndarray,
    scale: np.ndarray,
    shift: np.ndarray,
    slope: float = 1.0,
    residual: np.ndarray | None = None,
) -> None:
    """``rows = act(rows·scale + shift (+ residual))`` in place; ``act`` = LeakyReLU(``slope``)."""
    count, channels = rows.shape
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    shift = np.ascontiguousarray(shift, dtype=np.float32)
    ranges = _ranges(count, channels)
    if residual is None:
        _run(_normalize, ranges, lambda i, a, b: (rows, a, b, scale, shift, np.float32(slope)))
    else:
        args = lambda i, a, b: (rows, residual, a, b, scale, shift, np.float32(slope))  # noqa: E731
        _run(_normalize_add, ranges, args)


def avg_pool(src: np.ndarray, kernel: tuple[int, int, int]) -> np.ndarray:
    """Mean over non-overlapping windows of a ``(D, H, W, C)`` float32 array (trailing voxels dropped)."""
    kz, ky, kx = kernel
    d, h, w, c = src.shape
    dst = np.empty((d // kz, h // ky, w // kx, c), dtype=np.float32)
    ranges = _ranges(dst.shape[0], h * w * c * kz)
    _run(_avg_pool, ranges, lambda i, a, b: (src, dst, kz, ky, kx, a, b))
    return dst
