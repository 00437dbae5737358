"""Where a full-scroll run reads: locations (local paths or fsspec URLs) and the input array.

Locations are local paths or fsspec URLs (``file://``, ``memory://``, ``http(s)://``, ``s3://`` ...;
whatever zarr opens). The input is a zarr array, a single-array group or an OME-Zarr pyramid (its full
resolution; the singleton t / c axes of a 5D OME-Zarr squeezed, see :mod:`..volume.ngff`). A remote input
is read through :mod:`..volume.remote`'s retrying, caching store, by the client and the workers alike.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import Index3, Region
from napari_vesuvius.core.volume.base import TIFF_SUFFIXES, VolumeWarning, require_3d
from napari_vesuvius.core.volume.remote import RemoteOptions
from napari_vesuvius.core.volume.remote import is_url as remote_url
from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial

from .record import require_complete


# ---------------------------------------------------------------------------------------- locations
def is_url(location: str | Path) -> bool:
    """A location naming a scheme: a remote URL (:func:`.volume.remote.is_url`, the one definition) or a
    ``file://`` URL, which block-wise runs accept and :func:`normalize_location` turns into a path."""
    return remote_url(location) or str(location).lower().startswith("file://")


def normalize_location(location: str | Path) -> str:
    """An absolute local path (``file://`` URLs included) or the URL without a trailing slash."""
    text = str(location)
    if text.lower().startswith("file://"):
        text = text[len("file://") :]
    elif remote_url(text):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def join(location: str, path: str) -> str:
    return f"{location.rstrip('/')}/{path}" if path else location


def filesystem(location: str) -> tuple[Any, str]:
    """The fsspec filesystem of a location and the location's path in it."""
    import fsspec

    return fsspec.core.url_to_fs(location)


def exists(location: str) -> bool:
    fs, root = filesystem(location)
    return bool(fs.exists(root))


def is_zarr(location: str) -> bool:
    fs, root = filesystem(location)
    return any(fs.exists(f"{root}/{name}") for name in ("zarr.json", ".zgroup", ".zarray"))


def remove(location: str) -> None:
    fs, root = filesystem(location)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def open_array(location: str, mode: str = "r") -> Any:
    """A zarr array (v2 or v3) at ``location``; errors name the location."""
    import zarr

    try:
        return zarr.open_array(store=location, mode=mode)
    except Exception as error:
        raise VolumeError(
            location, f"cannot open the zarr array ({type(error).__name__}: {error})"
        ) from error


