"""Block-wise sliding window: one output block of a large volume, equal to the whole-volume pass.

The volume is cut into blocks (a multiple of the output chunks) that can be computed independently,
e.g. by dask workers (``core/scroll``). Each block uses the **global** tile grid of the whole volume,
the same tile starts as :func:`~.engine.predict_volume`: every tile that overlaps the block is run
(the input read is the union of those tiles: the block plus a halo of up to one patch), their
Gaussian-weighted logits are blended by the engine's own :class:`~._runner.ModelRunner` over that
region, and only the block is kept. A voxel of the block therefore receives exactly the tiles, in the
same order, as in the in-memory run; the result is the same up to float noise from batching.

Tiles that straddle blocks are computed by each block they touch. Inside the scan that costs
``∏ (tiles overlapping the block along an axis) / (tiles it owns)``, with step 0.5 about
``(1 + patch / (2 · block))³`` — 1.2× for 512³ blocks of a 64³ patch (:func:`recompute_factor` gives
the exact number for a grid); each block also reports the tiles with data it ran, so a run measures
its real overhead (small scanned regions cut by block borders cost more).

Air follows the engine's rules: a block whose own voxels are all 0 is all 0 in the output (``ct == 0``
→ 0) and is not computed at all; inside a computed block, tiles whose raw voxels are all 0 are skipped
by the runner exactly as in the in-memory pass. Pure numpy/torch: no dask, no zarr.

Input values follow :mod:`.intensity` as in the engine: each block folds the dtype's conversion into
the normalisations (silently: the run announces it once, see ``intensity.check_input_dtype``) and
refuses NaN/Inf (and, for a float → uint8 map, values outside [0, 1]) in the voxels it reads, naming
the volume's file (``volume.path`` when the volume has one) and the z of the first bad slice.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._tiling import padded_shape, tile_starts
from .intensity import adapt_normalizations, check_input_dtype, voxel_check
from .model_api import InferenceModel, Normalization, WeightedModel

Index3 = tuple[int, int, int]
Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class BlockGrid:
    """Blocks of ``block`` voxels per axis over a volume of ``shape`` (the last ones may be smaller)."""

    shape: Index3
    block: Index3

    @property
    def counts(self) -> Index3:
        c = [math.ceil(s / b) for s, b in zip(self.shape, self.block, strict=True)]
        return (c[0], c[1], c[2])

    @property
    def total(self) -> int:
        return int(np.prod(self.counts))

    def indices(self) -> Iterator[Index3]:
        """Every block index, z-major (the order blocks are submitted in)."""
        yield from itertools.product(*(range(c) for c in self.counts))  # type: ignore[misc]

    def region(self, index: Sequence[int]) -> Region:
        """The voxels of block ``index`` in volume coordinates."""
        s = [slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(index, self.block, self.shape, strict=True)]
        return (s[0], s[1], s[2])

    def flat(self, index: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(int(i) for i in index), self.counts))


@dataclass(frozen=True)
class AxisTiles:
    """The global tile starts along one axis (padded coordinates) and the padding before the data."""

    size: int
    patch: int
    starts: tuple[int, ...]
    before: int

    def overlapping(self, start: int, stop: int) -> tuple[int, int]:
        """Index range ``[i0, i1)`` of the tiles overlapping volume voxels ``[start, stop)``."""
        a, b = start + self.before, stop + self.before
        hits = [i for i, t in enumerate(self.starts) if t < b and t + self.patch > a]
        return hits[0], hits[-1] + 1

    def input_range(self, start: int, stop: int) -> tuple[int, int, list[int]]:
        """Volume range to read for voxels ``[start, stop)`` and the tile starts relative to it.

        An axis shorter than the patch has a single tile covering it (with padding): the whole axis is
        read and the local grid is the global one, so the runner pads it the same way.
        """
        if self.size < self.patch:
            return 0, self.size, list(self.starts)
        i0, i1 = self.overlapping(start, stop)
        lo = self.starts[i0]
        return lo, self.starts[i1 - 1] + self.patch, [t - lo for t in self.starts[i0:i1]]


def axis_tiles(shape: Sequence[int], patch: Sequence[int], step: float) -> list[AxisTiles]:
    """Per axis, the tiles of the in-memory engine's grid (``padded_shape`` + ``tile_starts``)."""
    full, before = padded_shape(shape, patch)
    return [
        AxisTiles(int(s), int(p), tuple(tile_starts(f, int(p), step)), b)
        for s, p, f, b in zip(shape, patch, full, before, strict=True)
    ]


