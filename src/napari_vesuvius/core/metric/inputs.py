"""Reading a (prediction, label) pair for scoring: validate, find the foreground box, load only that box.

Two streaming passes, block by block (:func:`..value_checks.iter_blocks`), so neither volume is ever
held whole:

1. :func:`scan` checks dtypes and values (``strict``: the prediction a 0/1 mask, the label 0/1/2, the
   same rules as ``export``) and records, per TopoScore tile, the foreground's bounding box and voxel
   counts, after the official preprocessing (where the label is 2 both are background; foreground is
   ``x != 0`` with NaN as 0).
2. :func:`load` reads only the foreground box of both (grown by one voxel, clipped to the volume) into
   two boolean masks, or assembles them from the blocks' foreground that pass 1 kept when that fits
   the memory it is allowed (then nothing is read twice: a compressed TIFF is decoded once).

Blocks are read and prepared on :data:`READ_WORKERS` threads, a few blocks ahead.

Every term of the score is unchanged by the crop: SurfaceDice and VOI only see the foreground (and
crop to it themselves), and TopoScore keeps the full volume's tiling through a
:class:`~.topo.Frame` and crops each tile with a one-voxel background margin (see
:func:`~.topo.tile_boxes`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeError
from ..labels import IGNORE
from ..value_checks import (
    Counts,
    add_counts,
    block_bytes,
    block_counts,
    iter_regions,
    label_dtype_problem,
    label_values_problem,
    mask_dtype_problem,
    mask_values_problem,
    read_region,
)
from .topo import DEFAULT_TILES, Frame, TileBox, tile_slices

Where = str | Path | None
Region = tuple[slice, slice, slice]
#: one block's foreground box (full-volume slices) and the prediction's and label's masks in it
Piece = tuple[Region, np.ndarray, np.ndarray]
#: threads reading and preparing blocks (at most this many blocks are read ahead)
READ_WORKERS = 2


def foreground(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official preprocessing of one block: boolean masks ``x != 0`` (NaN as 0), both False where
    the label is 2 (ignore)."""
    ignore = (label == IGNORE) if label.dtype != np.bool_ else None
    masks = []
    for array in (pred, label):
        if array.dtype == np.bool_:
            mask = array.copy()
        else:
            mask = array != 0
            if array.dtype.kind in "fc":
                mask &= ~np.isnan(array)
        if ignore is not None:
            mask &= ~ignore
        masks.append(mask)
    return masks[0], masks[1]


def _shape_of(array: Any) -> tuple[int, ...]:
    shape = getattr(array, "shape", None)
    return tuple(int(n) for n in (shape if shape is not None else np.shape(array)))


def check_pair(pred: Any, label: Any, *, strict: bool, names: tuple[Where, Where] = (None, None)) -> None:
    """Shapes (3D, equal) and dtypes, before any voxel is read; errors name the file."""
    pred_shape, label_shape = _shape_of(pred), _shape_of(label)
    if len(pred_shape) != 3 or len(label_shape) != 3:
        raise VolumeError(
            names[0], f"scoring needs 3D volumes, got prediction {pred_shape} and label {label_shape}"
        )
    if pred_shape != label_shape:
        where = f" {names[1]}" if names[1] is not None else ""
        raise VolumeError(
            names[0], f"prediction shape {pred_shape} does not match label{where} shape {label_shape}"
        )
    pred_dtype, label_dtype = np.dtype(pred.dtype), np.dtype(label.dtype)
    if strict:
        for problem, where in (
            (mask_dtype_problem(pred_dtype), names[0]),
            (label_dtype_problem(label_dtype), names[1]),
        ):
            if problem is not None:
                raise VolumeError(where, problem)
    elif pred_dtype.kind not in "biuf" or label_dtype.kind not in "biuf":
        raise VolumeError(names[0], f"scoring needs numeric volumes, got {pred_dtype} and {label_dtype}")


