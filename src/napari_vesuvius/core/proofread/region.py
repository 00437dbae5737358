"""Boxes of a volume (``z0:z1,y0:y1,x0:x1``) and in-memory crops of lazy (dask/zarr) volumes.

A box is a tuple of three ``slice(start, stop)`` with explicit, clipped integer bounds. Volumes too
large to paint are edited as an in-memory crop: :func:`read_crop` reads only the chunks a box
touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Box = tuple[slice, slice, slice]


def full_box(shape: Sequence[int]) -> Box:
    """The box of the whole volume."""
    z, y, x = (int(n) for n in shape)
    return (slice(0, z), slice(0, y), slice(0, x))


def box_shape(box: Box) -> tuple[int, int, int]:
    return tuple(int(s.stop) - int(s.start) for s in box)  # type: ignore[return-value]


def box_voxels(box: Box) -> int:
    return int(np.prod(box_shape(box)))


def box_origin(box: Box) -> tuple[int, int, int]:
    return tuple(int(s.start) for s in box)  # type: ignore[return-value]


def is_full(box: Box, shape: Sequence[int]) -> bool:
    return box == full_box(shape)


def clip_box(box: Sequence[slice], shape: Sequence[int]) -> Box:
    """``box`` with missing bounds filled and every bound clipped into the volume."""
    out = []
    for s, n in zip(box, shape, strict=True):
        start = 0 if s.start is None else min(max(int(s.start), 0), int(n))
        stop = int(n) if s.stop is None else min(max(int(s.stop), 0), int(n))
        out.append(slice(start, max(start, stop)))
    return tuple(out)  # type: ignore[return-value]


def parse_box(text: str, shape: Sequence[int]) -> Box:
    """Parse ``"z0:z1,y0:y1,x0:x1"`` (numpy-like; empty text or ``:`` parts mean the whole axis).

    Raises ``ValueError`` naming the problem for malformed text or an empty box.
    """
    text = text.strip()
    if not text:
        return full_box(shape)
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3:
        raise ValueError(f"box {text!r}: expected three ranges z0:z1,y0:y1,x0:x1")
    box = []
    for axis, part in zip("zyx", parts, strict=True):
        bounds = part.split(":")
        if len(bounds) != 2:
            raise ValueError(f"box {text!r}: range {part!r} for {axis} must look like start:stop")
        try:
            start, stop = (int(b) if b.strip() else None for b in bounds)
        except ValueError:
            raise ValueError(f"box {text!r}: range {part!r} for {axis} must be integers") from None
        box.append(slice(start, stop))
    clipped = clip_box(box, shape)
    if box_voxels(clipped) == 0:
        raise ValueError(f"box {text!r} is empty inside the volume of shape {tuple(shape)}")
    return clipped


def format_box(box: Box) -> str:
    """``"z0:z1,y0:y1,x0:x1"``, the inverse of :func:`parse_box`."""
    return ",".join(f"{int(s.start)}:{int(s.stop)}" for s in box)


def grow_box(box: Box, margin: int, shape: Sequence[int]) -> tuple[Box, Box]:
    """``(outer, inner)``: ``box`` grown by ``margin`` (clipped), and ``box`` relative to ``outer``."""
    outer = clip_box([slice(int(s.start) - margin, int(s.stop) + margin) for s in box], shape)
    inner = tuple(
        slice(int(s.start) - int(o.start), int(s.stop) - int(o.start))
        for s, o in zip(box, outer, strict=True)
    )
    return outer, inner  # type: ignore[return-value]


def visible_box(
    corner_min: Sequence[float],
    corner_max: Sequence[float],
    displayed: Sequence[int],
    current: Sequence[int],
    depth: int,
    shape: Sequence[int],
) -> Box:
    """The region on screen: the displayed axes' corners, ``depth`` slices around the current one.

    ``corner_min``/``corner_max`` are inclusive data coordinates (napari's ``layer.corner_pixels``).
    """
    bounds = []
    for axis in range(len(shape)):
        if axis in displayed:
            bounds.append(slice(int(np.floor(corner_min[axis])), int(np.floor(corner_max[axis])) + 1))
        else:
            centre = int(current[axis])
            half = max(int(depth), 1) // 2
            bounds.append(slice(centre - half, centre - half + max(int(depth), 1)))
    box = clip_box(bounds, shape)
    if box_voxels(box) == 0:
        raise ValueError(f"the visible region is outside the volume of shape {tuple(shape)}")
    return box


def read_crop(array: Any, box: Box) -> np.ndarray:
    """The voxels of ``box`` as a NumPy array (dask computed with threads; zarr/numpy sliced)."""
    region = array[box]
    if hasattr(region, "compute") and not isinstance(region, np.ndarray):
        region = region.compute(scheduler="threads")
    return np.array(region, copy=True)