def recompute_factor(grid: BlockGrid, patch: Sequence[int], step: float, blocks: Sequence[Index3]) -> float:
    """Tile evaluations of ``blocks`` (each block runs every tile overlapping it) per distinct tile."""
    axes = axis_tiles(grid.shape, patch, step)
    covered = np.zeros([len(a.starts) for a in axes], dtype=bool)
    runs = 0
    for index in blocks:
        ranges = [a.overlapping(r.start, r.stop) for a, r in zip(axes, grid.region(index), strict=True)]
        runs += int(np.prod([i1 - i0 for i0, i1 in ranges]))
        covered[tuple(slice(i0, i1) for i0, i1 in ranges)] = True
    distinct = int(covered.sum())
    return runs / distinct if distinct else 1.0


@dataclass(frozen=True)
class FixedNormalization:
    """A normalisation whose statistics are already fixed: ``fit`` is a no-op.

    The runner calls ``normalization.fit(volume)``; for a block that would re-fit a z-score model on
    the block instead of the whole volume, so blocks get the whole-volume fit wrapped in this.
    """

    inner: Normalization

    def fit(self, volume: Any) -> FixedNormalization:
        return self

    def apply(self, tile: np.ndarray) -> np.ndarray:
        return self.inner.apply(tile)


@dataclass
class BlockPrediction:
    """One block's uint8 probability (``None`` for an all-air block) and what it cost."""

    index: Index3
    probability: np.ndarray | None
    tiles_run: int = 0
    tiles_skipped: int = 0
    forward_s: float = 0.0
    elapsed_s: float = 0.0
    #: flat indices (in the first model's global tile grid) of the tiles with data this block ran
    tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def air(self) -> bool:
        return self.probability is None


