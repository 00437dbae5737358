"""Lazy reading, validation and description of 3D volumes (TIFF, zarr, OME-Zarr).

Qt-free and napari-free. Volumes open as dask arrays without reading pixel data: TIFFs page by page
(chunks grouping several whole z-slices, see :mod:`.tiff`), zarr arrays and OME-Zarr pyramids
through zarr. Every read goes through :class:`GuardedSource`, so a corrupt or truncated file surfaces
as :class:`~napari_vesuvius.core.errors.VolumeError` naming the file, also at compute time.
:func:`volume_from_zarr_node` is the one interpretation of a zarr node, local or remote: OME-Zarr
metadata (NGFF 0.1–0.5) is read by :mod:`.ngff` into each level's :class:`~.spatial.Spatial` placement;
singleton t / c axes are squeezed on read (:class:`~.ngff.SqueezedSource`, with a
:class:`~.base.VolumeWarning` and a line in :attr:`LazyVolume.notes`), real channels or time points
refused; a plain zarr array's placement comes from its :data:`~.spatial.SPATIAL_ATTR` attribute.
Writing lives in :mod:`.write`; its public names are re-exported here, so
``from napari_vesuvius.core.volume.io import write_volume`` keeps working.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.labels import VALID_LABEL_VALUES
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.value_checks import add_counts, block_counts, label_values_problem
from napari_vesuvius.core.volume.base import (
    TIFF_CHUNK_BYTES,
    TIFF_SUFFIXES,
    ZARR_CHUNK_BYTES,
    VolumeWarning,
    cubic_chunks,
    require_3d,
    slab_chunks,
)
from napari_vesuvius.core.volume.ngff import SqueezedSource, multiscales_list, open_image
from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial
from napari_vesuvius.core.volume.tiff import open_tiff_source
from napari_vesuvius.core.volume.write import (
    iter_write_ome_zarr,
    iter_write_volume,
    write_ome_zarr,
    write_volume,
)

if TYPE_CHECKING:
    import dask.array as da  # imported where used: reading a TIFF for scoring needs no dask

VolumeKind = Literal["tiff", "tiff-folder", "zarr", "ome-zarr"]


@dataclass
class LazyVolume:
    """A lazily opened volume: one dask array per resolution level, full resolution first.

    ``path`` is the local path, or the URL (a ``str``) of a remote volume. ``spatial`` is the physical
    placement of ``levels[0]``; ``level_spatials`` that of every level when the file declares them (else
    derived from the shapes, see :meth:`level_spatial`). ``notes`` lists adjustments made while reading
    (axes squeezed...), also emitted as :class:`~.base.VolumeWarning`. ``remote`` holds the retry and
    cache counters of a remote volume (:class:`~.remote.RemoteStats`), else None.
    """

    path: Path | str
    levels: list[da.Array]
    kind: VolumeKind
    _closers: list[Any] = field(default_factory=list, repr=False)
    spatial: Spatial = field(default_factory=Spatial)
    level_spatials: list[Spatial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remote: Any = None

    @property
    def data(self) -> da.Array:
        return self.levels[0]

    @property
    def location(self) -> str:
        """The path or URL as text (messages, layer metadata)."""
        return str(self.path)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return self.data.chunks

    @property
    def multiscale(self) -> bool:
        return len(self.levels) > 1

    def level_spatial(self, level: int) -> Spatial:
        """The placement of ``levels[level]``: as declared, else level 0's scaled by the shape ratio."""
        if len(self.level_spatials) == len(self.levels):
            return self.level_spatials[level]
        factors = [b / n for b, n in zip(self.levels[0].shape, self.levels[level].shape, strict=True)]
        return self.spatial if level == 0 else self.spatial.downsampled(factors)

    def from_level(self, level: int) -> LazyVolume:
        """This volume starting at pyramid level ``level`` (browsing a coarse level of a large scroll).

        The result shares the file handles (close either one). VolumeError when the level does not exist.
        """
        if level == 0:
            return self
        if not 0 <= level < len(self.levels):
            raise VolumeError(
                self.path, f"pyramid level {level} does not exist (levels 0 to {len(self.levels) - 1})"
            )
        spatials = [self.level_spatial(i) for i in range(len(self.levels))]
        return LazyVolume(
            self.path,
            self.levels[level:],
            self.kind,
            self._closers,
            spatials[level],
            spatials[level:],
            [*self.notes, f"opened at pyramid level {level} of {len(self.levels)}"],
            self.remote,
        )

    def close(self) -> None:
        """Release open file handles (the dask arrays become unreadable)."""
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer.close()
        self._closers.clear()

    def __enter__(self) -> LazyVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GuardedSource:
    """Array-like wrapper whose reads turn any decoding/IO failure into a VolumeError naming the file."""

    def __init__(self, source: Any, path: Path | str) -> None:
        self.source = source
        self.path = path
        self.shape = tuple(int(n) for n in source.shape)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.source[key])
        except VolumeError:
            raise
        except Exception as error:  # tifffile/zarr/codec errors vary widely; name the file instead
            raise VolumeError(
                self.path, f"cannot read voxel data ({type(error).__name__}: {error})"
            ) from error


