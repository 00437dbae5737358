"""npe2 single-layer writers for Labels layers: LZW TIFF (one page per z-slice), zarr and OME-Zarr.

All go through the atomic core writers, which compute dask/zarr-backed data slab by slab, so a label
volume larger than memory can be saved. Integer labels whose values fit in 0..255 are stored as uint8
(the challenge format); checking that costs one chunk-wise min/max pass for wider dtypes. A ``.zarr`` is
a plain zarr array (format 2, read by zarr-python 2.x), a ``.ome.zarr`` an OME-Zarr 0.4 pyramid made by
taking every second label (never inventing values). The layer's ``scale`` / ``translate`` / ``units``
(npe2 passes them in ``meta``) are carried into the file (TIFF tags, NGFF transformations, zarr attributes).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.array as da
import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.io import write_volume
from napari_vesuvius.core.volume.spatial import Spatial


def _full_resolution(data: Any) -> Any:
    """Level 0 of multiscale layer data (a list-like of arrays), else the data itself."""
    if isinstance(data, list | tuple) or type(data).__name__ == "MultiScaleData":
        return data[0]
    return data


def _as_label_array(data: Any, path: Path) -> Any:
    """Narrow integer/bool label data to uint8 when its values fit, without loading it at once."""
    array = _full_resolution(data)
    dtype = np.dtype(array.dtype)
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8)
    if dtype.kind not in "iu":
        raise VolumeError(path, f"label data must be integers, got dtype {dtype}")
    if isinstance(array, da.Array):
        lazy = array
    else:
        lazy = da.from_array(array, chunks=getattr(array, "chunks", "auto"))
    low, high = da.compute(lazy.min(), lazy.max())
    return lazy.astype(np.uint8) if int(low) >= 0 and int(high) <= 255 else lazy


def spatial_from_meta(meta: dict[str, Any] | None) -> Spatial | None:
    """The placement of the layer's last three axes from npe2's ``meta`` (None when it has none)."""
    meta = meta or {}
    scale = list(meta.get("scale") or ())
    if len(scale) < 3:
        return None
    translate = list(meta.get("translate") or [0.0] * len(scale))
    layer = SimpleNamespace(scale=scale, translate=translate, units=tuple(meta.get("units") or ()))
    return Spatial.from_layer(layer)


def _write(
    path: str, data: Any, meta: dict[str, Any], suffixes: tuple[str, ...], default: str, **kwargs: Any
) -> list[str]:
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        target = target.with_name(target.name + default)
    labels = _as_label_array(data, target)
    write_volume(target, labels, spatial=spatial_from_meta(meta), downsample="nearest", **kwargs)
    return [str(target)]


def write_labels_tif(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as an LZW TIFF atomically; returns the written path."""
    return _write(path, data, meta, (".tif", ".tiff"), ".tif")


def write_labels_zarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as a zarr array (``.zarr``) or an OME-Zarr pyramid (``.ome.zarr``) atomically,
    in the zarr format of the ``zarr_format`` preference (2 by default); returns the written path."""
    from napari_vesuvius.widgets._preferences import zarr_format

    return _write(path, data, meta, (".zarr",), ".zarr", zarr_format=zarr_format())


def write_submission_tif(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a mask Labels layer as a submission-ready TIFF: uint8 {0, 1}, LZW, one page per z-slice, atomic.

    Non-binary data (floats, or any value other than 0 and 1, e.g. the ignore label 2) is refused with
    a message naming the file, never cast. The check runs chunk-wise, so lazy data stays lazy.
    """
    from napari_vesuvius.core.export import SubmissionError, check_binary

    target = Path(path)
    if target.suffix.lower() not in (".tif", ".tiff"):
        target = target.with_name(target.name + ".tif")
    array = _full_resolution(data)
    if getattr(array, "ndim", 3) != 3:
        raise VolumeError(target, f"a submission mask must be 3D (z, y, x), got shape {array.shape}")
    try:
        check_binary(array, target)
    except SubmissionError as error:
        raise VolumeError(target, error.problem) from error
    if not isinstance(array, np.ndarray | da.Array):
        array = da.from_array(array, chunks=getattr(array, "chunks", "auto"))
    write_volume(target, array.astype(np.uint8), spatial=spatial_from_meta(meta))
    return [str(target)]
