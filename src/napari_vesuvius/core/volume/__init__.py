"""Volume I/O: lazy reading, validation and atomic writing of 3D TIFF, zarr and OME-Zarr volumes.

* :mod:`.io`: open volumes lazily as dask arrays (:func:`open_volume`, :func:`open_labels`), describe
  and validate them, label counts, the volume id of a path, the napari-facing helpers (contrast limits,
  label detection). Every read goes through :class:`GuardedSource` (errors name the file).
* :mod:`.tiff`: the fast lazy TIFF page stack (first-page header + page count) and its layout checks.
* :mod:`.write`: atomic TIFF / zarr / OME-Zarr writers (temporary sibling, then rename).
* :mod:`.base`: shared constants, chunking rules, :class:`VolumeWarning` and :func:`require_3d`.

Other packages import from here (or from the submodule that owns a name); nothing outside this package
uses a private name of it.
"""

from .base import TIFF_SUFFIXES, VolumeWarning, cubic_chunks, require_3d, slab_chunks
from .io import (
    GuardedSource,
    LazyVolume,
    central_sample,
    contrast_limits_for,
    describe,
    is_label_name,
    is_label_volume,
    is_zarr_path,
    iter_label_counts,
    label_counts,
    looks_like_labels,
    ngff_multiscales,
    open_labels,
    open_volume,
    source_path,
    validate_label_values,
    volume_id,
)
from .write import iter_write_ome_zarr, iter_write_volume, write_ome_zarr, write_volume

__all__ = [
    "TIFF_SUFFIXES",
    "GuardedSource",
    "LazyVolume",
    "VolumeWarning",
    "central_sample",
    "contrast_limits_for",
    "cubic_chunks",
    "describe",
    "is_label_name",
    "is_label_volume",
    "is_zarr_path",
    "iter_label_counts",
    "iter_write_ome_zarr",
    "iter_write_volume",
    "label_counts",
    "looks_like_labels",
    "ngff_multiscales",
    "open_labels",
    "open_volume",
    "require_3d",
    "slab_chunks",
    "source_path",
    "validate_label_values",
    "volume_id",
    "write_ome_zarr",
    "write_volume",
]
