"""Reading a (prediction, label) pair for scoring: validate, find the foreground box, load only that box.

Two streaming passes, block by block (:func:`..value_checks.iter_blocks`), so neither volume is ever
held whole:

1. :func:`scan` checks dtypes and values (``strict``: the prediction a 0/1 mask, the label 0/1/2, the
   same rules as ``export``) and records, per TopoScore tile, the foreground's bounding box and voxel
   counts, after the official preprocessing (where the label is 2 both are background; foreground is
   ``x != 0`` with NaN as 0).
2. :func:`load` reads only the foreground box of both (grown by one voxel, clipped to the volume) into
   two boolean masks.

Every term of the score is unchanged by the crop: SurfaceDice and VOI only see the foreground (and
crop to it themselves), and TopoScore keeps the full volume's tiling through a
:class:`~.topo.Frame` and crops each tile with a one-voxel background margin (see
:func:`~.topo.tile_boxes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeError
from ..labels import IGNORE
from ..value_checks import (
    Counts,
    add_counts,
    block_counts,
    iter_blocks,
    label_dtype_problem,
    label_values_problem,
    mask_dtype_problem,
    mask_values_problem,
)
from .topo import DEFAULT_TILES, Frame, tile_slices

Where = str | Path | None


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
        self.voxels = 0

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
        self.voxels += int(np.count_nonzero(pred[local])) + int(np.count_nonzero(label[local]))
        z, y, x = (slice(p.start - s, p.stop - s) for p, s in zip(parts, self.start, strict=True))
        self.zhits[z] |= union.any(axis=(1, 2))
        self.plane[y, x] |= union.any(axis=0)

    def box(self) -> tuple[slice, ...] | None:
        """The foreground's bounding box in full-volume indices, grown by ``1`` and clipped to the tile."""
        hits = [
            np.flatnonzero(self.zhits),
            np.flatnonzero(self.plane.any(axis=1)),
            np.flatnonzero(self.plane.any(axis=0)),
        ]
        if hits[0].size == 0:
            return None
        return tuple(
            slice(max(s + int(h[0]) - 1, t.start), min(s + int(h[-1]) + 2, t.stop))
            for h, s, t in zip(hits, self.start, self.tile, strict=True)
        )


@dataclass
class Scan:
    """What pass 1 found: the volume shape, the foreground box, foreground counts, per-tile statistics."""

    shape: tuple[int, int, int]
    #: the foreground's bounding box grown by one voxel, clipped to the volume (None: no foreground)
    box: tuple[slice, slice, slice] | None
    pred_voxels: int
    label_voxels: int
    #: per non-empty TopoScore tile: (voxels of its computation box, foreground voxels in it)
    tiles: list[tuple[int, int]] = field(default_factory=list)

    @property
    def box_shape(self) -> tuple[int, int, int]:
        if self.box is None:
            return (0, 0, 0)
        z, y, x = (s.stop - s.start for s in self.box)
        return (z, y, x)

    @property
    def box_voxels(self) -> int:
        return math.prod(self.box_shape)


def _check_values(pred_counts: Counts, label_counts: Counts, names: tuple[Where, Where]) -> None:
    for problem, where in (
        (mask_values_problem(pred_counts), names[0]),
        (label_values_problem(label_counts), names[1]),
    ):
        if problem is not None:
            raise VolumeError(where, problem)


def scan(pred: Any, label: Any, *, strict: bool = True, names: tuple[Where, Where] = (None, None)) -> Scan:
    """Pass 1: validate (``strict``) and find the foreground, block by block (see the module docstring)."""
    check_pair(pred, label, strict=strict, names=names)
    shape = _shape_of(pred)
    tiles = [_TileScan(tile) for tile in tile_slices(shape, DEFAULT_TILES)]
    pred_voxels = label_voxels = 0
    pred_counts: Counts = {}
    label_counts: Counts = {}
    for region, (pred_block, label_block) in iter_blocks([pred, label]):
        if strict:
            add_counts(pred_counts, block_counts(pred_block))
            add_counts(label_counts, block_counts(label_block))
        p, g = foreground(pred_block, label_block)
        del pred_block, label_block
        pred_voxels += int(np.count_nonzero(p))
        label_voxels += int(np.count_nonzero(g))
        for tile in tiles:
            tile.add(region, p, g)
    if strict:
        _check_values(pred_counts, label_counts, names)
    found = [(tile, tile.box()) for tile in tiles]
    boxes = [box for _, box in found if box is not None]
    stats = [
        (math.prod(s.stop - s.start for s in box), tile.voxels) for tile, box in found if box is not None
    ]
    box = None
    if boxes:  # the union of the tiles' grown boxes is the whole foreground's, grown and clipped
        z, y, x = (slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        box = (z, y, x)
    return Scan((shape[0], shape[1], shape[2]), box, pred_voxels, label_voxels, stats)


@dataclass
class CroppedMasks:
    """The two foreground masks of the box, and where that box lies in the volume."""

    pred: np.ndarray
    label: np.ndarray
    frame: Frame


def load(pred: Any, label: Any, found: Scan) -> CroppedMasks:
    """Pass 2: read the foreground box of both volumes into boolean masks (empty when no foreground)."""
    if found.box is None:
        empty = np.zeros((0, 0, 0), dtype=bool)
        return CroppedMasks(empty, empty.copy(), Frame(found.shape))
    pred_mask = np.zeros(found.box_shape, dtype=bool)
    label_mask = np.zeros(found.box_shape, dtype=bool)
    origin = [s.start for s in found.box]
    for region, (pred_block, label_block) in iter_blocks([pred, label], found.box):
        target = tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, origin, strict=True))
        p, g = foreground(pred_block, label_block)
        del pred_block, label_block
        pred_mask[target] = p
        label_mask[target] = g
    return CroppedMasks(pred_mask, label_mask, Frame(found.shape, (origin[0], origin[1], origin[2])))
