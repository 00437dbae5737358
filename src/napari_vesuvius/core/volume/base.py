"""Shapes and chunk layouts shared by volume reading (:mod:`.io`) and writing (:mod:`.write`).

A module of its own so that both sides import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VesuviusWarning, VolumeError

TIFF_SUFFIXES = (".tif", ".tiff")
#: Name ending of an OME-Zarr output: every writer makes such a path a real OME-Zarr (NGFF) pyramid.
OME_ZARR_SUFFIX = ".ome.zarr"
#: zarr formats a writer can produce. 2 is the default: zarr-python 2.x, the ``vesuvius`` library
#: (``zarr<3``) and the data server's scroll volumes (OME-Zarr 0.4) all use it; 3 is chosen explicitly.
ZARR_FORMATS = (2, 3)
DEFAULT_ZARR_FORMAT = 2
#: The NGFF version written on each zarr format (0.4 is defined on zarr v2, 0.5 on zarr v3).
NGFF_VERSION = {2: "0.4", 3: "0.5"}
#: Target size of one dask chunk of a page-per-slice TIFF (whole z-slices, as many as fit, at least one).
#: napari reads whole chunks (it turns dask fusion off), so this bounds what one z-step decodes: 40
#: pages of a 320² challenge volume, one page of a 1600² slice.
TIFF_CHUNK_BYTES = 4 * 1024**2
#: Target size of one chunk of a zarr written by ``write_volume``: cubic-ish and at least 1 MB, the
#: layout 3D work wants (a 128³ uint8 chunk is 2 MB, the chunk shape of the scroll OME-Zarr pyramids).
#: Viewing one full-resolution z-plane then decodes every chunk the plane crosses (128× the plane's
#: bytes); large volumes are meant to be viewed through a pyramid (``write_ome_zarr``).
ZARR_CHUNK_BYTES = 2 * 1024**2


class VolumeWarning(VesuviusWarning):
    """An input volume was read with a documented adjustment (axes squeezed, intensities converted).

    The message starts with the file, like :class:`~napari_vesuvius.core.errors.VolumeError`; the CLI
    prints it as one ``warning: ...`` line on stderr.
    """


def is_ome_zarr_name(path: str | Path) -> bool:
    """True when a path's name ends in ``.ome.zarr`` (any case): written as OME-Zarr, never plain zarr."""
    return str(path).rstrip("/").lower().endswith(OME_ZARR_SUFFIX)


def check_zarr_format(zarr_format: int, path: str | Path | None = None) -> int:
    """``zarr_format`` as an int if it is 2 or 3; else VolumeError naming ``path``."""
    if zarr_format not in ZARR_FORMATS:
        raise VolumeError(path, f"zarr format must be 2 or 3, got {zarr_format!r}")
    return int(zarr_format)


def require_3d(shape: Sequence[int], path: Path) -> None:
    """Raise VolumeError naming ``path`` unless ``shape`` is a non-empty 3D shape."""
    if len(shape) != 3:
        raise VolumeError(path, f"expected a 3D volume (z, y, x), got shape {tuple(shape)} ({len(shape)}D)")
    if min(shape) <= 0:
        raise VolumeError(path, f"volume is empty, shape {tuple(shape)}")


def stack_key(key: Any, shape: Sequence[int], what: str) -> tuple[range, tuple[Any, ...], bool]:
    """Split an index into a stack of z-planes (a TIFF page stack, a slice folder) into the z-planes to
    read, the in-plane index and whether z was a slice (else the z axis is dropped from the result).

    Supports what dask and napari ask for: ints and slices, at most 3 of them; IndexError otherwise.
    """
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > 3 or any(k is Ellipsis or k is None for k in key):
        raise IndexError(f"unsupported index {key!r} for a {what}")
    z_key, plane_key = key[0], key[1:] + (slice(None),) * (3 - len(key))
    if isinstance(z_key, slice):
        return range(*z_key.indices(int(shape[0]))), plane_key, True
    index, depth = int(z_key), int(shape[0])
    if not -depth <= index < depth:
        raise IndexError(f"z index {index} out of range for {depth} slices")
    return range(index % depth, index % depth + 1), plane_key, False


def slab_chunks(shape: Sequence[int], itemsize: int, target_bytes: int = TIFF_CHUNK_BYTES) -> tuple[int, ...]:
    """Chunks of whole z-slices, as many per chunk as fit in ``target_bytes`` (at least one)."""
    slice_bytes = max(1, int(np.prod(shape[1:])) * itemsize)
    depth = int(min(shape[0], max(1, target_bytes // slice_bytes)))
    return (depth, *(int(n) for n in shape[1:]))


def cubic_chunks(
    shape: Sequence[int], itemsize: int, target_bytes: int = ZARR_CHUNK_BYTES
) -> tuple[int, ...]:
    """Cubic-ish chunks of about ``target_bytes`` (edge a multiple of 16, clipped to the shape)."""
    edge = max(16, round((target_bytes / itemsize) ** (1 / len(shape)) / 16) * 16)
    return tuple(int(min(n, edge)) for n in shape)
