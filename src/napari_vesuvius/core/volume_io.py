"""Lazy reading, validation and atomic writing of 3D volumes (TIFF, zarr, OME-Zarr).

Everything here is Qt-free and napari-free. Volumes open as dask arrays without reading pixel data:
TIFFs through tifffile's zarr store (dask chunks grouping several z-slices), zarr arrays and OME-Zarr
pyramids through zarr. Every read goes through :class:`_GuardedSource`, so a corrupt or truncated file
surfaces as :class:`~napari_vesuvius.core.errors.VolumeError` naming the file, also at compute time.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np

from .errors import VolumeError
from .labels import VALID_LABEL_VALUES
from .progress import Progress, run_job

TIFF_SUFFIXES = (".tif", ".tiff")
#: Target size of one dask chunk of a page-per-slice TIFF (several z-slices per chunk).
TIFF_CHUNK_BYTES = 8 * 1024**2
#: Target size of one chunk of a zarr written by :func:`write_volume` (cubic-ish, at least 1 MB).
ZARR_CHUNK_BYTES = 2 * 1024**2

VolumeKind = Literal["tiff", "zarr", "ome-zarr"]


@dataclass
class LazyVolume:
    """A lazily opened volume: one dask array per resolution level, full resolution first."""

    path: Path
    levels: list[da.Array]
    kind: VolumeKind
    _closers: list[Any] = field(default_factory=list, repr=False)

    @property
    def data(self) -> da.Array:
        return self.levels[0]

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


class _GuardedSource:
    """Array-like wrapper whose reads turn any decoding/IO failure into a VolumeError naming the file."""

    def __init__(self, source: Any, path: Path) -> None:
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
_SOURCES: weakref.WeakValueDictionary[str, _GuardedSource] = weakref.WeakValueDictionary()


def _as_dask(source: Any, path: Path, chunks: Sequence[int]) -> da.Array:
    guarded = _GuardedSource(source, path)
    meta = np.empty((0,) * guarded.ndim, dtype=guarded.dtype)
    array = da.from_array(guarded, chunks=tuple(chunks), asarray=False, lock=False, fancy=False, meta=meta)
    _SOURCES[array.name] = guarded
    return array


def _require_3d(shape: Sequence[int], path: Path) -> None:
    if len(shape) != 3:
        raise VolumeError(path, f"expected a 3D volume (z, y, x), got shape {tuple(shape)} ({len(shape)}D)")
    if min(shape) <= 0:
        raise VolumeError(path, f"volume is empty, shape {tuple(shape)}")


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


# --------------------------------------------------------------------------------------------- reading
def _open_tiff(path: Path) -> LazyVolume:
    import tifffile
    import zarr

    if not path.is_file():
        raise VolumeError(path, "file not found")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as error:
        raise VolumeError(path, f"not a readable TIFF file ({error})") from error
    try:
        series = tif.series[0] if tif.series else None
        if series is None:
            raise VolumeError(path, "TIFF holds no image series")
        if "S" in series.axes:
            raise VolumeError(
                path, f"TIFF has colour samples (axes {series.axes}); expected grayscale z-slices"
            )
        _check_tiff_complete(tif, series, path)
        shape = tuple(int(n) for n in series.shape)
        _require_3d(shape, path)
        store = series.aszarr()
        array = zarr.open_array(store, mode="r")
    except VolumeError:
        tif.close()
        raise
    except Exception as error:
        tif.close()
        raise VolumeError(path, f"cannot open TIFF ({type(error).__name__}: {error})") from error
    dask_array = _as_dask(array, path, slab_chunks(shape, array.dtype.itemsize))
    return LazyVolume(path, [dask_array], "tiff", [tif])


def _check_tiff_complete(tif: Any, series: Any, path: Path) -> None:
    """Detect truncated files from IFD metadata only: page count and data offsets past the end."""
    size = os.path.getsize(path)
    if tif.is_shaped and tif.shaped_metadata:
        declared = tuple(tif.shaped_metadata[0].get("shape", ()))
        if declared and int(np.prod(declared)) != int(np.prod(series.shape)):
            raise VolumeError(
                path,
                f"truncated TIFF: its description declares shape {declared} "
                f"but only {len(tif.pages)} page(s) are readable",
            )
    for page in series.pages:
        if page is None:
            raise VolumeError(path, "truncated TIFF: a page of the series is missing")
        offsets, counts = page.dataoffsets, page.databytecounts
        if offsets and max(o + c for o, c in zip(offsets, counts, strict=False)) > size:
            raise VolumeError(
                path, f"truncated TIFF: page data extends past the end of the file ({size} bytes)"
            )


def _ngff_multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def _open_zarr(path: Path) -> LazyVolume:
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as error:
        raise VolumeError(
            path, f"not a readable zarr array or group ({type(error).__name__}: {error})"
        ) from error
    if isinstance(node, zarr.Array):
        _require_3d(node.shape, path)
        return LazyVolume(path, [_as_dask(node, path, node.chunks)], "zarr")
    multiscales = _ngff_multiscales(dict(node.attrs))
    if multiscales:
        datasets = multiscales[0].get("datasets", [])
        if not datasets:
            raise VolumeError(path, "OME-Zarr multiscales metadata lists no datasets")
        levels = []
        for entry in datasets:
            try:
                level = node[entry["path"]]
            except Exception as error:
                raise VolumeError(
                    path, f"OME-Zarr level {entry.get('path')!r} is missing ({error})"
                ) from error
            _require_3d(level.shape, path / str(entry["path"]))
            levels.append(_as_dask(level, path / str(entry["path"]), level.chunks))
        return LazyVolume(path, levels, "ome-zarr")
    arrays = list(node.array_keys())
    if len(arrays) == 1 and not list(node.group_keys()):
        array = node[arrays[0]]
        _require_3d(array.shape, path)
        return LazyVolume(path, [_as_dask(array, path, array.chunks)], "zarr")
    raise VolumeError(
        path, f"zarr group is not OME-Zarr and holds {len(arrays)} arrays; expected exactly one"
    )


def is_zarr_path(path: str | Path) -> bool:
    """True for a directory holding zarr v2/v3 metadata (array or group)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (".zarray", ".zgroup", "zarr.json"))


