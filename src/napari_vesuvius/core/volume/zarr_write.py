"""Plain zarr writing shared by every writer: slab-wise filling, dask inputs, and the atomic swap.

:func:`swap_in` is the one way a finished temporary (file or store) replaces its target.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.volume.base import slab_chunks


def swap_in(tmp: Path, target: Path) -> None:
    """Move a finished ``tmp`` onto ``target``; an existing target is kept until the move succeeded."""
    if tmp.is_dir() and target.exists():
        old = temp_sibling(target, ".old", clean=False)  # may briefly hold the only copy: never cleaned
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        remove_path(old)
    else:
        if target.is_dir():
            raise VolumeError(target, "cannot replace a directory with a TIFF file")
        os.replace(tmp, target)


def as_dask_input(array: Any) -> da.Array:
    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=slab_chunks(array.shape, array.dtype.itemsize))
    return da.from_array(array, chunks=getattr(array, "chunks", "auto"))


def write_zarr_slabs(
    tmp: Path, source: da.Array, chunks: Sequence[int], zarr_format: int
) -> Iterator[Progress]:
    """Create a zarr array at ``tmp`` and fill it one z-slab of chunk depth at a time.

    A slab (``chunks[0]`` z-slices, full y/x) is computed once and split into chunks by zarr, so sources
    chunked differently (e.g. page-per-slice TIFFs) are read exactly once; memory is one slab.
    """
    import zarr

    target = zarr.create_array(
        store=str(tmp), shape=source.shape, chunks=tuple(chunks), dtype=source.dtype, zarr_format=zarr_format
    )
    depth = int(chunks[0])
    total = int(source.shape[0])
    for z0 in range(0, total, depth):
        z1 = min(total, z0 + depth)
        target[z0:z1] = np.asarray(source[z0:z1].compute(scheduler="threads"))
        yield Progress(z1, total, "writing slabs")
