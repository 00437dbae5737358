"""Opening multi-page 3D TIFFs lazily: header checks at open time, whole pages decoded on demand.

Fast path (challenge volumes: one uniform grayscale page per z-slice): only the first page is parsed in
full, the IFD chain is walked once to count pages, and the last page is checked against the file size.
Pages are resolved to :class:`tifffile.TiffFrame` (offsets only) when first read, so opening a
1600-page file costs milliseconds and imports neither zarr nor the codecs. Anything else (OME, LSM,
sub-IFDs, colour samples, non-uniform pages) goes through tifffile's series detection and zarr store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VolumeError
from .volume_base import require_3d


class TiffPageStack:
    """Array-like ``(z, y, x)`` view of the uniform pages of an open TiffFile.

    ``stack[z0:z1, ys, xs]`` decodes pages ``z0..z1`` whole (a TIFF strip/tile decoder cannot do less)
    and crops them. Safe to call from several threads: page lookup and file reads share the file
    handle's lock, decoding runs outside it (imagecodecs releases the GIL).
    """

    def __init__(self, tif: Any, count: int) -> None:
        first = tif.pages.first
        self.tif = tif
        self.shape = (int(count), *(int(n) for n in first.shape))
        self.dtype = np.dtype(first.dtype)
        self.ndim = 3
        tif.filehandle.set_lock(True)
        self._lock = tif.filehandle.lock
        with self._lock:
            tif.pages.useframes = True  # later pages load as TiffFrame: offsets only, no full tag parse
            tif.pages.set_keyframe(0)

    def _frame(self, index: int) -> Any:
        with self._lock:
            return self.tif.pages[index]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3 or any(k is Ellipsis or k is None for k in key):
            raise IndexError(f"unsupported index {key!r} for a TIFF page stack")
        z_key, plane_key = key[0], key[1:] + (slice(None),) * (3 - len(key))
        if isinstance(z_key, slice):
            indices = range(*z_key.indices(self.shape[0]))
        else:
            index = int(z_key)
            if not -self.shape[0] <= index < self.shape[0]:
                raise IndexError(f"z index {index} out of range for {self.shape[0]} slices")
            indices = range(index % self.shape[0], index % self.shape[0] + 1)
        full_plane = all(isinstance(k, slice) and k == slice(None) for k in plane_key)
        # the crop's shape, from a zero-byte broadcast view of one plane
        crop_shape = np.broadcast_to(np.empty((), bool), self.shape[1:])[plane_key].shape
        out = np.empty((len(indices), *crop_shape), self.dtype)
        for i, z in enumerate(indices):
            plane = self._frame(z).asarray(lock=self._lock)
            out[i] = plane if full_plane else plane[plane_key]
        return out if isinstance(z_key, slice) else out[0]


def _declared_shape(page: Any) -> tuple[int, ...] | None:
    """The shape written into tifffile's JSON ImageDescription, if any."""
    import tifffile

    if not page.is_shaped:
        return None
    try:
        shape = tifffile.shaped_description_metadata(page.shaped_description).get("shape")
    except Exception:
        return None
    return tuple(int(n) for n in shape) if shape else None


def _check_data_within_file(pages: Sequence[Any], size: int, path: Path) -> None:
    for page in pages:
        if page is None:
            raise VolumeError(path, "truncated TIFF: a page of the series is missing")
        offsets, counts = page.dataoffsets, page.databytecounts
        if offsets and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            raise VolumeError(
                path, f"truncated TIFF: page data extends past the end of the file ({size} bytes)"
            )


def _check_declared(declared: tuple[int, ...] | None, shape: tuple[int, ...], pages: int, path: Path) -> None:
    if declared and int(np.prod(declared)) != int(np.prod(shape)):
        raise VolumeError(
            path,
            f"truncated TIFF: its description declares shape {declared} "
            f"but only {pages} page(s) are readable",
        )


def _uniform_page_count(tif: Any) -> int | None:
    """Page count when every page is one grayscale 2D z-slice like the first, else None (slow path)."""
    first = tif.pages.first
    if tif.is_ome or tif.is_lsm or tif.is_stk or first.subifds or len(first.shape) != 2:
        return None
    if len(tif.pages) < 2 or not tif.is_uniform:  # is_uniform compares pages 1, 7 and the last
        return None
    return len(tif.pages)


def _open_series(tif: Any, path: Path, size: int) -> Any:
    """Slow path: tifffile's series detection (parses every page) and its zarr store."""
    import zarr

    series = tif.series[0] if tif.series else None
    if series is None:
        raise VolumeError(path, "TIFF holds no image series")
    if "S" in series.axes:
        raise VolumeError(path, f"TIFF has colour samples (axes {series.axes}); expected grayscale z-slices")
    shape = tuple(int(n) for n in series.shape)
    _check_declared(_declared_shape(tif.pages.first), shape, len(tif.pages), path)
    _check_data_within_file(series.pages, size, path)
    require_3d(shape, path)
    return zarr.open_array(series.aszarr(), mode="r")


def open_tiff_source(path: Path) -> tuple[Any, Any]:
    """Open a 3D TIFF without reading pixel data: ``(array-like source, TiffFile to close)``.

    Raises VolumeError naming ``path`` for a missing, unreadable, non-3D, colour or truncated file.
    """
    import tifffile

    if not path.is_file():
        raise VolumeError(path, "file not found")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as error:
        raise VolumeError(path, f"not a readable TIFF file ({error})") from error
    try:
        size = os.path.getsize(path)
        count = _uniform_page_count(tif)
        if count is None:
            return _open_series(tif, path, size), tif
        first = tif.pages.first
        shape = (count, *(int(n) for n in first.shape))
        _check_declared(_declared_shape(first), shape, count, path)
        _check_data_within_file([first, tif.pages[count - 1]], size, path)
        require_3d(shape, path)
        return TiffPageStack(tif, count), tif
    except VolumeError:
        tif.close()
        raise
    except Exception as error:
        tif.close()
        raise VolumeError(path, f"cannot open TIFF ({type(error).__name__}: {error})") from error