def open_volume(path: str | Path) -> LazyVolume:
    """Open a .tif/.tiff file, zarr array, single-array zarr group or OME-Zarr pyramid lazily."""
    path = Path(path)
    if not path.exists():
        raise VolumeError(path, "file not found")
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        return _open_tiff(path)
    if is_zarr_path(path):
        return _open_zarr(path)
    if path.is_dir():
        raise VolumeError(path, "directory is not a zarr array or OME-Zarr group")
    raise VolumeError(
        path, f"unsupported file type {path.suffix!r}; expected .tif, .tiff or a zarr directory"
    )


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
def _block_counts(block: np.ndarray) -> dict[int | float, int]:
    """Value counts of one chunk: bincount for small unsigned ints and bools (fast), unique otherwise."""
    if block.dtype == np.bool_ or (block.dtype.kind == "u" and block.dtype.itemsize <= 2):
        counts = np.bincount(block.ravel().view(np.uint8) if block.dtype == np.bool_ else block.ravel())
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(block, return_counts=True)
    return {v.item(): int(c) for v, c in zip(values, counts, strict=True)}


def iter_label_counts(array: Any) -> Iterator[Progress]:
    """Job: count voxels per value chunk by chunk (memory: one chunk at a time); returns {value: count}."""
    array = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    blocks = array.to_delayed().ravel()
    totals: dict[int | float, int] = {}
    for index, block in enumerate(blocks):
        for value, count in _block_counts(np.asarray(block.compute(scheduler="threads"))).items():
            totals[value] = totals.get(value, 0) + count
        yield Progress(index + 1, len(blocks), "counting values")
    return dict(sorted(totals.items()))


def label_counts(array: Any) -> dict[int | float, int]:
    """Voxel count per value, computed chunk-wise (e.g. ``{0: 900, 1: 60, 2: 40}``)."""
    return run_job(iter_label_counts(array))


