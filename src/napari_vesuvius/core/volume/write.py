"""Atomic writing of 3D volumes: page-per-slice TIFF (LZW), zarr arrays and OME-Zarr pyramids.

Every writer fills a temporary sibling (``.<name>.<random>-<pid>-<host>.tmp...``, see
:func:`~napari_vesuvius.core.atomic.temp_sibling`) and moves it onto the target only once it is complete,
so a failure or a cancel leaves an existing target untouched; a killed writer's temporary is removed by
the next write of the same target. Data are computed
slab by slab (dask), so volumes larger than memory can be written. Long writes are generator jobs
yielding :class:`~napari_vesuvius.core.progress.Progress`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.volume.base import (
    DEFAULT_ZARR_FORMAT,
    TIFF_SUFFIXES,
    cubic_chunks,
    require_3d,
    slab_chunks,
)
from napari_vesuvius.core.volume.spatial import Downsample, Spatial


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


def _as_dask_input(array: Any) -> da.Array:
    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=slab_chunks(array.shape, array.dtype.itemsize))
    return da.from_array(array, chunks=getattr(array, "chunks", "auto"))


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
    source = _as_dask_input(array)
    require_3d(source.shape, path)
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    is_tiff = path.suffix.lower() in TIFF_SUFFIXES
    if not is_tiff and path.suffix.lower() != ".zarr":
        raise VolumeError(path, "unsupported output type; use .tif, .tiff or .zarr")
    tmp = temp_sibling(path, ".tmp" + path.suffix)
    try:
        if is_tiff:
            yield from _write_tiff(tmp, path, source, compression)
        else:
            zarr_chunks = tuple(chunks) if chunks else cubic_chunks(source.shape, source.dtype.itemsize)
            yield from _write_zarr(tmp, source, zarr_chunks, zarr_format)
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)
    return path


class _AbortWrite(Exception):
    """Sent to the TIFF writer thread when the job is closed or fails before the last page."""


def _write_tiff(tmp: Path, path: Path, source: da.Array, compression: str | None) -> Iterator[Progress]:
    """Compute slabs here and hand them to a tifffile writer thread (which LZW-encodes in parallel)."""
    import tifffile

    slabs: queue.Queue[Any] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    codec = None if compression in (None, "none") else compression

    def pages() -> Iterator[np.ndarray]:
        while True:
            item = slabs.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def writer_thread() -> None:
        try:
            with tifffile.TiffWriter(tmp, bigtiff=source.nbytes > 2**31 - 2**25) as writer:
                writer.write(
                    pages(),
                    shape=source.shape,
                    dtype=source.dtype,
                    photometric="minisblack",
                    compression=codec,
                )
        except BaseException as error:
            failure.append(error)

    def put(item: Any) -> None:
        while thread.is_alive():
            try:
                slabs.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=writer_thread, name="tiff-writer", daemon=True)
    thread.start()
    done, total = 0, int(source.shape[0])
    try:
        depth = slab_chunks(source.shape, source.dtype.itemsize)[0]
        for block in source.rechunk({0: depth, 1: -1, 2: -1}).to_delayed().ravel():
            data = np.asarray(block.compute(scheduler="threads"))
            put(data)
            if failure:
                break
            done += data.shape[0]
            yield Progress(done, total, "writing slices")
        put(None)
    except BaseException:
        with contextlib.suppress(queue.Empty):
            while True:
                slabs.get_nowait()
        put(_AbortWrite())
        raise
    finally:
        thread.join()
    if failure:
        raise VolumeError(path, f"writing the TIFF failed ({type(failure[0]).__name__}: {failure[0]})") from (
            failure[0]
        )


def _write_zarr(tmp: Path, source: da.Array, chunks: Sequence[int], zarr_format: int) -> Iterator[Progress]:
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


def write_volume(path: str | Path, array: Any, *, compression: str | None = "lzw", **kwargs: Any) -> Path:
    """Write a 3D volume atomically (.tif/.tiff one LZW page per z-slice, or .zarr); see iter_write_volume."""
    return run_job(iter_write_volume(path, array, compression=compression, **kwargs))


def iter_write_ome_zarr(
    path: str | Path,
    levels: Any,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    spatial: Spatial | None = None,
    downsample: Downsample | None = None,
) -> Iterator[Progress]:
    """Job: write a multiscale OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on v3) atomically.

    ``levels``: one 3D array (its pyramid is computed with ``downsample``: ``mean`` by default for
    floats, ``nearest`` for integers; pass ``max`` for thin binary masks) or a sequence of levels, full
    resolution first. ``spatial`` places level 0; the metadata is built and validated by :mod:`.ngff`.
    """
    import zarr

    path = Path(path)
    if not levels:
        raise VolumeError(path, "no resolution levels to write")
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    sources = [_as_dask_input(level) for level in levels]
    for source in sources:
        require_3d(source.shape, path)
    base = sources[0].shape
    tmp = temp_sibling(path, ".tmp.zarr")
    try:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=2)
        datasets = []
        for index, source in enumerate(sources):
            level_chunks = tuple(chunks) if chunks else cubic_chunks(source.shape, source.dtype.itemsize)
            for report in _write_zarr(tmp / str(index), source, level_chunks, 2):
                yield Progress(
                    report.done, report.total, f"level {index + 1}/{len(sources)}: {report.message}"
                )
            scale = [float(b) / float(n) for b, n in zip(base, source.shape, strict=True)]
            datasets.append(
                {"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        axes = [{"name": name, "type": "space"} for name in "zyx"]
        group.attrs["multiscales"] = [
            {"version": "0.4", "name": path.stem, "axes": axes, "datasets": datasets}
        ]
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)
    return path


def write_ome_zarr(path: str | Path, levels: Any, **kwargs: Any) -> Path:
    """Write a multiscale OME-Zarr atomically; see :func:`iter_write_ome_zarr`."""
    return run_job(iter_write_ome_zarr(path, levels, **kwargs))


def create_ome_zarr_base(
    location: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    fill_value: Any = 0,
) -> tuple[Any, Any]:
    """Create an OME-Zarr group at ``location`` with an empty full-resolution array ``"0"``.

    For writers that fill level 0 themselves (the sliding window writing tiles): returns
    ``(group, level0_array)``; :func:`iter_finish_ome_zarr` then adds the pyramid and the metadata.
    """
    raise NotImplementedError


def iter_finish_ome_zarr(
    group: Any,
    *,
    spatial: Spatial | None = None,
    downsample: Downsample = "mean",
    name: str | None = None,
) -> Iterator[Progress]:
    """Job: compute the coarser levels of a group from its filled level ``"0"`` and write the validated
    multiscales metadata (NGFF 0.4 on a zarr v2 group, 0.5 on v3)."""
    raise NotImplementedError


__all__ = [
    "create_ome_zarr_base",
    "iter_finish_ome_zarr",
    "iter_write_ome_zarr",
    "iter_write_volume",
    "write_ome_zarr",
    "write_volume",
]
