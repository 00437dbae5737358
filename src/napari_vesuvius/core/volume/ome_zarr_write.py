"""Atomic OME-Zarr writing: pyramids computed from level 0, NGFF metadata from :mod:`.ngff`.

Writes NGFF 0.4 on zarr v2 (the default; arrays use the ``/`` chunk separator, as ome-zarr-py does) or
0.5 on zarr v3 (arrays carry ``dimension_names`` z, y, x). Pyramid levels halve (ceil) until the largest
side fits one chunk (the rule of :func:`~napari_vesuvius.core.scroll.store.plan_layout`); each level keeps
the dtype of level 0 and is computed from the level above, region by region (a few chunks at a time, so
memory stays bounded whatever the volume size), with one of three methods: ``mean`` (floats; integer
means are rounded back), ``max`` (binary masks: a thin sheet survives) or ``nearest`` (every 2nd voxel:
labels). Every group written is validated with ome-zarr-models before it is swapped in.

Used by :func:`.write.iter_write_volume` for ``.ome.zarr`` paths, by the sliding window's ``.ome.zarr``
outputs (:func:`create_ome_zarr_base` then :func:`iter_finish_ome_zarr`) and by the labels writer.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.volume.base import (
    DEFAULT_ZARR_FORMAT,
    OME_ZARR_SUFFIX,
    check_zarr_format,
    cubic_chunks,
    require_3d,
)
from napari_vesuvius.core.volume.ngff import multiscales_attrs, validate_ome_zarr_group
from napari_vesuvius.core.volume.spatial import Downsample, Spatial
from napari_vesuvius.core.volume.zarr_write import as_dask_input, swap_in

if TYPE_CHECKING:
    import dask.array as da  # imported where used: reading a TIFF for scoring needs no dask

#: Voxels of a pyramid level computed at once (its source region is 8× as many): one 128³ chunk.
REGION_VOXELS = 128**3
#: Regions downsampled at once (threads: zarr codecs and numpy release the GIL).
WORKERS = max(1, min(4, os.cpu_count() or 1))
DOWNSAMPLE_METHODS: tuple[Downsample, ...] = ("mean", "max", "nearest")


def default_downsample(dtype: Any) -> Downsample:
    """``mean`` for floating point data (CT, probabilities), ``nearest`` for integers and booleans."""
    return "mean" if np.issubdtype(np.dtype(dtype), np.floating) else "nearest"


def pyramid_shapes(shape: Sequence[int], chunks: Sequence[int]) -> list[tuple[int, int, int]]:
    """Level shapes, full resolution first: halve (ceil) until the largest side fits the largest chunk
    edge (at least level 0)."""
    levels = [(int(shape[0]), int(shape[1]), int(shape[2]))]
    edge = max(int(c) for c in chunks)
    while max(levels[-1]) > edge:
        levels.append(tuple(math.ceil(n / 2) for n in levels[-1]))  # type: ignore[arg-type]
    return levels


def _pairs(block: np.ndarray, combine: Any, dtype: Any) -> np.ndarray:
    """Combine neighbouring voxel pairs along z, y, x in turn (``combine(even, odd)``), in ``dtype``."""
    block = block.astype(dtype, copy=False)
    for axis in range(3):
        even = [slice(None)] * 3
        odd = [slice(None)] * 3
        even[axis], odd[axis] = slice(0, None, 2), slice(1, None, 2)
        block = combine(block[tuple(even)], block[tuple(odd)])
    return block


def downsample_block(block: np.ndarray, method: Downsample, dtype: Any) -> np.ndarray:
    """One 2×2×2 downsampling step of a block starting at even offsets (ceil: a partial block at the
    end pools the voxels it has), cast back to ``dtype`` (integer means rounded half up and clipped)."""
    dtype = np.dtype(dtype)
    if method == "nearest":
        return np.ascontiguousarray(block[::2, ::2, ::2]).astype(dtype, copy=False)
    if method not in ("mean", "max"):
        raise ValueError(f"unknown downsampling method {method!r}; use one of {DOWNSAMPLE_METHODS}")
    pad = [(0, n % 2) for n in block.shape]
    if any(after for _, after in pad):
        block = np.pad(block, pad, mode="edge")  # duplicating edge voxels keeps a partial block's mean
    if method == "max":
        return _pairs(block, np.maximum, block.dtype).astype(dtype, copy=False)
    if dtype == np.bool_ or (dtype.kind in "iu" and dtype.itemsize <= 2):
        wide = np.int16 if block.dtype.itemsize == 1 else np.int32  # exact sums of 8 voxels
        total = _pairs(block, np.add, wide)
        if dtype == np.bool_:
            return total >= 4
        info = np.iinfo(dtype)
        return np.clip((total + 4) // 8, info.min, info.max).astype(dtype)
    work = np.float32 if dtype.kind == "f" and dtype.itemsize <= 4 else np.float64
    mean = _pairs(block, np.add, work) / work(8)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.floor(mean + 0.5), info.min, info.max).astype(dtype)
    return mean.astype(dtype, copy=False)


def _array_kwargs(zarr_format: int) -> dict[str, Any]:
    """NGFF array conventions: ``/``-separated chunk keys on zarr v2, dimension names on v3."""
    if zarr_format == 2:
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return {"dimension_names": ("z", "y", "x")}


def _location(group: Any) -> str:
    store = group.store
    root = getattr(store, "root", None) or getattr(store, "path", None)
    return str(root) if root is not None else str(store)


def create_ome_zarr_base(
    location: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    fill_value: Any = 0,
) -> tuple[Any, Any]:
    """Create an OME-Zarr group at ``location`` with an empty full-resolution array ``"0"``.

    For writers that fill level 0 themselves (the sliding window writing tiles): returns
    ``(group, level0_array)``; :func:`iter_finish_ome_zarr` then adds the pyramid and the metadata.
    An existing group at ``location`` is replaced (callers write into a temporary or their own output).
    """
    import zarr

    zarr_format = check_zarr_format(zarr_format, location)
    shape3 = tuple(int(n) for n in shape)
    require_3d(shape3, Path(str(location)))
    dtype = np.dtype(dtype)
    chunks3 = tuple(int(c) for c in chunks) if chunks else cubic_chunks(shape3, dtype.itemsize)
    group = zarr.open_group(store=str(location), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    level0 = create_ome_zarr_level(group, "0", shape3, dtype, chunks3, fill_value)
    return group, level0


def create_ome_zarr_level(
    group: Any, name: str, shape: Sequence[int], dtype: Any, chunks: Sequence[int], fill_value: Any = 0
) -> Any:
    """Create (or replace) an empty level array ``name`` of an OME-Zarr group with the NGFF array
    conventions of its zarr format; ``chunks`` are clipped to ``shape``. For writers that fill every
    level themselves (the block-wise scroll output); the multiscales metadata is the caller's."""
    clipped = tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape, strict=True))
    return group.create_array(
        name,
        shape=tuple(int(n) for n in shape),
        chunks=clipped,
        dtype=np.dtype(dtype),
        fill_value=fill_value,
        overwrite=True,
        **_array_kwargs(int(group.metadata.zarr_format)),
    )


