"""Atomic page-per-slice TIFF writing (one page per z-slice, LZW by default), used by :mod:`.write`.

Slabs are computed on the caller's thread and handed to a tifffile writer thread (which encodes pages in
parallel). The physical placement (:class:`~.spatial.Spatial`) is carried into the file's tags
(:func:`~.tiff_spatial.tiff_write_options`: ImageJ hyperstack metadata where the dtype allows it, else
resolution tags and tifffile's JSON description); the default placement writes no such tags. Either way
the file stays one page per z-slice, which :mod:`.tiff` reads back fast.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.volume.base import slab_chunks
from napari_vesuvius.core.volume.spatial import Spatial
from napari_vesuvius.core.volume.tiff_spatial import tiff_write_options

if TYPE_CHECKING:
    import dask.array as da  # imported where used: reading a TIFF for scoring needs no dask


class _AbortWrite(Exception):
    """Sent to the TIFF writer thread when the job is closed or fails before the last page."""


def write_tiff(
    tmp: Path, path: Path, source: da.Array, compression: str | None, spatial: Spatial | None = None
) -> Iterator[Progress]:
    """Compute slabs here and hand them to a tifffile writer thread (which LZW-encodes in parallel)."""
    import tifffile

    slabs: queue.Queue[Any] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    codec = None if compression in (None, "none") else compression
    bigtiff = source.nbytes > 2**31 - 2**25
    file_options, page_options = tiff_write_options(spatial, tuple(source.shape), source.dtype, bigtiff)

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
            with tifffile.TiffWriter(tmp, bigtiff=bigtiff, **file_options) as writer:
                writer.write(
                    pages(),
                    shape=source.shape,
                    dtype=source.dtype,
                    photometric="minisblack",
                    compression=codec,
                    **page_options,
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
