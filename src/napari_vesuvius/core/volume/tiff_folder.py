"""A folder of 2D TIFF slices (``<volume>/00000.tif, 00001.tif, …``) read lazily as one (z, y, x) volume.

The layout scroll volumes were long distributed in. Slices are the folder's ``.tif``/``.tiff`` files (hidden
files and anything else, such as ``meta.json``, ignored) in natural order of their names (``2.tif`` before
``10.tif``). When every name ends in a number, the numbers must run without a gap or a repeat: a missing
slice would silently shift every later one against its labels. Every slice's header is checked when the
folder is opened (one 2D grayscale page, the shape and dtype of the first) and the first bad slice is
named in the error; pixel data is read only when a chunk of whole slices is computed.

Physical placement: a ``meta.json`` beside the slices with ``"voxelsize"`` (µm; the Vesuvius data
server's volume metadata) gives an isotropic voxel size, else the first slice's TIFF tags
(:mod:`.tiff_spatial`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.base import TIFF_SUFFIXES, VolumeWarning, slab_chunks, stack_key
from napari_vesuvius.core.volume.spatial import Spatial

if TYPE_CHECKING:
    from napari_vesuvius.core.volume.io import LazyVolume

#: The data server's per-volume metadata file beside the slices.
META_JSON = "meta.json"
_PARTS = re.compile(r"(\d+)")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def _natural_key(name: str) -> tuple[Any, ...]:
    """``"slice10.tif"`` -> ``("slice", 10, ".tif")``: digit runs compare as numbers."""
    return tuple(int(part) if odd % 2 else part.lower() for odd, part in enumerate(_PARTS.split(name)))


def slice_files(path: str | Path) -> list[Path]:
    """The ``.tif``/``.tiff`` files of a folder (not hidden) in natural order of their names."""
    with os.scandir(path) as entries:  # file types from the listing itself: no stat per slice
        names = [
            entry.name
            for entry in entries
            if not entry.name.startswith(".")
            and os.path.splitext(entry.name)[1].lower() in TIFF_SUFFIXES
            and entry.is_file()
        ]
    return [Path(path) / name for name in sorted(names, key=_natural_key)]


#: (SampleFormat, BitsPerSample) -> numpy type of a grayscale sample.
_SAMPLE_TYPES = {
    **{(1, bits): f"u{bits // 8}" for bits in (8, 16, 32, 64)},
    **{(2, bits): f"i{bits // 8}" for bits in (8, 16, 32, 64)},
    **{(3, bits): f"f{bits // 8}" for bits in (16, 32, 64)},
}
#: TIFF layout: (IFD offset at, entry-count format, entry size, count format, value at, next-IFD format).
_LAYOUTS = {42: (4, "I", "H", 12, "I", 8, "I"), 43: (8, "Q", "Q", 20, "Q", 12, "Q")}
_UNSIGNED = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
_IMAGE_WIDTH, _IMAGE_LENGTH, _BITS, _SAMPLES, _SUB_IFDS, _SAMPLE_FORMAT, _IMAGE_DEPTH = (
    256,
    257,
    258,
    277,
    330,
    339,
    32997,
)


def _quick_header(path: Path) -> tuple[tuple[int, int], np.dtype] | None:
    """``((y, x), dtype)`` of a TIFF holding exactly one plain grayscale page, parsed from its first IFD
    alone (an order of magnitude faster than opening a ``tifffile.TiffFile``, which matters for a scroll
    of 20 000 slices); None for anything else (several pages, colour, sub-IFDs, odd sample types,
    unreadable), which :func:`_page_header` then reads with tifffile."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
            order = {b"II": "<", b"MM": ">"}.get(head[:2])
            if order is None or len(head) < 16:
                return None
            layout = _LAYOUTS.get(struct.unpack(order + "H", head[2:4])[0])
            if layout is None:
                return None
            at, offset_format, count_format, entry_size, n_format, value_at, next_format = layout
            file.seek(struct.unpack_from(order + offset_format, head, at)[0])
            count_size = struct.calcsize(count_format)
            (count,) = struct.unpack(order + count_format, file.read(count_size))
            size = count * entry_size + struct.calcsize(next_format)
            raw = file.read(size) if count <= 4096 else b""
    except (OSError, struct.error, OverflowError, ValueError):
        return None
    if len(raw) != size:
        return None
    tags: dict[int, int | None] = {}
    for start in range(0, count * entry_size, entry_size):
        tag, kind = struct.unpack_from(order + "HH", raw, start)
        (n,) = struct.unpack_from(order + n_format, raw, start + 4)
        value_format = _UNSIGNED.get(kind)
        tags[tag] = (
            struct.unpack_from(order + value_format, raw, start + value_at)[0]
            if value_format and n == 1
            else None
        )
    if struct.unpack_from(order + next_format, raw, count * entry_size)[0] != 0:
        return None  # more than one page: tifffile counts them for the message
    if tags.get(_SAMPLES, 1) != 1 or _SUB_IFDS in tags or _IMAGE_DEPTH in tags:
        return None
    sample = _SAMPLE_TYPES.get((tags.get(_SAMPLE_FORMAT, 1), tags.get(_BITS, 1)))  # type: ignore[arg-type]
    width, length = tags.get(_IMAGE_WIDTH), tags.get(_IMAGE_LENGTH)
    if sample is None or not width or not length:
        return None
    return (int(length), int(width)), np.dtype(sample)