def validate_label_values(array: Any, path: str | Path | None = None) -> dict[int | float, int]:
    """Raise VolumeError if any value is outside {0, 1, 2}; returns the value counts (chunk-wise)."""
    counts = label_counts(array)
    bad = sorted(value for value in counts if value not in VALID_LABEL_VALUES)
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        voxels = sum(counts[v] for v in bad)
        raise VolumeError(path, f"label values must be 0, 1 or 2; found {shown} in {voxels} voxel(s)")
    return counts


def central_sample(array: Any, max_pixels: int = 256 * 256) -> np.ndarray:
    """The middle z-slice (its central ``max_pixels`` crop): a cheap, representative sample.

    For arrays opened here the crop is read from the file directly (dask would read whole chunks).
    """
    z, y, x = (int(n) for n in array.shape)
    side = math.isqrt(max_pixels)
    y0, x0 = max(0, (y - side) // 2), max(0, (x - side) // 2)
    region = (z // 2, slice(y0, y0 + side), slice(x0, x0 + side))
    source = _SOURCES.get(getattr(array, "name", None)) if isinstance(array, da.Array) else None
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


# -------------------------------------------------------------------------------------------- writing
def _temp_sibling(path: Path, suffix: str) -> Path:
    """A unique, not yet existing hidden path next to ``path`` (created later with normal permissions)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _swap_in(tmp: Path, target: Path) -> None:
    """Move a finished ``tmp`` onto ``target``; an existing target is kept until the move succeeded."""
    if tmp.is_dir() and target.exists():
        old = _temp_sibling(target, ".old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove(old)
    else:
        if target.is_dir():
            raise VolumeError(target, "cannot replace a directory with a TIFF file")
        os.replace(tmp, target)


def _as_dask_input(array: Any) -> da.Array:
    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=slab_chunks(array.shape, array.dtype.itemsize))
    return da.from_array(array, chunks=getattr(array, "chunks", "auto"))


def iter_write_volume(
    path: str | Path,
    array: Any,
    *,
    compression: str | None = "lzw",
    chunks: Sequence[int] | None = None,
    zarr_format: int = 3,
) -> Iterator[Progress]:
    """Job: write a 3D volume atomically as a page-per-slice TIFF or a zarr array; returns the path.

    The data is computed slab by slab (dask), so a volume larger than memory can be written. The target
    only changes once the new file is complete; a failure or cancel leaves it untouched. ``compression``
    applies to TIFF (``"lzw"``, ``"zlib"``, None...); zarr uses zarr's default codec, ``chunks``
    (default cubic, about 2 MB) and ``zarr_format`` (2 or 3).
    """
    path = Path(path)
    source = _as_dask_input(array)
    _require_3d(source.shape, path)
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    is_tiff = path.suffix.lower() in TIFF_SUFFIXES
    if not is_tiff and path.suffix.lower() != ".zarr":
        raise VolumeError(path, "unsupported output type; use .tif, .tiff or .zarr")
    tmp = _temp_sibling(path, ".tmp" + path.suffix)
    try:
        if is_tiff:
            yield from _write_tiff(tmp, path, source, compression)
        else:
            zarr_chunks = tuple(chunks) if chunks else cubic_chunks(source.shape, source.dtype.itemsize)
            yield from _write_zarr(tmp, source, zarr_chunks, zarr_format)
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)
    return path


class _AbortWrite(Exception):
    """Sent to the TIFF writer thread when the job is closed or fails before the last page."""


def _write_tiff(tmp: Path, path: Path, source: da.Array, compression: str | None) -> Iterator[Progress]:
    """Compute slabs here and hand them to a tifffile writer thread (which LZW-encodes in parallel)."""
    import tifffile

    slabs: queue.Queue[Any] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    codec = None if compression in (None, "none") else compression

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
            with tifffile.TiffWriter(tmp, bigtiff=source.nbytes > 2**31 - 2**25) as writer:
                writer.write(
                    pages(),
                    shape=source.shape,
                    dtype=source.dtype,
                    photometric="minisblack",
                    compression=codec,
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


def _write_zarr(tmp: Path, source: da.Array, chunks: Sequence[int], zarr_format: int) -> Iterator[Progress]:
    """Create a zarr array at ``tmp`` and fill it one z-slab of chunk depth at a time.

    A slab (``chunks[0]`` z-slices, full y/x) is computed once and split into chunks by zarr, so sources
    chunked differently (e.g. page-per-slice TIFFs) are read exactly once; memory is one slab.
    """
    import zarr

    target = zarr.create_array(
        store=str(tmp), shape=source.shape, chunks=tuple(chunks), dtype=source.dtype, zarr_format=zarr_format
    )
    depth = int(chunks[0])
    total = int(source.shape[0])
    for z0 in range(0, total, depth):
        z1 = min(total, z0 + depth)
        target[z0:z1] = np.asarray(source[z0:z1].compute(scheduler="threads"))
        yield Progress(z1, total, "writing slabs")


def write_volume(path: str | Path, array: Any, *, compression: str | None = "lzw", **kwargs: Any) -> Path:
    """Write a 3D volume atomically (.tif/.tiff one LZW page per z-slice, or .zarr); see iter_write_volume."""
    return run_job(iter_write_volume(path, array, compression=compression, **kwargs))


def iter_write_ome_zarr(
    path: str | Path, levels: Sequence[Any], *, chunks: Sequence[int] | None = None
) -> Iterator[Progress]:
    """Job: write a multiscale OME-Zarr (NGFF 0.4, zarr v2) atomically; levels full resolution first."""
    import zarr

    path = Path(path)
    if not levels:
        raise VolumeError(path, "no resolution levels to write")
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    sources = [_as_dask_input(level) for level in levels]
    for source in sources:
        _require_3d(source.shape, path)
    base = sources[0].shape
    tmp = _temp_sibling(path, ".tmp.zarr")
    try:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=2)
        datasets = []
        for index, source in enumerate(sources):
            level_chunks = tuple(chunks) if chunks else cubic_chunks(source.shape, source.dtype.itemsize)
            for report in _write_zarr(tmp / str(index), source, level_chunks, 2):
                yield Progress(
                    report.done, report.total, f"level {index + 1}/{len(sources)}: {report.message}"
                )
            scale = [float(b) / float(n) for b, n in zip(base, source.shape, strict=True)]
            datasets.append(
                {"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        axes = [{"name": name, "type": "space"} for name in "zyx"]
        group.attrs["multiscales"] = [
            {"version": "0.4", "name": path.stem, "axes": axes, "datasets": datasets}
        ]
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)
    return path


def write_ome_zarr(path: str | Path, levels: Sequence[Any], *, chunks: Sequence[int] | None = None) -> Path:
    """Write a multiscale OME-Zarr (NGFF 0.4) atomically; see :func:`iter_write_ome_zarr`."""
    return run_job(iter_write_ome_zarr(path, levels, chunks=chunks))


def describe(volume: LazyVolume) -> dict[str, Any]:
    """A JSON-ready summary: path, kind, shape, dtype, chunk shape and the levels of a pyramid."""
    return {
        "path": str(volume.path),
        "kind": volume.kind,
        "shape": list(volume.shape),
        "dtype": str(volume.dtype),
        "chunks": [int(c[0]) for c in volume.chunks],
        "levels": [
            {"shape": [int(n) for n in level.shape], "chunks": [int(c[0]) for c in level.chunks]}
            for level in volume.levels
        ],
    }


__all__ = [
    "LazyVolume",
    "central_sample",
    "contrast_limits_for",
    "describe",
    "is_label_name",
    "is_label_volume",
    "is_zarr_path",
    "iter_label_counts",
    "iter_write_ome_zarr",
    "iter_write_volume",
    "label_counts",
    "looks_like_labels",
    "open_labels",
    "open_volume",
    "validate_label_values",
    "write_ome_zarr",
    "write_volume",
]