#: dask array name -> its file source, so small samples can bypass dask's whole-chunk reads.
_SOURCES: weakref.WeakValueDictionary[str, GuardedSource] = weakref.WeakValueDictionary()


def _is_dask(array: Any) -> bool:
    """True for a dask array (without importing dask: an array cannot be one before dask is imported)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(array, dask_array.Array)


def source_path(array: Any) -> Path | None:
    """The file an array was opened from by this module (its dask array or guarded source), else None."""
    if _is_dask(array):
        source = _SOURCES.get(array.name)
        return source.path if source is not None else None
    path = getattr(array, "path", None) if isinstance(array, GuardedSource) else None
    return path


def _as_dask(source: Any, path: Path | str, chunks: Sequence[int]) -> da.Array:
    import dask.array as da

    guarded = GuardedSource(source, path)
    meta = np.empty((0,) * guarded.ndim, dtype=guarded.dtype)
    array = da.from_array(guarded, chunks=tuple(chunks), asarray=False, lock=False, fancy=False, meta=meta)
    _SOURCES[array.name] = guarded
    return array


# --------------------------------------------------------------------------------------------- reading
def _open_tiff(path: Path) -> LazyVolume:
    """A page-per-slice TIFF as one dask array whose chunks group several whole z-slices; its physical
    placement from the first page's header (:mod:`.tiff_spatial`)."""
    from napari_vesuvius.core.volume.tiff_spatial import read_tiff_spatial

    source, tif = open_tiff_source(path)
    spatial, notes = read_tiff_spatial(tif, path)
    dask_array = _as_dask(source, path, slab_chunks(source.shape, np.dtype(source.dtype).itemsize))
    return LazyVolume(path, [dask_array], "tiff", [tif], spatial=spatial, notes=notes)


def ngff_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The ``multiscales`` list of OME-Zarr group attributes (0.4 or 0.5 ``ome``), else None."""
    return multiscales_list(attrs)


def _open_zarr(path: Path, allow_incomplete: bool = False) -> LazyVolume:
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as error:
        raise VolumeError(
            path, f"not a readable zarr array or group ({type(error).__name__}: {error})"
        ) from error
    return volume_from_zarr_node(node, path, allow_incomplete=allow_incomplete)


def volume_from_zarr_node(node: Any, path: Path | str, *, allow_incomplete: bool = False) -> LazyVolume:
    """A LazyVolume of an opened zarr array or group (local or remote store); errors name ``path``.

    The one interpretation of a zarr node: a 3D array (placement from its ``SPATIAL_ATTR`` attribute),
    an OME-Zarr group (its pyramid, placement per level from the NGFF metadata, singleton t / c axes
    squeezed with a :class:`~.base.VolumeWarning`) or a group holding exactly one 3D array.
    """
    import zarr

    if not allow_incomplete:  # an interrupted block-wise output would read as if complete
        from napari_vesuvius.core.scroll.record import require_complete

        require_complete(node.attrs, path)
    if isinstance(node, zarr.Array):
        require_3d(node.shape, path)
        spatial, notes = plain_zarr_spatial(node.attrs, path)
        return LazyVolume(path, [_as_dask(node, path, node.chunks)], "zarr", spatial=spatial, notes=notes)
    attrs = dict(node.attrs)
    if ngff_multiscales(attrs):
        return _open_ome_zarr(node, path)
    arrays = list(node.array_keys())
    if len(arrays) == 1 and not list(node.group_keys()):
        array = node[arrays[0]]
        require_3d(array.shape, path)
        spatial, notes = plain_zarr_spatial(array.attrs if SPATIAL_ATTR in array.attrs else attrs, path)
        return LazyVolume(path, [_as_dask(array, path, array.chunks)], "zarr", spatial=spatial, notes=notes)
    raise VolumeError(
        path, f"zarr group is not OME-Zarr and holds {len(arrays)} arrays; expected exactly one"
    )


def plain_zarr_spatial(attrs: Any, path: Path | str) -> tuple[Spatial, list[str]]:
    """A plain zarr's placement from its ``SPATIAL_ATTR`` attribute; malformed -> warning and default."""
    record = attrs.get(SPATIAL_ATTR)
    if record is None:
        return Spatial(), []
    try:
        if not isinstance(record, dict):
            raise ValueError(f"expected a mapping, got {record!r}")
        return Spatial.from_dict(record, source="zarr-attrs"), []
    except (ValueError, TypeError) as error:
        note = f"ignored a malformed {SPATIAL_ATTR!r} attribute ({error}): voxel size 1, origin 0"
        warnings.warn(VolumeWarning(f"{path}: {note}"), stacklevel=4)
        return Spatial(), [note]


