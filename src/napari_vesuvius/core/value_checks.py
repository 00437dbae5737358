"""Value rules of binary masks and label volumes, checked chunk by chunk: one place for export and score.

* A **mask** (a submission mask, a prediction to score) is bool or integer holding only 0 and 1. Float
  masks are refused whatever their values (a value like 1.00000002 is not 1, and casting would hide a
  missing threshold step); a ``{0, 255}`` mask is refused too (with the hint to divide it by 255), so a
  mask that scores is also one that exports.
* A **label** volume holds only 0 (background), 1 (surface) and 2 (ignore), in any numeric dtype.

The checks return the problem as text (or None); callers raise their own error type naming the file.
Volumes are read block by block (:func:`iter_blocks`: chunk-aligned for dask/zarr, bounded slabs for
numpy), so memory stays at one block whatever the volume size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .labels import VALID_LABEL_VALUES

MASK_VALUES = frozenset({0, 1})
#: Bytes of one block read at a time from an in-memory array (dask arrays go by their own chunks).
SLAB_BYTES = 8 * 1024**2

Counts = dict[Any, int]


def mask_dtype_problem(dtype: Any) -> str | None:
    """None for bool/integer masks; otherwise why the dtype is refused, with the threshold hint."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or dtype.kind in "iu":
        return None
    if dtype.kind == "f":
        return (
            f"mask dtype is {dtype}; a mask must be uint8 (or bool/integer) with values {{0, 1}}. "
            "Float masks are refused, not cast: threshold the probabilities first "
            "(`napari-vesuvius postprocess`)"
        )
    return f"mask dtype is {dtype}; a mask must be uint8 (or bool/integer) with values {{0, 1}}"


