"""Plain zarr writing shared by every writer: array creation, slab-wise filling, dask inputs, the atomic swap.

:func:`create_zarr_array` is the one way a plain zarr output is created (zarr format 2 by default, the
:class:`~.spatial.Spatial` placement in its attributes under :data:`~.spatial.SPATIAL_ATTR` when known);
:func:`swap_in` is the one way a finished temporary (file or store) replaces its target.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.volume.base import DEFAULT_ZARR_FORMAT, check_zarr_format, slab_chunks
from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial

if TYPE_CHECKING:
    import dask.array as da  # imported where used: reading a TIFF for scoring needs no dask


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
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=slab_chunks(array.shape, array.dtype.itemsize))
    return da.from_array(array, chunks=getattr(array, "chunks", "auto"))


def spatial_attrs(spatial: Spatial | None) -> dict[str, Any]:
    """The attributes recording ``spatial`` in a plain zarr array (none for the default placement)."""
    if spatial is None or spatial.is_default:
        return {}
    return {SPATIAL_ATTR: spatial.to_dict()}


def create_zarr_array(
    store: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    chunks: Sequence[int],
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    fill_value: Any = 0,
    spatial: Spatial | None = None,
) -> Any:
    """Create an empty plain zarr array (a local path or an fsspec URL) and return it.

    zarr format 2 by default (zarr-python 2.x and the ``vesuvius`` library read it), 3 when asked;
    missing chunks read as ``fill_value``; ``spatial`` is stored under ``SPATIAL_ATTR`` when not default.
    """
    import zarr

    array = zarr.create_array(
        store=str(store),
        shape=tuple(int(n) for n in shape),
        chunks=tuple(int(n) for n in chunks),
        dtype=np.dtype(dtype),
        fill_value=fill_value,
        zarr_format=check_zarr_format(zarr_format, store),  # type: ignore[arg-type]
    )
    attrs = spatial_attrs(spatial)
    if attrs:
        array.attrs.update(attrs)
    return array


def write_zarr_slabs(
    tmp: Path,
    source: da.Array,
    chunks: Sequence[int],
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    spatial: Spatial | None = None,
) -> Iterator[Progress]:
    """Create a zarr array at ``tmp`` and fill it one z-slab of chunk depth at a time.

    A slab (``chunks[0]`` z-slices, full y/x) is computed once and split into chunks by zarr, so sources
    chunked differently (e.g. page-per-slice TIFFs) are read exactly once; memory is one slab.
    ``spatial`` goes into the array's attributes (see :func:`create_zarr_array`).
    """
    target = create_zarr_array(
        tmp, source.shape, source.dtype, chunks=chunks, zarr_format=zarr_format, spatial=spatial
    )
    depth = int(chunks[0])
    total = int(source.shape[0])
    for z0 in range(0, total, depth):
        z1 = min(total, z0 + depth)
        target[z0:z1] = np.asarray(source[z0:z1].compute(scheduler="threads"))
        yield Progress(z1, total, "writing slabs")