def may_hold_data(array: Any, fs: Any, root: str, region: Region) -> bool:
    """False only if no chunk overlapping ``region`` is stored and missing chunks read as 0 (air).

    Lets an all-air block be skipped without materialising its voxels (a 512³ read of missing chunks
    still fills 128 MB); one ``exists`` per chunk (or shard). ``fs`` None asks the array's own store
    (a remote input's retrying store: fsspec's HTTP ``exists`` reports a 429 as "absent", which would
    make a block of data look like air).
    """
    squeeze = getattr(array, "squeeze", ())  # an OME-Zarr input with singleton t / c (ngff.SqueezedSource)
    array = getattr(array, "source", array)
    fill = array.metadata.fill_value
    if fill is None or np.asarray(fill).item() != 0:
        return True
    full_region = list(region)
    for axis in squeeze:
        full_region.insert(axis, slice(0, 1))
    grid = array.shards or array.chunks
    ranges = [range(r.start // g, -(-r.stop // g)) for r, g in zip(full_region, grid, strict=True)]
    keys = (array.metadata.encode_chunk_key(coords) for coords in itertools.product(*ranges))
    if fs is None:
        from zarr.core.sync import sync

        prefix = f"{array.store_path.path}/" if array.store_path.path else ""
        return any(sync(array.store.exists(prefix + key)) for key in keys)
    return any(fs.exists(f"{root}/{key}") for key in keys)


# -------------------------------------------------------------------------------------------- input
@dataclass(frozen=True)
class InputInfo:
    """Where the full-resolution input array lives and what it holds."""

    location: str
    array_path: str
    shape: Index3
    dtype: str
    chunks: Index3
    #: retries and chunk cache of a remote input (None: defaults); the workers read with the same
    remote: RemoteOptions | None = None
    #: stored axes dropped on read: the singleton t / c of a 5D OME-Zarr (see ngff.read_ngff_image)
    squeeze: tuple[int, ...] = ()
    #: the physical placement of the full resolution (NGFF transformations or plain-zarr attributes, as
    #: every reader interprets them), carried into the output
    spatial: Spatial = field(default_factory=Spatial)

    @property
    def array_location(self) -> str:
        return join(self.location, self.array_path)

    def open_array(self) -> Any:
        """The full-resolution input as a (z, y, x) array, read through the retrying store when remote."""
        return squeezed(open_input_array(self.array_location, self.remote), self.squeeze)


def squeezed(array: Any, squeeze: Sequence[int]) -> Any:
    """``array`` read without its singleton axes ``squeeze`` (itself when there are none)."""
    if not squeeze:
        return array
    from napari_vesuvius.core.volume.ngff import SqueezedSource

    return SqueezedSource(array, squeeze)


def open_input_array(location: str, remote: RemoteOptions | None = None) -> Any:
    """The input zarr array at ``location`` for reading: a URL through :mod:`.volume.remote`'s retrying,
    caching store (``remote``: its options), a path as :func:`open_array` opens it."""
    if not remote_url(location):
        return open_array(location, "r")
    import zarr

    from napari_vesuvius.core.volume.remote import open_remote_store

    store = open_remote_store(location, remote)
    try:
        return zarr.open_array(store=store, mode="r")
    except VolumeError:
        raise
    except Exception as error:
        raise VolumeError(
            location, f"cannot open the zarr array ({type(error).__name__}: {error})"
        ) from error


def open_input(location: str | Path, remote: RemoteOptions | None = None) -> tuple[InputInfo, Any]:
    """Open a zarr / OME-Zarr input (full resolution) without reading voxels; a URL through the
    retrying, caching store of :mod:`.volume.remote` (``remote``: its options)."""
    import zarr

    from napari_vesuvius.core.volume.io import ngff_multiscales, plain_zarr_spatial
    from napari_vesuvius.core.volume.ngff import open_image
    from napari_vesuvius.core.volume.remote import open_remote_store

    where = normalize_location(location)
    if not is_url(where) and not Path(where).exists():
        raise VolumeError(where, "input not found")
    if not is_url(where) and Path(where).suffix.lower() in TIFF_SUFFIXES:
        raise VolumeError(where, "block-wise runs read zarr or OME-Zarr inputs; save the TIFF as .zarr first")
    try:
        node = zarr.open(store=open_remote_store(where, remote) if is_url(where) else where, mode="r")
    except VolumeError:  # a remote read that failed for good (names the URL)
        raise
    except Exception as error:
        raise VolumeError(where, f"not a readable zarr array or OME-Zarr group ({error})") from error
    require_complete(node.attrs, where)  # the output of an interrupted run is no input
    path, squeeze, array = "", (), node
    if isinstance(node, zarr.Array):
        spatial = plain_zarr_spatial(node.attrs, where)[0]
    elif ngff_multiscales(dict(node.attrs)):
        image, arrays = open_image(node, where)  # refuses channels / time points
        path, squeeze, spatial = image.paths[0], image.squeeze, image.spatials[0]
        array = arrays[path]
        if image.squeeze_note is not None:
            warnings.warn(VolumeWarning(f"{where}: {image.squeeze_note}"), stacklevel=2)
    else:
        names = list(node.array_keys())
        if len(names) != 1:
            raise VolumeError(where, f"zarr group is not OME-Zarr and holds {len(names)} arrays")
        path = names[0]
        array = node[path]
        spatial = plain_zarr_spatial(array.attrs if SPATIAL_ATTR in array.attrs else node.attrs, where)[0]
    array = squeezed(array, squeeze)
    require_3d(array.shape, Path(where))
    shape = tuple(int(n) for n in array.shape)
    chunks = tuple(int(n) for n in array.chunks)
    info = InputInfo(
        where,
        path,
        (shape[0], shape[1], shape[2]),
        str(array.dtype),
        (chunks[0], chunks[1], chunks[2]),
        remote if is_url(where) else None,
        tuple(squeeze),
        spatial,
    )
    return info, array