def label_dtype_problem(dtype: Any) -> str | None:
    """None for numeric label volumes (their values are checked separately)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or dtype.kind in "iuf":
        return None
    return f"label dtype is {dtype}; labels must be numeric with values 0, 1 or 2"


#: Elements counted per ``bincount`` call (its int64 working copy stays at 32 MB).
_COUNT_PIECE = 2**22
#: Integer blocks whose values all lie in ``0..`` this are counted value by value (masks, labels).
_FEW_VALUES = 3


def block_counts(block: np.ndarray) -> Counts:
    """Voxel count per value of one in-memory block.

    Integer blocks holding only a few small values (0/1 masks, 0/1/2 labels: the usual case) are
    counted with one comparison per value, several times faster than ``bincount``'s int64 copy;
    others with ``bincount`` (bool/small unsigned ints) or ``unique``.
    """
    flat = np.asarray(block).ravel()
    if flat.size and flat.dtype.kind in "biu":
        values = flat.view(np.uint8) if flat.dtype == np.bool_ else flat
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= _FEW_VALUES:
            counts = {v: int(np.count_nonzero(values == v)) for v in range(1, high + 1)}
            counts[0] = flat.size - sum(counts.values())
            return {v: counts[v] for v in sorted(counts) if counts[v]}
    if flat.dtype == np.bool_ or (flat.dtype.kind == "u" and flat.dtype.itemsize <= 2):
        if flat.dtype == np.bool_:
            flat = flat.view(np.uint8)
        total = np.zeros(1, dtype=np.int64)
        for start in range(0, flat.size, _COUNT_PIECE):
            counts = np.bincount(flat[start : start + _COUNT_PIECE])
            if counts.size > total.size:
                counts[: total.size] += total
                total = counts
            else:
                total[: counts.size] += counts
        return {int(v): int(total[v]) for v in np.flatnonzero(total)}
    values, counts = np.unique(flat, return_counts=True)
    return {v.item(): int(c) for v, c in zip(values, counts, strict=True)}


def add_counts(total: Counts, more: Mapping[Any, int]) -> Counts:
    for value, count in more.items():
        total[value] = total.get(value, 0) + int(count)
    return total


def _outside(counts: Mapping[Any, int], allowed: frozenset[int]) -> tuple[list[Any], int]:
    # NaN is never allowed (and never equal to itself, so check it explicitly)
    bad = sorted(
        (v for v in counts if (isinstance(v, float) and np.isnan(v)) or v not in allowed),
        key=lambda v: (isinstance(v, float) and np.isnan(v), v if v == v else 0),
    )
    return bad, sum(counts[v] for v in bad)


def _shown(values: list[Any], limit: int) -> str:
    return ", ".join(repr(v) for v in values[:limit]) + (" ..." if len(values) > limit else "")


def mask_values_problem(counts: Mapping[Any, int]) -> str | None:
    """None when the value counts of a mask hold only 0 and 1; otherwise the bad values and voxels."""
    bad, voxels = _outside(counts, MASK_VALUES)
    if not bad:
        return None
    text = f"values must be 0 or 1; found {_shown(bad, 6)} in {voxels} voxel(s)"
    if bad == [255]:
        text += " (a 0/255 mask: divide it by 255 to get the 0/1 mask expected here)"
    return text


def label_values_problem(counts: Mapping[Any, int]) -> str | None:
    """None when label value counts hold only 0, 1 and 2; otherwise the bad values and voxels."""
    bad, voxels = _outside(counts, VALID_LABEL_VALUES)
    if not bad:
        return None
    return f"label values must be 0, 1 or 2; found {_shown(bad, 8)} in {voxels} voxel(s)"


def _is_lazy(array: Any) -> bool:
    return not isinstance(array, np.ndarray) and getattr(array, "chunks", None) is not None


def _chunk(array: Any, axis: int) -> int:
    first = array.chunks[axis]
    return max(1, int(first[0] if isinstance(first, tuple) else first))


def block_steps(shape: Sequence[int], arrays: Sequence[Any], max_bytes: int = SLAB_BYTES) -> tuple[int, int]:
    """``(z, y)`` block sizes for reading ``arrays`` (one shape) together, whole rows along x.

    Lazy (dask/zarr) arrays go by their coarsest z- and y-chunks, so every chunk is read once;
    in-memory arrays by ``max_bytes`` worth of whole z-slices (or y-rows, when one slice is larger).
    """
    depth, height, width = (int(n) for n in shape)
    lazy = [a for a in arrays if _is_lazy(a)]
    if lazy:
        return max(_chunk(a, 0) for a in lazy), max(_chunk(a, 1) for a in lazy)
    itemsize = max([np.dtype(a.dtype).itemsize for a in arrays] or [1])
    row = max(1, width * itemsize)
    if row * height <= max_bytes:
        return max(1, min(depth, max_bytes // (row * height))), max(height, 1)
    return 1, max(1, max_bytes // row)


def block_bytes(arrays: Sequence[Any], max_bytes: int = SLAB_BYTES, temporaries: int = 6) -> int:
    """Memory of reading one block of each of ``arrays`` together, with ``temporaries`` boolean copies."""
    shape = tuple(int(n) for n in arrays[0].shape)
    zstep, ystep = block_steps(shape, arrays, max_bytes)
    voxels = min(zstep, shape[0]) * min(ystep, shape[1]) * shape[2]
    return voxels * (sum(np.dtype(a.dtype).itemsize for a in arrays) + temporaries)


def read_region(array: Any, region: tuple[slice, ...]) -> np.ndarray:
    """``array[region]`` as numpy (computing a dask array with threads; a view of a numpy array)."""
    block = array[region]
    if hasattr(block, "compute") and not isinstance(block, np.ndarray):
        block = block.compute(scheduler="threads")
    return np.asarray(block)


def iter_regions(
    arrays: Sequence[Any], box: Sequence[slice] | None = None, max_bytes: int = SLAB_BYTES
) -> Iterator[tuple[slice, slice, slice]]:
    """The regions :func:`iter_blocks` reads, in its order (for callers that read them on threads)."""
    shape = tuple(int(n) for n in arrays[0].shape)
    if box is None:
        box = tuple(slice(0, n) for n in shape)
    zstep, ystep = block_steps(shape, arrays, max_bytes)
    zbox, ybox, xbox = box
    for z0 in range(zbox.start - zbox.start % zstep, zbox.stop, zstep):
        zs = slice(max(z0, zbox.start), min(z0 + zstep, zbox.stop))
        for y0 in range(ybox.start - ybox.start % ystep, ybox.stop, ystep):
            ys = slice(max(y0, ybox.start), min(y0 + ystep, ybox.stop))
            yield (zs, ys, xbox)


def iter_blocks(
    arrays: Sequence[Any], box: Sequence[slice] | None = None, max_bytes: int = SLAB_BYTES
) -> Iterator[tuple[tuple[slice, slice, slice], list[np.ndarray]]]:
    """``(region, blocks)`` over ``box`` (default: everything) of 3D arrays of one shape, read together
    block by block (see :func:`block_steps`): only one block of each array is in memory at a time."""
    for region in iter_regions(arrays, box, max_bytes):
        yield region, [read_region(a, region) for a in arrays]


def value_counts(array: Any, max_bytes: int = SLAB_BYTES) -> Counts:
    """Voxel count per value of a whole volume, streamed block by block."""
    if np.ndim(array) != 3:
        array = np.asarray(array).reshape(1, 1, -1)
    counts: Counts = {}
    for _, (block,) in iter_blocks([array], max_bytes=max_bytes):
        add_counts(counts, block_counts(block))
    return counts


def mask_problem(array: Any) -> str | None:
    """Dtype and value check of a whole mask, streamed block by block (None when it is a 0/1 mask)."""
    problem = mask_dtype_problem(array.dtype)
    if problem is not None or np.dtype(array.dtype) == np.bool_:
        return problem
    return mask_values_problem(value_counts(array))


def label_problem(array: Any) -> str | None:
    """Dtype and value check of a whole label volume, streamed block by block (None when valid)."""
    problem = label_dtype_problem(array.dtype)
    if problem is not None or np.dtype(array.dtype) == np.bool_:
        return problem
    return label_values_problem(value_counts(array))
