"""Volume I/O: lazy reading, validation and atomic writing of 3D TIFF, zarr and OME-Zarr volumes, local
or remote, with their physical placement.

* :mod:`.io`: open volumes lazily as dask arrays (:func:`open_volume`, :func:`open_labels`; a path, a
  z-slice folder or a URL, at a chosen pyramid level), describe and validate them, label counts, the
  volume id of a path, the napari-facing helpers (contrast limits, label detection). Every read goes
  through :class:`GuardedSource` (errors name the file).
* :mod:`.spatial`: :class:`Spatial`, the voxel size, origin and unit every reader fills and every writer
  carries (napari layer ``scale`` / ``translate`` / ``units``).
* :mod:`.ngff`: OME-Zarr metadata (NGFF 0.4 / 0.5) read leniently and built / validated with
  ome-zarr-models; singleton t / c axes squeezed.
* :mod:`.tiff`, :mod:`.tiff_spatial`, :mod:`.tiff_folder`: the fast lazy TIFF page stack, TIFF placement
  tags (ImageJ, resolution, OME-TIFF), folders of 2D TIFF slices.
* :mod:`.remote`: URLs (HTTP(S), S3): the retrying, caching read-only store and its counters.
* :mod:`.write` (dispatch) with :mod:`.tiff_write`, :mod:`.zarr_write`, :mod:`.ome_zarr_write`: atomic
  writers (temporary sibling, then rename); plain zarr in format 2 by default, ``.ome.zarr`` always a
  validated OME-Zarr pyramid.
* :mod:`.base`: shared constants (zarr formats, suffixes), chunking rules, :class:`VolumeWarning` and
  :func:`require_3d`.

Other packages import from here (or from the submodule that owns a name); nothing outside this package
uses a private name of it.
"""

from .base import (
    DEFAULT_ZARR_FORMAT,
    TIFF_SUFFIXES,
    ZARR_FORMATS,
    VolumeWarning,
    cubic_chunks,
    require_3d,
    slab_chunks,
)
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
from .remote import RemoteOptions, RetryPolicy, is_url
from .spatial import Spatial
from .write import iter_write_ome_zarr, iter_write_volume, write_ome_zarr, write_volume

__all__ = [
    "DEFAULT_ZARR_FORMAT",
    "TIFF_SUFFIXES",
    "ZARR_FORMATS",
    "GuardedSource",
    "LazyVolume",
    "RemoteOptions",
    "RetryPolicy",
    "Spatial",
    "VolumeWarning",
    "central_sample",
    "contrast_limits_for",
    "cubic_chunks",
    "describe",
    "is_label_name",
    "is_label_volume",
    "is_url",
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