def _regions(shape: Sequence[int], chunks: Sequence[int], voxels: int) -> list[tuple[slice, ...]]:
    """Chunk-aligned regions of about ``voxels`` voxels (at least one chunk), x widened first, then y."""
    cz, cy, cx = (int(c) for c in chunks)
    nx = max(1, min(math.ceil(shape[2] / cx), voxels // (cz * cy * cx)))
    ny = max(1, min(math.ceil(shape[1] / cy), voxels // (cz * cy * cx * nx)))
    steps = (cz, cy * ny, cx * nx)
    starts = [range(0, int(n), s) for n, s in zip(shape, steps, strict=True)]
    return [
        tuple(slice(o, min(o + s, int(n))) for o, s, n in zip(origin, steps, shape, strict=True))
        for origin in itertools.product(*starts)
    ]


def _stored_chunk_keys(array: Any) -> set[str] | None:
    """Keys (relative to the array) of the chunks stored for a zarr array; None when the store cannot
    list them (then nothing is skipped)."""
    try:
        from zarr.core.sync import sync

        store_path = array.store_path
        prefix = f"{store_path.path}/" if store_path.path else ""

        async def collect() -> set[str]:
            return {key[len(prefix) :] async for key in store_path.store.list_prefix(prefix)}

        return sync(collect())
    except Exception:  # a store without listing (plain HTTP): compute every region
        return None


def _has_stored_chunk(array: Any, region: tuple[slice, ...], stored: set[str] | None) -> bool:
    """Whether any chunk of ``array`` that ``region`` overlaps is stored (True when unknown)."""
    if stored is None:
        return True
    ranges = [
        range(r.start // int(c), math.ceil(r.stop / int(c)))
        for r, c in zip(region, array.chunks, strict=True)
    ]
    return any(array.metadata.encode_chunk_key(coords) in stored for coords in itertools.product(*ranges))


def _fill_level(source: Any, target: Any, method: Downsample, label: str) -> Iterator[Progress]:
    """Fill ``target`` (a new, empty coarser level with the source's fill value) from the zarr array
    ``source`` region by region, a few regions at a time in threads (each writes whole chunks of its
    own; memory: ``WORKERS`` regions). Regions whose source holds no stored chunk stay unwritten (they
    read as the fill value): a sparse output (air skipped, a proofread crop) is finished quickly."""
    regions = _regions(target.shape, target.chunks, REGION_VOXELS)
    stored = _stored_chunk_keys(source)

    def fill(region: tuple[slice, ...]) -> None:
        above = tuple(
            slice(2 * r.start, min(2 * r.stop, int(n))) for r, n in zip(region, source.shape, strict=True)
        )
        if _has_stored_chunk(source, above, stored):
            target[region] = downsample_block(np.asarray(source[above]), method, target.dtype)

    executor = ThreadPoolExecutor(max_workers=WORKERS)
    try:
        futures = [executor.submit(fill, region) for region in regions]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            yield Progress(done, len(regions), f"{label}: downsampling ({method})")
    finally:
        executor.shutdown(wait=True, cancel_futures=True)  # a cancel or an error stops the rest


def _fill_slabs(target: Any, source: da.Array, label: str) -> Iterator[Progress]:
    """Fill ``target`` from a dask array one z-slab of chunk depth at a time (each source chunk read once)."""
    depth = int(target.chunks[0])
    total = int(source.shape[0])
    for z0 in range(0, total, depth):
        z1 = min(total, z0 + depth)
        slab = np.asarray(source[z0:z1].compute(scheduler="threads"))
        target[z0:z1] = slab.astype(target.dtype, copy=False)
        yield Progress(z1, total, f"{label}: writing slabs")


def iter_finish_ome_zarr(
    group: Any,
    *,
    spatial: Spatial | None = None,
    downsample: Downsample = "mean",
    name: str | None = None,
) -> Iterator[Progress]:
    """Job: compute the coarser levels of a group from its filled level ``"0"`` and write the validated
    multiscales metadata (NGFF 0.4 on a zarr v2 group, 0.5 on v3); returns the level shapes.

    Levels halve (ceil) until the largest side fits the largest chunk edge of level 0; levels ``"1"``...
    are (re)created with level 0's chunks, dtype and fill value. ``spatial`` places level 0 (default:
    1 voxel = 1 unit); ``downsample`` is the method, also recorded as the multiscale ``type``.
    """
    if downsample not in DOWNSAMPLE_METHODS:
        raise ValueError(f"unknown downsampling method {downsample!r}; use one of {DOWNSAMPLE_METHODS}")
    base = group["0"]
    shapes = pyramid_shapes(base.shape, base.chunks)
    above = base
    for index, shape in enumerate(shapes[1:], start=1):
        level = create_ome_zarr_level(group, str(index), shape, base.dtype, base.chunks, base.fill_value)
        yield from _fill_level(above, level, downsample, f"level {index + 1}/{len(shapes)}")
        above = level
    zarr_format = int(group.metadata.zarr_format)
    attrs = multiscales_attrs(
        zarr_format=zarr_format,
        level_shapes=shapes,
        spatial=spatial or Spatial(),
        downsample=downsample,
        name=name,
    )
    group.attrs.update(attrs)
    validate_ome_zarr_group(group, _location(group))
    return shapes


def _image_name(path: Path) -> str:
    name = path.name
    return name[: -len(OME_ZARR_SUFFIX)] if name.lower().endswith(OME_ZARR_SUFFIX) else path.stem


def iter_write_ome_zarr(
    path: str | Path,
    levels: Any,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    spatial: Spatial | None = None,
    downsample: Downsample | None = None,
    name: str | None = None,
) -> Iterator[Progress]:
    """Job: write a multiscale OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on v3) atomically; returns the path.

    ``levels``: one 3D array (its pyramid is computed with ``downsample``: ``mean`` by default for
    floats, ``nearest`` for integers; pass ``max`` for thin binary masks) or a list / tuple of levels,
    full resolution first (``downsample`` then only names how they were made). ``spatial`` places level
    0; the metadata is built and validated by :mod:`.ngff`. ``chunks`` default cubic (about 2 MB).
    """
    path = Path(path)
    zarr_format = check_zarr_format(zarr_format, path)
    given = list(levels) if isinstance(levels, list | tuple) else [levels]
    if not given:
        raise VolumeError(path, "no resolution levels to write")
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    sources = [as_dask_input(level) for level in given]
    for source in sources:
        require_3d(source.shape, path)
    first = sources[0]
    method = downsample or default_downsample(first.dtype)
    if method not in DOWNSAMPLE_METHODS:
        raise ValueError(f"unknown downsampling method {method!r}; use one of {DOWNSAMPLE_METHODS}")
    level_chunks = (
        tuple(int(c) for c in chunks) if chunks else cubic_chunks(first.shape, first.dtype.itemsize)
    )
    title = name or _image_name(path)
    tmp = temp_sibling(path, ".tmp.zarr")
    try:
        group, base = create_ome_zarr_base(
            tmp, first.shape, first.dtype, chunks=level_chunks, zarr_format=zarr_format
        )
        count = len(sources)
        yield from _fill_slabs(base, first, f"level 1/{count}" if count > 1 else "level 1")
        if count == 1:
            yield from iter_finish_ome_zarr(group, spatial=spatial, downsample=method, name=title)
        else:
            for index, source in enumerate(sources[1:], start=1):
                level = create_ome_zarr_level(group, str(index), source.shape, source.dtype, level_chunks, 0)
                yield from _fill_slabs(level, source, f"level {index + 1}/{count}")
            attrs = multiscales_attrs(
                zarr_format=zarr_format,
                level_shapes=[s.shape for s in sources],
                spatial=spatial or Spatial(),
                downsample=method,
                name=title,
            )
            group.attrs.update(attrs)
            validate_ome_zarr_group(group, path)
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)
    return path


def write_ome_zarr(path: str | Path, levels: Any, **kwargs: Any) -> Path:
    """Write a multiscale OME-Zarr atomically; see :func:`iter_write_ome_zarr`."""
    return run_job(iter_write_ome_zarr(path, levels, **kwargs))


__all__ = [
    "DOWNSAMPLE_METHODS",
    "create_ome_zarr_base",
    "create_ome_zarr_level",
    "default_downsample",
    "downsample_block",
    "iter_finish_ome_zarr",
    "iter_write_ome_zarr",
    "pyramid_shapes",
    "write_ome_zarr",
]