def _open_ome_zarr(node: Any, path: Path | str) -> LazyVolume:
    """An OME-Zarr image group as a (z, y, x) pyramid with each level's placement (:mod:`.ngff`)."""
    image, arrays = open_image(node, path)
    levels = []
    for key in image.paths:
        array = arrays[key]
        source = SqueezedSource(array, image.squeeze) if image.squeeze else array
        where = f"{path}/{key}"
        require_3d(source.shape, where)  # type: ignore[arg-type]
        levels.append(_as_dask(source, where, source.chunks))
    notes = list(image.notes)
    if image.squeeze_note is not None:
        warnings.warn(VolumeWarning(f"{path}: {image.squeeze_note}"), stacklevel=4)
        notes.insert(0, image.squeeze_note)
    return LazyVolume(
        path, levels, "ome-zarr", spatial=image.spatials[0], level_spatials=list(image.spatials), notes=notes
    )


def is_zarr_path(path: str | Path) -> bool:
    """True for a directory holding zarr v2/v3 metadata (array or group)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (".zarray", ".zgroup", "zarr.json"))


def is_volume_zarr(path: str | Path) -> bool:
    """True for a zarr folder :func:`open_volume` opens: a 3D array, an OME-Zarr group, or a group holding
    exactly one 3D array. Reads only the zarr metadata (cheap enough for a reader's ``get_reader`` test)."""
    if not is_zarr_path(path):
        return False
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
        if isinstance(node, zarr.Array):
            return len(node.shape) == 3
        attrs = dict(node.attrs)
        if ngff_multiscales(attrs):
            open_image(node, path)  # refuses channels / time points
            return True
        arrays = list(node.array_keys())
        return len(arrays) == 1 and not list(node.group_keys()) and len(node[arrays[0]].shape) == 3
    except Exception:  # unreadable metadata: not a volume this package opens
        return False


def volume_id(path: str | Path) -> str:
    """A volume's id: its file name without ``.tif``/``.tiff``/``.zarr``, then without ``.ome``.

    ``1234.tif``, ``1234.zarr``, ``1234.ome.zarr`` and ``1234.ome.tif`` all give ``1234``; the one rule
    for layer names, sweep and score pairing, so a prediction pairs with its label whatever its format.
    """
    name = Path(path).name
    for suffix in (*TIFF_SUFFIXES, ".zarr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name.lower().endswith(".ome"):
        name = name[: -len(".ome")]
    return name or Path(path).name


def open_volume(
    path: str | Path, *, allow_incomplete: bool = False, level: int = 0, remote: Any = None
) -> LazyVolume:
    """Open a volume lazily: a .tif/.tiff file, a folder of 2D TIFF slices, a zarr array, a single-array
    zarr group or an OME-Zarr pyramid, local or at an ``http(s)://`` / ``s3://`` URL.

    ``level`` opens a pyramid from that level on (coarse browsing, :meth:`LazyVolume.from_level`).
    ``remote`` (:class:`~.remote.RemoteOptions`) sets retries and the chunk cache of a URL; default
    options when None. A block-wise output whose run was interrupted is refused (VolumeError with the
    resume hint, see :func:`.scroll.record.require_complete`) unless ``allow_incomplete`` (e.g. ``info``
    describing it).
    """
    from napari_vesuvius.core.volume.remote import is_url, open_remote_volume

    if is_url(path):
        volume = open_remote_volume(str(path), options=remote, allow_incomplete=allow_incomplete)
        return volume.from_level(level)
    path = Path(path)
    if not path.exists():
        raise VolumeError(path, "file not found")
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        volume = _open_tiff(path)
    elif is_zarr_path(path):
        volume = _open_zarr(path, allow_incomplete)
    elif path.is_dir():
        from napari_vesuvius.core.volume.tiff_folder import is_slice_folder, open_tiff_folder

        if not is_slice_folder(path):
            raise VolumeError(
                path, "directory is not a zarr array, an OME-Zarr group or a folder of 2D TIFF slices"
            )
        volume = open_tiff_folder(path)
    else:
        raise VolumeError(
            path,
            f"unsupported file type {path.suffix!r}; expected .tif, .tiff, a zarr / OME-Zarr directory "
            "or a folder of 2D TIFF slices",
        )
    try:
        return volume.from_level(level)
    except VolumeError:
        volume.close()
        raise


class ChunkedSource(GuardedSource):
    """A :class:`GuardedSource` with the ``chunks`` its dask array would have: block readers
    (:mod:`napari_vesuvius.core.value_checks`) read it in the same blocks, straight from the file."""

    def __init__(self, source: Any, path: Path | str, chunks: Sequence[int]) -> None:
        super().__init__(source, path)
        self.chunks = tuple(int(n) for n in chunks)


@contextlib.contextmanager
def open_array(path: str | Path) -> Iterator[Any]:
    """A volume's full-resolution voxels as an array-like (``array[region]`` gives numpy, read errors
    name the file), closed on exit: for jobs that read their own blocks (score).

    A local TIFF is read through its page stack without building a dask array (importing dask is most
    of a short command's start-up), placement tags checked as :func:`open_volume` does; any other
    volume is :func:`open_volume`'s dask array.
    """
    from napari_vesuvius.core.volume.remote import is_url

    if not is_url(path) and Path(path).suffix.lower() in TIFF_SUFFIXES and Path(path).is_file():
        from napari_vesuvius.core.volume.tiff_spatial import read_tiff_spatial

        path = Path(path)
        source, tif = open_tiff_source(path)
        try:
            read_tiff_spatial(tif, path)  # the same warnings as open_volume
            yield ChunkedSource(source, path, slab_chunks(source.shape, np.dtype(source.dtype).itemsize))
        finally:
            tif.close()
    else:
        with open_volume(path) as volume:
            yield volume.data


def open_labels(
    path: str | Path, image_shape: Sequence[int] | None = None, *, check_values: bool = False
) -> LazyVolume:
    """Open a label volume, checking its shape against ``image_shape``.

    ``check_values`` also scans the volume chunk-wise for values outside {0, 1, 2} (a full read).
    """
    volume = open_volume(path)
    try:
        if image_shape is not None and tuple(volume.shape) != tuple(int(n) for n in image_shape):
            expected = tuple(int(n) for n in image_shape)
            raise VolumeError(path, f"label shape {volume.shape} does not match image shape {expected}")
        if check_values:
            validate_label_values(volume.data, path)
    except VolumeError:
        volume.close()
        raise
    return volume


# ------------------------------------------------------------------------------------------- analysis
def iter_label_counts(array: Any) -> Iterator[Progress]:
    """Job: count voxels per value chunk by chunk (memory: one chunk at a time); returns {value: count}."""
    import dask.array as da

    array = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    blocks = array.to_delayed().ravel()
    totals: dict[int | float, int] = {}
    for index, block in enumerate(blocks):
        add_counts(totals, block_counts(np.asarray(block.compute(scheduler="threads"))))
        yield Progress(index + 1, len(blocks), "counting values")
    return dict(sorted(totals.items()))


def label_counts(array: Any) -> dict[int | float, int]:
    """Voxel count per value, computed chunk-wise (e.g. ``{0: 900, 1: 60, 2: 40}``)."""
    return run_job(iter_label_counts(array))


def validate_label_values(array: Any, path: str | Path | None = None) -> dict[int | float, int]:
    """Raise VolumeError if any value is outside {0, 1, 2}; returns the value counts (chunk-wise)."""
    counts = label_counts(array)
    problem = label_values_problem(counts)
    if problem is not None:
        raise VolumeError(path, problem)
    return counts


def central_sample(array: Any, max_pixels: int = 256 * 256) -> np.ndarray:
    """The middle z-slice (its central ``max_pixels`` crop): a cheap, representative sample.

    For arrays opened here the crop is read from the file directly (dask would read whole chunks).
    """
    z, y, x = (int(n) for n in array.shape)
    side = math.isqrt(max_pixels)
    y0, x0 = max(0, (y - side) // 2), max(0, (x - side) // 2)
    region = (z // 2, slice(y0, y0 + side), slice(x0, x0 + side))
    source = _SOURCES.get(getattr(array, "name", None)) if _is_dask(array) else None
    return np.asarray((source if source is not None else array)[region])


def contrast_limits_for(array: Any) -> tuple[float, float]:
    """Display range without a volume scan: dtype range for 8/16-bit, else one central sample."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        return (0.0, 1.0)
    if dtype in (np.uint8, np.uint16):
        return (0.0, float(np.iinfo(dtype).max))
    sample = central_sample(array).astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    low, high = float(sample.min()), float(sample.max())
    return (low, high) if high > low else (low, low + 1.0)


def looks_like_labels(array: Any) -> bool:
    """Content rule: uint8 whose central sample holds only {0, 1, 2} and is not all zero."""
    if np.dtype(array.dtype) != np.uint8:
        return False
    values = set(np.unique(central_sample(array)).tolist())
    return values <= VALID_LABEL_VALUES and values != {0}


LABEL_NAME_WORDS = ("label", "mask")


def is_label_name(path: str | Path) -> bool:
    """Name rule: the file/folder name contains "label" or "mask", or its parent folder contains "labels"."""
    path = Path(path)
    name = path.name.lower()
    return any(word in name for word in LABEL_NAME_WORDS) or "labels" in path.parent.name.lower()


def is_label_volume(path: str | Path, array: Any) -> bool:
    """Is this a label/mask volume? The name rule (:func:`is_label_name`) or the content rule
    (:func:`looks_like_labels`: uint8 with a central slice holding only {0, 1, 2}, not all zero)."""
    return is_label_name(path) or looks_like_labels(array)


def describe(volume: LazyVolume) -> dict[str, Any]:
    """A JSON-ready summary: path, kind, shape, dtype, chunks, physical placement, the levels of a
    pyramid (each with its own placement), adjustments made while reading and remote counters."""
    summary: dict[str, Any] = {
        "path": volume.location,
        "kind": volume.kind,
        "shape": list(volume.shape),
        "dtype": str(volume.dtype),
        "chunks": [int(c[0]) for c in volume.chunks],
        "spatial": {**volume.spatial.to_dict(), "source": volume.spatial.source},
        "levels": [
            {
                "shape": [int(n) for n in level.shape],
                "chunks": [int(c[0]) for c in level.chunks],
                "scale": list(volume.level_spatial(index).scale),
                "translation": list(volume.level_spatial(index).translation),
            }
            for index, level in enumerate(volume.levels)
        ],
    }
    if volume.notes:
        summary["notes"] = list(volume.notes)
    if volume.remote is not None:
        summary["remote"] = volume.remote.to_dict()
    return summary


__all__ = [
    "TIFF_CHUNK_BYTES",
    "TIFF_SUFFIXES",
    "ZARR_CHUNK_BYTES",
    "LazyVolume",
    "central_sample",
    "contrast_limits_for",
    "cubic_chunks",
    "describe",
    "is_label_name",
    "is_label_volume",
    "is_volume_zarr",
    "is_zarr_path",
    "iter_label_counts",
    "iter_write_ome_zarr",
    "iter_write_volume",
    "label_counts",
    "looks_like_labels",
    "open_labels",
    "open_volume",
    "require_3d",
    "slab_chunks",
    "source_path",
    "validate_label_values",
    "volume_from_zarr_node",
    "volume_id",
    "write_ome_zarr",
    "write_volume",
]
