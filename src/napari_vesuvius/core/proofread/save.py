"""Safe saving of corrected labels: a new version per save, never overwriting anything.

**Versions** (``<stem>.v001.tif``, next free number; :mod:`.naming`) are never overwritten and the
original is never written. A save is assembled in a hidden ``.<name>.<random>-<pid>-<host>.partial<ext>``
sibling and published under its version name only when complete, with a no-clobber link/rename: a crash
or a kill at any moment leaves the earlier files as they were and nothing (or only the hidden partial) at
the new version's path; the next save of that version removes a killed save's partial
(:func:`~napari_vesuvius.core.atomic.temp_sibling`). What is saved:

* a whole volume: the edited array, streamed as a TIFF (LZW) or a zarr;
* a crop (box) of a TIFF family: the previous version (else the original, else zeros) with the crop
  patched in, streamed slab by slab (dask), so the volume never has to fit in memory;
* a crop of a zarr family: **copy-on-write** from the previous zarr: every chunk file is hard-linked
  (copied where links are impossible) and only the chunks the box touches are written, through zarr;
  those chunk files are first replaced by private copies (:func:`_unshare_chunks`), so the linked
  files of older versions never change whatever way the installed zarr writes a chunk; the
  lower levels of an OME-Zarr pyramid are updated in the box by nearest-neighbour downsampling.
  The copy keeps the previous version's zarr format (2 or 3) and metadata, its placement included.

A save with nothing to start from (no version, no original) writes a new sparse zarr in zarr format 2
(``zarr_format`` 3 when asked; ``.ome.zarr``: an OME-Zarr label pyramid) placed by ``spatial``. Every
other save keeps the physical placement (scale, origin, unit) of the file it starts from.

The autosave file is written by :mod:`.autosave`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.volume.base import (
    DEFAULT_ZARR_FORMAT,
    TIFF_SUFFIXES,
    cubic_chunks,
    is_ome_zarr_name,
    slab_chunks,
)
from napari_vesuvius.core.volume.spatial import Spatial

from ..atomic import remove_path, temp_sibling
from ..errors import VolumeError
from ..progress import Progress
from .naming import latest_version, next_version_path, split_name
from .region import Box, box_shape, full_box, is_full

#: zarr metadata files: copied (not linked) into a new version
_ZARR_METADATA = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata", "zarr.json"})
#: attribute recording where a zarr version came from
PROVENANCE_ATTR = "napari_vesuvius_proofread"
_PUBLISH_TRIES = 50


def _is_zarr_ext(ext: str) -> bool:
    return ext.lower().endswith(".zarr")


def _same_zarr_kind(ext: str, base_ext: str) -> bool:
    """True when a version can be copied from its base: both plain zarr or both OME-Zarr (a family may
    hold both; an OME-Zarr version is never a copy of a plain zarr, nor the reverse)."""
    both_zarr = _is_zarr_ext(ext) and _is_zarr_ext(base_ext)
    return both_zarr and is_ome_zarr_name(ext) == is_ome_zarr_name(base_ext)


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(partial: Path, target: Path) -> bool:
    """Move a finished ``partial`` to ``target`` unless ``target`` exists (then False, nothing moved)."""
    if partial.is_dir():
        if target.exists():
            return False
        try:
            os.rename(partial, target)  # fails on an existing non-empty folder: never clobbers
        except OSError:
            if target.exists():
                return False
            raise
        return True
    try:
        os.link(partial, target)  # atomic and fails if target exists
    except FileExistsError:
        return False
    except OSError:  # file system without hard links: check, then rename
        if target.exists():
            return False
        os.replace(partial, target)
        return True
    partial.unlink()
    return True


def save_base(original: str | Path) -> Path | None:
    """What the untouched part of a crop save comes from: the latest version, else the original."""
    latest = latest_version(original)
    if latest is not None:
        return latest
    original = Path(original)
    return original if original.exists() else None


# ------------------------------------------------------------------------------------------ versions
def iter_save_version(
    original: str | Path,
    data: np.ndarray,
    *,
    box: Box | None = None,
    full_shape: Sequence[int] | None = None,
    base: str | Path | None = None,
    spatial: Spatial | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
) -> Generator[Progress, None, Path]:
    """Job: save ``data`` as the next version of ``original``'s family; returns the version's path.

    ``data`` is the whole volume (``box`` None) or the crop at ``box`` of a volume of ``full_shape``.
    ``base`` (default :func:`save_base`) supplies the voxels outside the box and the placement; zeros
    when there is none. ``spatial`` and ``zarr_format`` apply only to a save with no base (a zarr of a
    base keeps its format and placement). The original is never written, an existing version never
    replaced.
    """
    original = Path(original)
    data = np.asarray(data)
    if data.ndim != 3:
        raise VolumeError(original, f"labels to save must be 3D, got shape {data.shape}")
    if data.dtype != np.uint8:
        if data.size and (int(data.min()) < 0 or int(data.max()) > 255):
            raise VolumeError(original, f"label values must fit in uint8, got {data.min()}..{data.max()}")
        data = data.astype(np.uint8)
    shape = tuple(int(n) for n in (full_shape if full_shape is not None else data.shape))
    box = full_box(shape) if box is None else box
    if box_shape(box) != data.shape:
        raise VolumeError(original, f"crop shape {data.shape} does not match its box {box_shape(box)}")
    if not original.parent.is_dir():
        raise VolumeError(original, "folder does not exist")
    _, ext = split_name(original)
    if ext.lower() not in (*TIFF_SUFFIXES, ".zarr", ".ome.zarr"):
        raise VolumeError(original, "labels can be saved as .tif/.tiff or .zarr only")
    base_path = save_base(original) if base is None else Path(base)
    target = next_version_path(original)
    partial = temp_sibling(target, ".partial" + split_name(target)[1])
    try:
        if base_path is not None and _same_zarr_kind(ext, split_name(base_path)[1]):
            yield from _copy_on_write_zarr(base_path, partial, box, data, shape)
        elif _is_zarr_ext(ext) and base_path is None:
            yield from _new_sparse_zarr(partial, box, data, shape, spatial, zarr_format)
        else:
            yield from _stream(partial, box, data, shape, base_path, spatial)
        if partial.is_file():
            _fsync_file(partial)
        for _ in range(_PUBLISH_TRIES):
            if _publish(partial, target):
                _fsync_dir(target.parent)
                return target
            target = next_version_path(original)  # another save took this number meanwhile
        raise VolumeError(target, "could not find a free version name")
    finally:
        if partial.exists():
            remove_path(partial)


def save_version(original: str | Path, data: np.ndarray, **kwargs: Any) -> Path:
    """Run :func:`iter_save_version` to completion."""
    from ..progress import run_job

    return run_job(iter_save_version(original, data, **kwargs))


def _stream(
    partial: Path,
    box: Box,
    data: np.ndarray,
    shape: tuple[int, ...],
    base: Path | None,
    spatial: Spatial | None,
) -> Generator[Progress, None, None]:
    """Write the base with the crop patched in (or the whole ``data``), slab by slab, placed like the
    base (``spatial`` when there is none)."""
    import dask.array as da

    from napari_vesuvius.core.volume.io import open_labels
    from napari_vesuvius.core.volume.write import iter_write_volume

    spatial = _placement(base, spatial)
    if is_full(box, shape):
        source: Any = data
        volume = None
    else:
        if base is None:
            volume = None
            lazy = da.zeros(shape, dtype=np.uint8, chunks=slab_chunks(shape, 1))
        else:
            volume = open_labels(base, shape)
            lazy = volume.data if volume.dtype == np.uint8 else volume.data.astype(np.uint8)
        source = lazy.copy()
        source[box] = data
    try:
        for report in iter_write_volume(partial, source, spatial=spatial, downsample="nearest"):
            yield Progress(report.done, report.total, f"saving: {report.message}")
    finally:
        if volume is not None:
            volume.close()


def _placement(base: Path | None, spatial: Spatial | None) -> Spatial | None:
    """The placement of the family (``base``'s, headers only); ``spatial`` when there is no readable base
    (a whole-volume save does not need the base's voxels, so an unreadable base does not stop it)."""
    from napari_vesuvius.core.volume.io import open_volume

    if base is None:
        return spatial
    try:
        with open_volume(base) as described:
            return described.spatial
    except VolumeError:
        return spatial


def _new_sparse_zarr(
    partial: Path,
    box: Box,
    data: np.ndarray,
    shape: tuple[int, ...],
    spatial: Spatial | None,
    zarr_format: int,
) -> Generator[Progress, None, None]:
    """A new zarr of zeros (no chunk stored) with the crop written: cheap for a huge volume.

    ``.ome.zarr``: level 0 written the same way, then its label pyramid (every second voxel).
    """
    from napari_vesuvius.core.volume.write import create_ome_zarr_base, iter_finish_ome_zarr
    from napari_vesuvius.core.volume.zarr_write import create_zarr_array

    chunks = cubic_chunks(shape, 1)
    if is_ome_zarr_name(partial):
        node, array = create_ome_zarr_base(
            partial, shape, np.uint8, chunks=chunks, zarr_format=zarr_format, fill_value=0
        )
        yield from _write_box(array, box, data)
        yield from iter_finish_ome_zarr(node, spatial=spatial, downsample="nearest")
    else:
        node = array = create_zarr_array(
            partial, shape, np.uint8, chunks=chunks, zarr_format=zarr_format, fill_value=0, spatial=spatial
        )
        yield from _write_box(array, box, data)
    node.attrs[PROVENANCE_ATTR] = _provenance(None, box)


def _write_box(array: Any, box: Box, data: np.ndarray) -> Generator[Progress, None, None]:
    """``array[box] = data`` one chunk-row of z at a time (zarr rewrites only the chunks it touches)."""
    depth = int(array.chunks[0])
    z0, z1 = int(box[0].start), int(box[0].stop)
    rows = (z1 - 1) // depth - z0 // depth + 1
    start = z0
    for index in range(rows):
        stop = min(z1, (start // depth + 1) * depth)
        array[(slice(start, stop), box[1], box[2])] = data[start - z0 : stop - z0]
        start = stop
        yield Progress(index + 1, rows, "writing the edited chunks")


def _unshare_chunks(array: Any, root: Path, box: Box) -> None:
    """Give every chunk file ``box`` touches its own copy (breaks the hard link to older versions)."""
    import itertools

    folder = root / str(array.path) if str(array.path) else root
    ranges = [
        range(int(s.start) // int(c), -(-int(s.stop) // int(c)))
        for s, c in zip(box, array.chunks, strict=True)
    ]
    for coords in itertools.product(*ranges):
        chunk = folder / array.metadata.encode_chunk_key(coords)
        if chunk.is_file() and chunk.stat().st_nlink > 1:
            private = temp_sibling(chunk, ".unshare", clean=False)  # inside the private partial copy
            shutil.copy2(chunk, private)
            os.replace(private, chunk)


def _replicate(source: Path, target: Path) -> None:
    """Mirror a zarr folder: metadata copied, chunk files hard-linked (copied if links fail)."""
    for root, _dirs, files in os.walk(source):
        relative = Path(root).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in files:
            src, dst = Path(root) / name, target / relative / name
            if name in _ZARR_METADATA:
                shutil.copy2(src, dst)
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


def _copy_on_write_zarr(
    base: Path, partial: Path, box: Box, data: np.ndarray, shape: tuple[int, ...]
) -> Generator[Progress, None, None]:
    import zarr

    yield Progress(0, 1, "linking unchanged chunks")
    _replicate(base, partial)
    try:
        node = zarr.open(store=str(partial), mode="r+")
    except Exception as error:
        raise VolumeError(base, f"not a readable zarr ({type(error).__name__}: {error})") from error
    levels = _levels(node, base)
    if tuple(int(n) for n in levels[0].shape) != shape:
        raise VolumeError(base, f"shape {tuple(levels[0].shape)} differs from the edited volume's {shape}")
    _unshare_chunks(levels[0], partial, box)
    yield from _write_box(levels[0], box, data)
    for level in levels[1:]:
        _downsample_into(levels[0], level, box, base, partial)
    yield Progress(1, 1, "pyramid updated")
    node.attrs[PROVENANCE_ATTR] = _provenance(base, box)


def _levels(node: Any, path: Path) -> list[Any]:
    """Full resolution first: the array itself, the one array of a group, or an OME-Zarr's levels."""
    import zarr

    if isinstance(node, zarr.Array):
        return [node]
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if multiscales:
        return [node[entry["path"]] for entry in multiscales[0]["datasets"]]
    keys = list(node.array_keys())
    if len(keys) == 1:
        return [node[keys[0]]]
    raise VolumeError(path, f"zarr group holds {len(keys)} arrays and no OME-Zarr metadata")


def _downsample_into(full: Any, level: Any, box: Box, path: Path, root: Path) -> None:
    """Refresh a pyramid level inside ``box`` by nearest-neighbour (strided) downsampling."""
    factors = []
    for n, m in zip(full.shape, level.shape, strict=True):
        factor = n / m
        if abs(factor - round(factor)) > 1e-6 and math.ceil(n / round(factor)) != m:
            raise VolumeError(path, f"pyramid level of shape {level.shape} is not an integer downsampling")
        factors.append(max(1, round(factor)))
    low = [int(s.start) // f for s, f in zip(box, factors, strict=True)]
    high = [min(m, -(-int(s.stop) // f)) for s, f, m in zip(box, factors, level.shape, strict=True)]
    source = tuple(slice(lo * f, hi * f, f) for lo, hi, f in zip(low, high, factors, strict=True))
    target = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    _unshare_chunks(level, root, target)
    level[target] = np.asarray(full[source])


def _provenance(base: Path | None, box: Box) -> dict[str, Any]:
    return {
        "base": None if base is None else str(base),
        "box": [[int(s.start), int(s.stop)] for s in box],
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