def _page_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, page count)`` of a TIFF's first page (dtype in native byte order); VolumeError
    naming an unreadable file."""
    quick = _quick_header(path)
    if quick is not None:
        return (*quick, 1)
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            dtype = np.dtype(page.dtype).newbyteorder("=")
            return tuple(int(n) for n in page.shape), dtype, len(tif.pages)
    except Exception as error:
        raise VolumeError(path, f"not a readable TIFF file ({type(error).__name__}: {error})") from error


def is_slice_folder(path: str | Path) -> bool:
    """True for a directory (not zarr, not a challenge dataset folder) holding at least two .tif/.tiff
    files whose first is one 2D page.

    Cheap: a directory listing and one TIFF header. A folder of 3D TIFF volumes is not a slice folder.
    """
    from napari_vesuvius.core.dataset import is_dataset_folder
    from napari_vesuvius.core.volume.io import is_zarr_path

    path = Path(path)
    try:
        if not path.is_dir() or is_zarr_path(path) or is_dataset_folder(path):
            return False
        files = slice_files(path)
        if len(files) < 2:
            return False
        shape, _, pages = _page_header(files[0])
    except (OSError, VolumeError):
        return False
    return pages == 1 and len(shape) == 2


def _check_numbering(files: Sequence[Path], folder: Path) -> None:
    """VolumeError for a gap or a repeat in the slice numbers (when every name ends in a number)."""
    matches = [_TRAILING_NUMBER.search(f.stem) for f in files]
    if not all(matches):
        return
    numbers = [int(m.group(1)) for m in matches if m]
    for before, after, name_before, name_after in zip(numbers, numbers[1:], files, files[1:], strict=False):
        if after == before:
            raise VolumeError(folder, f"slices {name_before.name} and {name_after.name} have the same number")
        if after != before + 1:
            width = len(_TRAILING_NUMBER.search(name_before.stem).group(1))  # type: ignore[union-attr]
            missing = f"{before + 1:0{width}d}"
            more = f" (and {after - before - 2} more)" if after - before > 2 else ""
            raise VolumeError(
                folder,
                f"slice number {missing}{more} is missing: {name_before.name} is followed by "
                f"{name_after.name}; a shorter volume would misalign every later slice",
            )


def _check_headers(files: Sequence[Path], folder: Path) -> tuple[tuple[int, int], np.dtype]:
    """The common (y, x) shape and dtype of the slices; VolumeError naming the first that differs."""
    shape, dtype, pages = _page_header(files[0])
    for index, file in enumerate(files):
        if index:
            shape_i, dtype_i, pages = _page_header(file)
        else:
            shape_i, dtype_i = shape, dtype
        problem = None
        if len(shape_i) != 2:
            problem = f"shape {shape_i} is not one 2D grayscale image"
        elif pages != 1:
            problem = f"holds {pages} pages; expected one 2D slice per file"
        elif shape_i != shape:
            problem = f"shape {shape_i}, expected {shape} (as {files[0].name})"
        elif dtype_i != dtype:
            problem = f"dtype {dtype_i}, expected {dtype} (as {files[0].name})"
        if problem is not None:
            raise VolumeError(folder, f"slice {file.name}: {problem}")
    return (shape[0], shape[1]), dtype


class TiffSliceStack:
    """Array-like ``(z, y, x)`` view of a folder's slices: ``stack[z0:z1, ys, xs]`` decodes those files.

    A read failure raises VolumeError naming the slice file (the whole volume's guard would name the
    folder). Thread-safe: every read opens its own file.
    """

    def __init__(self, files: Sequence[Path], plane: tuple[int, int], dtype: np.dtype) -> None:
        self.files = list(files)
        self.shape = (len(self.files), *plane)
        self.dtype = np.dtype(dtype)
        self.ndim = 3

    def _read(self, file: Path) -> np.ndarray:
        import tifffile

        try:
            plane = tifffile.imread(file, key=0)
        except Exception as error:
            raise VolumeError(file, f"cannot read slice ({type(error).__name__}: {error})") from error
        if plane.shape != self.shape[1:] or plane.dtype.newbyteorder("=") != self.dtype:
            raise VolumeError(
                file, f"slice changed since opening: {plane.shape} {plane.dtype}, expected {self.shape[1:]}"
            )
        return plane

    def __getitem__(self, key: Any) -> np.ndarray:
        indices, plane_key, z_slice = stack_key(key, self.shape, "TIFF slice folder")
        crop_shape = np.broadcast_to(np.empty((), bool), self.shape[1:])[plane_key].shape
        out = np.empty((len(indices), *crop_shape), self.dtype)
        for i, z in enumerate(indices):
            out[i] = self._read(self.files[z])[plane_key]
        return out if z_slice else out[0]


def _meta_json_spatial(folder: Path, slices: int, notes: list[str]) -> Spatial | None:
    """Isotropic voxel size (µm) from the data server's ``meta.json``; None when absent or unusable."""
    meta_path = folder / META_JSON
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        voxel = meta.get("voxelsize") if isinstance(meta, dict) else None
        if voxel is None:
            return None
        spatial = Spatial((voxel, voxel, voxel), unit="micrometer", source=META_JSON)  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError) as error:
        note = f"{META_JSON} ignored, no voxel size read ({type(error).__name__}: {error})"
        warnings.warn(VolumeWarning(f"{folder}: {note}"), stacklevel=4)
        notes.append(note)
        return None
    declared = meta.get("slices")
    if isinstance(declared, int) and declared != slices:
        note = f"{META_JSON} declares {declared} slices but the folder holds {slices}"
        warnings.warn(VolumeWarning(f"{folder}: {note}"), stacklevel=4)
        notes.append(note)
    return spatial