class _TileScan:
    """Foreground of one TopoScore tile: which of its z-slices and (y, x) columns hold any, and counts."""

    def __init__(self, tile: tuple[slice, ...]) -> None:
        self.tile = tile
        self.start = tuple(int(t.start) for t in tile)
        self.zhits = np.zeros(tile[0].stop - tile[0].start, dtype=bool)
        self.plane = np.zeros((tile[1].stop - tile[1].start, tile[2].stop - tile[2].start), dtype=bool)
        self.pred_voxels = 0
        self.label_voxels = 0

    def add(self, region: tuple[slice, ...], pred: np.ndarray, label: np.ndarray) -> None:
        """Record the foreground of one block (``region``: its full-volume slices) inside this tile."""
        parts = [
            slice(max(r.start, t.start), min(r.stop, t.stop)) for r, t in zip(region, self.tile, strict=True)
        ]
        if any(part.stop <= part.start for part in parts):
            return
        local = tuple(slice(p.start - r.start, p.stop - r.start) for p, r in zip(parts, region, strict=True))
        union = pred[local] | label[local]
        count = int(np.count_nonzero(union))
        if count == 0:
            return
        self.pred_voxels += int(np.count_nonzero(pred[local]))
        self.label_voxels += int(np.count_nonzero(label[local]))
        z, y, x = (slice(p.start - s, p.stop - s) for p, s in zip(parts, self.start, strict=True))
        self.zhits[z] |= union.any(axis=(1, 2))
        self.plane[y, x] |= union.any(axis=0)

    def box(self) -> TileBox | None:
        """The foreground's bounding box in full-volume indices, grown by ``1`` and clipped to the tile
        (the same as :func:`.topo.tile_boxes` finds on the loaded masks), with the voxel counts."""
        hits = [
            np.flatnonzero(self.zhits),
            np.flatnonzero(self.plane.any(axis=1)),
            np.flatnonzero(self.plane.any(axis=0)),
        ]
        if hits[0].size == 0:
            return None
        z, y, x = (
            slice(max(s + int(h[0]) - 1, t.start), min(s + int(h[-1]) + 2, t.stop))
            for h, s, t in zip(hits, self.start, self.tile, strict=True)
        )
        return TileBox((z, y, x), self.pred_voxels, self.label_voxels)


@dataclass
class Scan:
    """What pass 1 found: the volume shape, the foreground box, foreground counts, per-tile statistics."""

    shape: tuple[int, int, int]
    #: the foreground's bounding box grown by one voxel, clipped to the volume (None: no foreground)
    box: tuple[slice, slice, slice] | None
    pred_voxels: int
    label_voxels: int
    #: per non-empty TopoScore tile: its computation box and foreground voxel counts
    tiles: list[TileBox] = field(default_factory=list)
    #: the blocks' foreground, cropped, when kept for :func:`load` (see :func:`scan`'s ``keep_bytes``)
    pieces: list[Piece] | None = field(default=None, repr=False, compare=False)

    @property
    def box_shape(self) -> tuple[int, int, int]:
        if self.box is None:
            return (0, 0, 0)
        z, y, x = (s.stop - s.start for s in self.box)
        return (z, y, x)

    @property
    def box_voxels(self) -> int:
        return math.prod(self.box_shape)

    @property
    def tile_sizes(self) -> list[tuple[int, int]]:
        """Per non-empty tile: (voxels of its computation box, foreground voxels), for the estimate."""
        return [(t.voxels, t.pred_voxels + t.label_voxels) for t in self.tiles]


def _check_values(pred_counts: Counts, label_counts: Counts, names: tuple[Where, Where]) -> None:
    for problem, where in (
        (mask_values_problem(pred_counts), names[0]),
        (label_values_problem(label_counts), names[1]),
    ):
        if problem is not None:
            raise VolumeError(where, problem)


def reading_bytes(pred: Any, label: Any) -> int:
    """Memory of reading both volumes: the blocks in flight (see :func:`_map_blocks`) and their masks."""
    return block_bytes([pred, label]) * (READ_WORKERS + 1)


