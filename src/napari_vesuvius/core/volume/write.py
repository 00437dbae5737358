"""Atomic writing of 3D volumes: page-per-slice TIFF (LZW), zarr arrays and OME-Zarr pyramids.

Every writer fills a temporary sibling (``.<name>.<random>-<pid>-<host>.tmp...``, see
:func:`~napari_vesuvius.core.atomic.temp_sibling`) and moves it onto the target only once it is complete,
so a failure or a cancel leaves an existing target untouched; a killed writer's temporary is removed by
the next write of the same target. Data are computed
slab by slab (dask), so volumes larger than memory can be written. Long writes are generator jobs
yielding :class:`~napari_vesuvius.core.progress.Progress`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.volume.base import (
    DEFAULT_ZARR_FORMAT,
    TIFF_SUFFIXES,
    cubic_chunks,
    is_ome_zarr_name,
    require_3d,
)
from napari_vesuvius.core.volume.ome_zarr_write import (
    create_ome_zarr_base,
    iter_finish_ome_zarr,
    iter_write_ome_zarr,
    write_ome_zarr,
)
from napari_vesuvius.core.volume.spatial import Downsample, Spatial
from napari_vesuvius.core.volume.tiff_write import write_tiff
from napari_vesuvius.core.volume.zarr_write import as_dask_input, swap_in, write_zarr_slabs


def iter_write_volume(
    path: str | Path,
    array: Any,
    *,
    compression: str | None = "lzw",
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    spatial: Spatial | None = None,
    downsample: Downsample | None = None,
) -> Iterator[Progress]:
    """Job: write a 3D volume atomically as a page-per-slice TIFF or a zarr array; returns the path.

    The data is computed slab by slab (dask), so a volume larger than memory can be written. The target
    only changes once the new file is complete; a failure or cancel leaves it untouched. ``compression``
    applies to TIFF (``"lzw"``, ``"zlib"``, None...); zarr uses zarr's default codec, ``chunks``
    (default cubic, about 2 MB) and ``zarr_format`` (2, the default, or 3). A path ending in ``.ome.zarr``
    is written as an OME-Zarr pyramid (:func:`iter_write_ome_zarr`, ``downsample`` its method).
    ``spatial`` (voxel size, origin, unit) is carried into the output: TIFF tags, NGFF transformations,
    or the attributes of a plain zarr.
    """
    path = Path(path)
    source = as_dask_input(array)
    require_3d(source.shape, path)
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    if is_ome_zarr_name(path):
        return (
            yield from iter_write_ome_zarr(
                path, source, chunks=chunks, zarr_format=zarr_format, spatial=spatial, downsample=downsample
            )
        )
    is_tiff = path.suffix.lower() in TIFF_SUFFIXES
    if not is_tiff and path.suffix.lower() != ".zarr":
        raise VolumeError(path, "unsupported output type; use .tif, .tiff or .zarr")
    tmp = temp_sibling(path, ".tmp" + path.suffix)
    try:
        if is_tiff:
            yield from write_tiff(tmp, path, source, compression, spatial)
        else:
            zarr_chunks = tuple(chunks) if chunks else cubic_chunks(source.shape, source.dtype.itemsize)
            yield from write_zarr_slabs(tmp, source, zarr_chunks, zarr_format, spatial)
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)
    return path


def write_volume(path: str | Path, array: Any, *, compression: str | None = "lzw", **kwargs: Any) -> Path:
    """Write a 3D volume atomically (.tif/.tiff one LZW page per z-slice, or .zarr); see iter_write_volume."""
    return run_job(iter_write_volume(path, array, compression=compression, **kwargs))


__all__ = [
    "create_ome_zarr_base",
    "iter_finish_ome_zarr",
    "iter_write_ome_zarr",
    "iter_write_volume",
    "write_ome_zarr",
    "write_volume",
]