def _first_slice_spatial(file: Path, notes: list[str]) -> Spatial:
    import tifffile

    from napari_vesuvius.core.volume.tiff_spatial import read_tiff_spatial

    try:
        with tifffile.TiffFile(file) as tif:
            spatial, more = read_tiff_spatial(tif, file)
    except Exception:  # the header was readable a moment ago; the placement is not worth failing for
        return Spatial()
    notes.extend(more)
    return spatial


def open_tiff_folder(path: str | Path) -> LazyVolume:
    """Open a folder of 2D TIFF slices lazily (kind ``"tiff-folder"``); VolumeError naming the bad slice.

    Reads every slice's header (shape, dtype, page count) and nothing else; each dask chunk holds whole
    slices (:func:`~.base.slab_chunks`) and decodes only its own files.
    """
    from napari_vesuvius.core.volume.io import LazyVolume, _as_dask

    folder = Path(path)
    if not folder.is_dir():
        raise VolumeError(folder, "folder not found")
    files = slice_files(folder)
    if len(files) < 2:
        raise VolumeError(folder, f"a slice folder needs at least 2 .tif/.tiff slices, found {len(files)}")
    _check_numbering(files, folder)
    plane, dtype = _check_headers(files, folder)
    notes: list[str] = []
    spatial = _meta_json_spatial(folder, len(files), notes) or _first_slice_spatial(files[0], notes)
    stack = TiffSliceStack(files, plane, dtype)
    array = _as_dask(stack, folder, slab_chunks(stack.shape, stack.dtype.itemsize))
    return LazyVolume(folder, [array], "tiff-folder", spatial=spatial, notes=notes)


__all__ = ["META_JSON", "TiffSliceStack", "is_slice_folder", "open_tiff_folder", "slice_files"]