def _map_blocks(
    arrays: Sequence[Any],
    box: Sequence[slice] | None,
    fn: Callable[[Region, list[np.ndarray]], Any],
    workers: int = READ_WORKERS,
) -> Iterator[tuple[Region, Any]]:
    """``(region, fn(region, blocks))`` for the blocks of :func:`iter_blocks`, in its order, read and
    processed on ``workers`` threads (decoding, value counts and masks release the GIL); at most
    ``workers`` blocks are read ahead of the one the caller holds."""
    regions = iter_regions(arrays, box)

    def task(region: Region) -> Any:
        return fn(region, [read_region(a, region) for a in arrays])

    if workers <= 1:
        for region in regions:
            yield region, task(region)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score-read") as pool:
        pending: deque[tuple[Region, Future[Any]]] = deque()
        try:
            for region in regions:
                pending.append((region, pool.submit(task, region)))
                if len(pending) >= workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _crop(region: Region, p: np.ndarray, g: np.ndarray) -> Piece | None:
    """The foreground box of one block's masks (full-volume slices) with copies of both; None if empty."""
    union = p | g
    hits = [np.flatnonzero(union.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    if hits[0].size == 0:
        return None
    local = tuple(slice(int(h[0]), int(h[-1]) + 1) for h in hits)
    z, y, x = (slice(r.start + b.start, r.start + b.stop) for r, b in zip(region, local, strict=True))
    return (z, y, x), p[local].copy(), g[local].copy()


def scan(
    pred: Any,
    label: Any,
    *,
    strict: bool = True,
    names: tuple[Where, Where] = (None, None),
    keep_bytes: int = 0,
) -> Scan:
    """Pass 1: validate (``strict``) and find the foreground, block by block (see the module docstring).

    The foreground of each block, cropped to its own box, is kept (:attr:`Scan.pieces`) as long as all
    of it takes at most ``keep_bytes``: then :func:`load` reads nothing again (the pieces lie inside the
    foreground box, so they never take more than the masks :func:`load` builds from them).
    """
    check_pair(pred, label, strict=strict, names=names)
    shape = _shape_of(pred)
    tiles = [_TileScan(tile) for tile in tile_slices(shape, DEFAULT_TILES)]
    pred_voxels = label_voxels = 0
    pred_counts: Counts = {}
    label_counts: Counts = {}
    pieces: list[Piece] | None = [] if keep_bytes > 0 else None
    kept = 0

    def prepare(region: Region, blocks: list[np.ndarray]) -> tuple[Any, ...]:
        pred_block, label_block = blocks
        counts = (block_counts(pred_block), block_counts(label_block)) if strict else None
        p, g = foreground(pred_block, label_block)
        del blocks, pred_block, label_block
        piece = _crop(region, p, g) if pieces is not None else None
        return counts, p, g, int(np.count_nonzero(p)), int(np.count_nonzero(g)), piece

    for region, (counts, p, g, n_pred, n_label, piece) in _map_blocks([pred, label], None, prepare):
        if counts is not None:
            add_counts(pred_counts, counts[0])
            add_counts(label_counts, counts[1])
        pred_voxels += n_pred
        label_voxels += n_label
        for tile in tiles:
            tile.add(region, p, g)
        if pieces is not None and piece is not None:
            kept += piece[1].nbytes + piece[2].nbytes
            if kept <= keep_bytes:
                pieces.append(piece)
            else:  # over the cap: load reads the box again
                pieces = None
    if strict:
        _check_values(pred_counts, label_counts, names)
    boxes = [box for box in (tile.box() for tile in tiles) if box is not None]
    box = None
    if boxes:  # the union of the tiles' grown boxes is the whole foreground's, grown and clipped
        z, y, x = (
            slice(min(b.region[a].start for b in boxes), max(b.region[a].stop for b in boxes))
            for a in range(3)
        )
        box = (z, y, x)
    return Scan((shape[0], shape[1], shape[2]), box, pred_voxels, label_voxels, boxes, pieces)


@dataclass
class CroppedMasks:
    """The two foreground masks of the box, and where that box lies in the volume."""

    pred: np.ndarray
    label: np.ndarray
    frame: Frame


def load(pred: Any, label: Any, found: Scan) -> CroppedMasks:
    """Pass 2: the foreground box of both volumes as boolean masks (empty when no foreground), from the
    pieces :func:`scan` kept (handed over: ``found.pieces`` is emptied) or read again block by block."""
    if found.box is None:
        empty = np.zeros((0, 0, 0), dtype=bool)
        return CroppedMasks(empty, empty.copy(), Frame(found.shape))
    pred_mask = np.zeros(found.box_shape, dtype=bool)
    label_mask = np.zeros(found.box_shape, dtype=bool)
    origin = [s.start for s in found.box]

    def place(region: Region, p: np.ndarray, g: np.ndarray) -> None:
        target = tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, origin, strict=True))
        pred_mask[target] = p
        label_mask[target] = g

    if found.pieces is not None:
        pieces, found.pieces = found.pieces, None
        while pieces:
            place(*pieces.pop())
    else:
        blocks = _map_blocks([pred, label], found.box, lambda _, b: foreground(b[0], b[1]))
        for region, (p, g) in blocks:
            place(region, p, g)
    return CroppedMasks(pred_mask, label_mask, Frame(found.shape, (origin[0], origin[1], origin[2])))