def _drain(job: Generator[Any, None, Any]) -> Any:
    """Run a runner generator to its return value (block jobs report per block, not per batch)."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def predict_block(
    volume: Any,
    grid: BlockGrid,
    index: Sequence[int],
    members: Sequence[WeightedModel],
    normalizations: Sequence[Normalization],
    *,
    step: float,
    gaussian: bool,
    tta_axes: tuple[int, ...],
    batch_size: int,
    device: Any,
    precision: str,
    skip_air: bool = True,
) -> BlockPrediction:
    """uint8 surface probability of block ``index`` of ``volume`` (any array-like with slicing).

    ``normalizations``: each member's normalisation fitted on the whole volume (see
    ``Normalization.fit``); ``device``/``precision`` are resolved (a ``torch.device`` and a mode).
    Reads the block plus halo once per patch size (the block's own voxels decide whether it is all
    air: then nothing is computed).
    """
    from ._runner import ModelRunner
    from .engine import _convert

    start = time.perf_counter()
    key = (int(index[0]), int(index[1]), int(index[2]))
    region = grid.region(key)
    patches = [tuple(int(p) for p in m.model.patch_size) for m in members]
    source = getattr(volume, "path", None)
    conversions = check_input_dtype(members, volume.dtype, source, announce=False)
    normalizations = adapt_normalizations(normalizations, conversions)
    check = voxel_check(members, conversions, source)
    raw, ranges = _read_input(volume, grid, region, patches[0], step, check)
    raw_block = raw[
        tuple(slice(r.start - lo, r.stop - lo) for r, (lo, _, _) in zip(region, ranges, strict=True))
    ]
    if not raw_block.any():
        return BlockPrediction(key, None, elapsed_s=time.perf_counter() - start)
    inputs = {patches[0]: _trim(raw, ranges, patches[0])}
    del raw
    live = _live_tiles(*inputs[patches[0]], axis_tiles(grid.shape, patches[0], step))
    total_weight = float(sum(m.weight for m in members))
    # one model: slabs go straight to uint8; an ensemble is averaged in float32 first
    combined = np.zeros(raw_block.shape, np.float32) if len(members) > 1 else None
    out = np.zeros(raw_block.shape, np.uint8)
    result = BlockPrediction(key, None, tiles=live)
    for member, fitted, patch in zip(members, normalizations, patches, strict=True):
        model: InferenceModel = member.model
        if patch not in inputs:
            inputs[patch] = _trim(*_read_input(volume, grid, region, patch, step, check), patch)
        raw, origin, starts = inputs[patch]
        runner = ModelRunner(
            raw,
            replace(model, normalization=FixedNormalization(fitted)),
            step=step,
            gaussian=gaussian,
            tta_axes=tta_axes,
            batch_size=batch_size,
            device=device,
            precision=precision,
            skip_air=skip_air,
            grid=starts,
        )
        # the block's part of the input read (input coordinates) and where it goes in the block
        lo = [max(r.start - o, 0) for r, o in zip(region, origin, strict=True)]
        hi = [min(r.stop - o, n) for r, o, n in zip(region, origin, raw.shape, strict=True)]
        into = [li + o - r.start for li, o, r in zip(lo, origin, region, strict=True)]
        yx = (slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        out_yx = (slice(into[1], into[1] + hi[1] - lo[1]), slice(into[2], into[2] + hi[2] - lo[2]))
        for row in range(len(runner.rows)):
            finished = _drain(runner.run_row(row, 0, runner.tiles_total))
            if finished is None:
                continue
            z0, z1, prob = finished
            a, b = max(z0, lo[0]), min(z1, hi[0])
            if a >= b:
                continue
            piece = prob[(slice(a - z0, b - z0), *yx)]
            target = (slice(a - lo[0] + into[0], b - lo[0] + into[0]), *out_yx)
            if combined is not None:
                combined[target] += (member.weight / total_weight) * piece
            else:
                piece[raw_block[target] == 0] = 0.0
                out[target] = _convert(piece, np.dtype(np.uint8))
        result.tiles_run += runner.tiles_run
        result.tiles_skipped += runner.tiles_skipped
        result.forward_s += runner.forward_s
        del runner
    if combined is not None:
        combined[raw_block == 0] = 0.0
        out = _convert(combined, np.dtype(np.uint8))
    result.probability = out
    result.elapsed_s = time.perf_counter() - start
    return result


def _read_input(
    volume: Any,
    grid: BlockGrid,
    region: Region,
    patch: Sequence[int],
    step: float,
    check: Callable[[np.ndarray, int], None],
) -> tuple[np.ndarray, list[tuple[int, int, list[int]]]]:
    """The voxels of every tile overlapping the block (block + halo), checked by ``check``, and, per
    axis, their range in the volume and the tile starts relative to it."""
    ranges = [
        a.input_range(r.start, r.stop)
        for a, r in zip(axis_tiles(grid.shape, patch, step), region, strict=True)
    ]
    raw = np.asarray(volume[tuple(slice(lo, hi) for lo, hi, _ in ranges)])
    check(raw, ranges[0][0])
    return raw, ranges


def _trim(
    raw: np.ndarray, ranges: list[tuple[int, int, list[int]]], patch: Sequence[int]
) -> tuple[np.ndarray, list[int], list[list[int]]]:
    """The input cut down to the tiles that touch non-zero data: input, origin in the volume, starts.

    Tiles entirely outside the bounding box of the non-zero voxels are all zero, so the runner would
    skip them anyway (no logits, no weight); dropping them changes no output voxel but spares
    normalising and blending the empty part of a block at the edge of the scan.
    """
    plane = raw.any(axis=0)  # two passes over the data give the three profiles
    profiles = [raw.reshape(raw.shape[0], -1).any(axis=1), plane.any(axis=1), plane.any(axis=0)]
    keep, origin, starts = [], [], []
    for axis, (lo, hi, local) in enumerate(ranges):
        p = int(patch[axis])
        if hi - lo < p:  # an axis shorter than the patch: one padded tile, keep as it is
            keep.append(slice(0, hi - lo))
            origin.append(lo)
            starts.append(local)
            continue
        filled = np.flatnonzero(profiles[axis])
        first, last = int(filled[0]), int(filled[-1]) + 1
        kept = [t for t in local if t < last and t + p > first]
        keep.append(slice(kept[0], kept[-1] + p))
        origin.append(lo + kept[0])
        starts.append([t - kept[0] for t in kept])
    return np.ascontiguousarray(raw[tuple(keep)]), origin, starts


def _live_tiles(
    raw: np.ndarray, origin: list[int], starts: list[list[int]], axes: list[AxisTiles]
) -> np.ndarray:
    """Flat global indices of the input's tiles that hold non-zero voxels (the ones a pass runs)."""
    per_axis = []
    for axis, tiles in enumerate(axes):
        short = tiles.size < tiles.patch
        index = {t: i for i, t in enumerate(tiles.starts)}
        spans = [slice(0, raw.shape[axis]) if short else slice(t, t + tiles.patch) for t in starts[axis]]
        ids = [index[t if short else origin[axis] + t] for t in starts[axis]]
        per_axis.append(list(zip(ids, spans, strict=True)))
    counts = tuple(len(a.starts) for a in axes)
    live = [
        np.ravel_multi_index((iz, iy, ix), counts)
        for (iz, sz), (iy, sy), (ix, sx) in itertools.product(*per_axis)
        if raw[sz, sy, sx].any()
    ]
    return np.asarray(live, np.int64)


def downsample_max(data: np.ndarray) -> np.ndarray:
    """2× max-pooling per axis (odd sizes padded with 0): pyramid levels keep thin sheets visible."""
    pad = [(0, n % 2) for n in data.shape]
    if any(p for _, p in pad):
        data = np.pad(data, pad)
    data = np.maximum(data[0::2], data[1::2])  # one axis at a time: elementwise, much faster than a
    data = np.maximum(data[:, 0::2], data[:, 1::2])  # reduction over a strided 6D view
    return np.maximum(data[:, :, 0::2], data[:, :, 1::2])
