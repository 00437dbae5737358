"""Opening multi-page 3D TIFFs lazily: header checks at open time, whole pages decoded on demand.

Fast path (challenge volumes: one uniform grayscale page per z-slice): only the first page is parsed in
full, the IFD chain is walked once to count pages, and the last page is checked against the file size.
Pages are resolved to :class:`tifffile.TiffFrame` (offsets only) when first read, so opening a
1600-page file costs milliseconds and imports neither zarr nor the codecs. Anything else (OME, LSM,
sub-IFDs, colour samples, non-uniform pages) goes through tifffile's series detection and zarr store.

Page layout: the pages must form one z-stack. What the file declares about its pages is read from the
first page only (tifffile's JSON shape, ImageJ ``channels``/``slices``/``frames``; OME files take the
series path, whose shape tifffile reads from the OME-XML): a 4D+ layout (several channels, time
points, ``(2, 32, 32, 32)``) is refused with a VolumeError naming the file and the real shape, instead
of being flattened into z. Axes of length 1 that the file declares explicitly (a tifffile shape such
as ``(1, 64, 32, 32)``) are dropped with a :class:`~.base.VolumeWarning`; the implicit
singleton axes of ImageJ and OME metadata are dropped silently, as tifffile does.

The physical placement (voxel size, origin, unit) is read from the same first-page header by
:mod:`.tiff_spatial`; folders of 2D slices are :mod:`.tiff_folder`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.base import VolumeWarning, require_3d, stack_key


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
        indices, plane_key, z_slice = stack_key(key, self.shape, "TIFF page stack")
        full_plane = all(isinstance(k, slice) and k == slice(None) for k in plane_key)
        # the crop's shape, from a zero-byte broadcast view of one plane
        crop_shape = np.broadcast_to(np.empty((), bool), self.shape[1:])[plane_key].shape
        out = np.empty((len(indices), *crop_shape), self.dtype)
        for i, z in enumerate(indices):
            plane = self._frame(z).asarray(lock=self._lock)
            out[i] = plane if full_plane else plane[plane_key]
        return out if z_slice else out[0]


def _declared_shaped(page: Any) -> tuple[tuple[int, ...], str] | None:
    """Shape and axes written into tifffile's JSON ImageDescription, if any (axes ``Q`` when unnamed)."""
    from tifffile.tifffile import shaped_description_metadata  # not exported at the top level

    if not page.is_shaped:
        return None
    try:
        meta = shaped_description_metadata(page.shaped_description)
        shape = tuple(int(n) for n in meta.get("shape") or ())
    except Exception:
        return None
    if not shape:
        return None
    axes = meta.get("axes")
    if not isinstance(axes, str) or len(axes) != len(shape):
        axes = "Q" * len(shape)
    return shape, axes.upper()


def _declared_imagej(tif: Any) -> tuple[tuple[int, ...], str] | None:
    """``(frames, slices, channels, *plane)`` from the ImageJ description of the first page, if any."""
    if not tif.is_imagej:
        return None
    try:
        meta = tif.imagej_metadata or {}
        counts = [int(meta.get(key, 1)) for key in ("frames", "slices", "channels")]
        images = int(meta.get("images", 1))
    except Exception:
        return None
    if counts == [1, 1, 1] and images > 1:  # a plain (non-hyperstack) ImageJ stack
        counts = [1, images, 1]
    return (*counts, *(int(n) for n in tif.pages.first.shape)), "TZCYX"


def _declared_layout(tif: Any) -> tuple[tuple[int, ...], str, bool] | None:
    """What the first page says the pages form: ``(shape, axes, explicit)``; ``explicit`` when the
    file itself lists every axis (tifffile JSON), so that dropping its singleton axes is worth a word."""
    imagej = _declared_imagej(tif)
    if imagej is not None:
        return (*imagej, False)
    shaped = _declared_shaped(tif.pages.first)
    return (*shaped, True) if shaped is not None else None


def _squeezed(shape: Sequence[int], axes: str) -> tuple[tuple[int, ...], str]:
    kept = [(int(n), a) for n, a in zip(shape, axes, strict=True) if int(n) != 1]
    return tuple(n for n, _ in kept), "".join(a for _, a in kept)


def _check_layout(
    declared: tuple[tuple[int, ...], str, bool] | None, shape: tuple[int, ...], pages: int, path: Path
) -> None:
    """Refuse a declared layout that is not the ``shape`` z-stack (4D+ or truncated); warn when
    explicit singleton axes are dropped."""
    if declared is None:
        return
    dims, axes, explicit = declared
    total, readable = int(np.prod(dims)), int(np.prod(shape))
    if total != readable:
        what = "truncated TIFF: its" if total > readable else "TIFF"
        raise VolumeError(
            path,
            f"{what} description declares shape {dims} ({total} voxels) but {pages} page(s) of "
            f"{shape[1:]} hold {readable}",
        )
    core, core_axes = _squeezed(dims, axes)
    if core != _squeezed(shape, "ZYX")[0]:
        raise VolumeError(path, _not_3d(core, core_axes))
    if explicit and len(dims) > 3:
        message = f"{path}: TIFF declares shape {dims}; its axes of length 1 were dropped, read as {shape}"
        warnings.warn(VolumeWarning(message), stacklevel=5)


def _not_3d(shape: tuple[int, ...], axes: str) -> str:
    named = f" (axes {axes})" if axes.strip("Q") else ""
    return (
        f"TIFF holds a {len(shape)}D image of shape {shape}{named}, not one 3D z-stack (z, y, x); "
        "save each channel / time point as its own 3D TIFF"
    )


def _check_data_within_file(pages: Sequence[Any], size: int, path: Path) -> None:
    for page in pages:
        if page is None:
            raise VolumeError(path, "truncated TIFF: a page of the series is missing")
        offsets, counts = page.dataoffsets, page.databytecounts
        if offsets and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            raise VolumeError(
                path, f"truncated TIFF: page data extends past the end of the file ({size} bytes)"
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
    shape = tuple(int(n) for n in series.shape)  # tifffile drops axes of length 1
    if len(shape) > 3:
        raise VolumeError(path, _not_3d(shape, str(series.axes)))
    shaped = _declared_shaped(tif.pages.first)
    if shaped is not None and not tif.is_ome and len(shape) == 3:
        _check_layout((*shaped, True), shape, len(tif.pages), path)
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
        _check_layout(_declared_layout(tif), shape, count, path)
        _check_data_within_file([first, tif.pages[count - 1]], size, path)
        require_3d(shape, path)
        return TiffPageStack(tif, count), tif
    except VolumeError:
        tif.close()
        raise
    except Exception as error:
        tif.close()
        raise VolumeError(path, f"cannot open TIFF ({type(error).__name__}: {error})") from error
