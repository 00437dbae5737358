"""npe2 single-layer writers for Labels layers: LZW TIFF (one page per z-slice) and zarr.

Both go through the atomic core writers, which compute dask/zarr-backed data slab by slab, so a label
volume larger than memory can be saved. Integer labels whose values fit in 0..255 are stored as uint8
(the challenge format); checking that costs one chunk-wise min/max pass for wider dtypes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume_io import write_volume


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


def _write(path: str, data: Any, suffixes: tuple[str, ...], default: str) -> list[str]:
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        target = target.with_name(target.name + default)
    write_volume(target, _as_label_array(data, target))
    return [str(target)]


def write_labels_tif(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as an LZW TIFF atomically; returns the written path."""
    return _write(path, data, (".tif", ".tiff"), ".tif")


def write_labels_zarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as a zarr array atomically; returns the written path."""
    return _write(path, data, (".zarr",), ".zarr")
