"""Zarr side of a full-scroll run: open the input, lay out and create (or resume) the output, record progress.

Locations are local paths or fsspec URLs (``file://``, ``memory://``, ``s3://`` ...; whatever zarr
opens). The input is a zarr array, a single-array group or an OME-Zarr pyramid (its full resolution).

The output is a uint8 zarr array (zarr v3), or an OME-Zarr group (NGFF 0.4, zarr v2) with a max-pooled
pyramid. Chunks are cubic (128³ = 2 MB by default) and all-zero chunks are never stored (fill value 0),
so air costs nothing. Level 0 and every coarser level whose chunks a block covers exactly are written by
the worker that computed the block; the coarser levels, where several blocks share a chunk, are written
by the client (one writer, no read-modify-write races).

Progress lives in the output's attributes under ``vesuvius_scroll``: the run's fingerprint and two bit
masks over the block grid (finished, air), written only by the client, atomically (zarr replaces the
metadata object as a whole). ``complete`` stays false until every block is recorded.
"""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import BlockGrid, Index3, Region
from napari_vesuvius.core.volume.base import TIFF_SUFFIXES, require_3d

RECORD_KEY = "vesuvius_scroll"
RECORD_VERSION = 1


# ---------------------------------------------------------------------------------------- locations
def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def normalize_location(location: str | Path) -> str:
    """An absolute local path (``file://`` URLs included) or the URL without a trailing slash."""
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif is_url(text):
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


def _is_zarr(location: str) -> bool:
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
    still fills 128 MB); one ``exists`` per chunk (or shard).
    """
    fill = array.metadata.fill_value
    if fill is None or np.asarray(fill).item() != 0:
        return True
    grid = array.shards or array.chunks
    ranges = [range(r.start // g, -(-r.stop // g)) for r, g in zip(region, grid, strict=True)]
    return any(
        fs.exists(f"{root}/{array.metadata.encode_chunk_key(coords)}")
        for coords in itertools.product(*ranges)
    )


# -------------------------------------------------------------------------------------------- input
@dataclass(frozen=True)
class InputInfo:
    """Where the full-resolution input array lives and what it holds."""

    location: str
    array_path: str
    shape: Index3
    dtype: str
    chunks: Index3

    @property
    def array_location(self) -> str:
        return join(self.location, self.array_path)


def open_input(location: str | Path) -> tuple[InputInfo, Any]:
    """Open a zarr / OME-Zarr input (full resolution) without reading voxels."""
    import zarr

    from napari_vesuvius.core.volume.io import ngff_multiscales

    where = normalize_location(location)
    if not is_url(where) and not Path(where).exists():
        raise VolumeError(where, "input not found")
    if not is_url(where) and Path(where).suffix.lower() in TIFF_SUFFIXES:
        raise VolumeError(where, "block-wise runs read zarr or OME-Zarr inputs; save the TIFF as .zarr first")
    try:
        node = zarr.open(store=where, mode="r")
    except Exception as error:
        raise VolumeError(where, f"not a readable zarr array or OME-Zarr group ({error})") from error
    require_complete(node.attrs, where)  # the output of an interrupted run is no input
    path = ""
    if not isinstance(node, zarr.Array):
        multiscales = ngff_multiscales(dict(node.attrs))
        if multiscales and multiscales[0].get("datasets"):
            path = str(multiscales[0]["datasets"][0]["path"])
        else:
            arrays = list(node.array_keys())
            if len(arrays) != 1:
                raise VolumeError(where, f"zarr group is not OME-Zarr and holds {len(arrays)} arrays")
            path = arrays[0]
        node = open_array(join(where, path))
    require_3d(node.shape, Path(where))
    shape = tuple(int(n) for n in node.shape)
    chunks = tuple(int(n) for n in node.chunks)
    info = InputInfo(
        where, path, (shape[0], shape[1], shape[2]), str(node.dtype), (chunks[0], chunks[1], chunks[2])
    )
    return info, node


# ------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class OutputLayout:
    """Shapes and chunks of the output levels and which levels the block workers write."""

    shape: Index3
    chunk: int
    block: Index3
    ome: bool
    levels: tuple[Index3, ...]

    @property
    def grid(self) -> BlockGrid:
        return BlockGrid(self.shape, self.block)

    def chunks(self, level: int) -> Index3:
        c = [min(self.chunk, n) for n in self.levels[level]]
        return (c[0], c[1], c[2])

    def path(self, level: int) -> str:
        return str(level) if self.ome else ""

    def worker_written(self, level: int) -> bool:
        """True when every chunk of ``level`` lies inside one block's footprint."""
        counts = self.grid.counts
        for axis in range(3):
            footprint = self.block[axis] >> level
            if counts[axis] > 1 and footprint % self.chunks(level)[axis]:
                return False
        return True

    def region(self, region: Region, level: int) -> Region:
        """A level-0 block region scaled to ``level`` (block starts are multiples of 2**level)."""
        f = 2**level
        s = [slice(r.start // f, math.ceil(r.stop / f)) for r in region]
        return (s[0], s[1], s[2])

    def to_dict(self) -> dict[str, Any]:
        return {"chunk": self.chunk, "block": list(self.block), "ome": self.ome, "levels": len(self.levels)}


def plan_layout(shape: Sequence[int], chunk: int, block: Sequence[int], ome: bool) -> OutputLayout:
    """Check the block size against the chunks and list the pyramid levels (OME-Zarr only).

    Levels halve until the largest side fits one chunk (as long as blocks stay aligned).
    """
    shape3 = (int(shape[0]), int(shape[1]), int(shape[2]))
    block3 = (int(block[0]), int(block[1]), int(block[2]))
    if chunk < 1 or min(block3) < 1:
        raise ValueError(f"chunk ({chunk}) and block size {block3} must be positive")
    for b, n in zip(block3, shape3, strict=True):
        if b < n and b % min(chunk, n):
            raise ValueError(f"block size {block3} must be a multiple of the output chunk ({chunk})")
    levels = [shape3]
    while ome and max(levels[-1]) > chunk and all(b % 2 ** len(levels) == 0 for b in block3):
        levels.append(tuple(math.ceil(n / 2) for n in levels[-1]))  # type: ignore[arg-type]
    return OutputLayout(shape3, int(chunk), block3, bool(ome), tuple(levels))


# ------------------------------------------------------------------------------------------- record
def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.ravel()).tobytes()).decode("ascii")


def _unpack(text: str, shape: Sequence[int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))
    return bits[: int(np.prod(shape))].astype(bool).reshape(tuple(shape))


@dataclass
class Record:
    """The output's progress record: fingerprint, finished and air blocks, fitted normalisations."""

    fingerprint: dict[str, Any]
    done: np.ndarray
    air: np.ndarray
    normalizations: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "fingerprint": self.fingerprint,
            "grid": list(self.done.shape),
            "blocks_total": int(self.done.size),
            "blocks_done": int(self.done.sum()),
            "blocks_air": int(self.air.sum()),
            "done": _pack(self.done),
            "air": _pack(self.air),
            "normalizations": self.normalizations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        grid = [int(n) for n in data["grid"]]
        return cls(
            data["fingerprint"],
            _unpack(data["done"], grid),
            _unpack(data["air"], grid),
            data.get("normalizations"),
        )


# ------------------------------------------------------------------------------------ completeness
#: How an interrupted block-wise run is finished (an existing output with the same settings resumes).
RESUME_HINT = (
    "run the same `napari-vesuvius predict` command again to resume it (or the Inference widget's "
    "block-wise run with the same settings); --overwrite starts over"
)


def incomplete_blocks(attrs: Any) -> tuple[int, int] | None:
    """``(blocks done, blocks total)`` when ``attrs`` (a zarr node's attributes) are those of a
    block-wise output whose run has not finished; None for a finished one or any other zarr.

    The one definition of "incomplete": a progress record (written by every block-wise run) while
    ``complete`` is not true. Only the output's own writer (resuming) and a live display of the run in
    progress may read such a store (see :func:`require_complete`).
    """
    data = dict(attrs)
    record = data.get(RECORD_KEY)
    if not isinstance(record, dict) or data.get("complete") is True:
        return None
    try:
        return int(record.get("blocks_done", 0)), int(record.get("blocks_total", 0))
    except (TypeError, ValueError):
        return 0, 0


def require_complete(attrs: Any, location: str | Path) -> None:
    """Raise VolumeError naming ``location`` when it is an unfinished block-wise output."""
    progress = incomplete_blocks(attrs)
    if progress is not None:
        done, total = progress
        raise VolumeError(
            location,
            f"incomplete block-wise output: {done} of {total} blocks done (its run was interrupted; "
            f"the missing blocks read as 0); {RESUME_HINT}",
        )


def output_progress(location: str | Path) -> tuple[int, int] | None:
    """:func:`incomplete_blocks` of the zarr at ``location`` (None when it is not a readable zarr)."""
    import zarr

    try:
        node = zarr.open(store=str(location), mode="r")
    except Exception:  # not a zarr: nothing to report
        return None
    return incomplete_blocks(node.attrs)


# ------------------------------------------------------------------------------------------- output
class ScrollOutput:
    """The output store of a run: its level arrays and the attributes holding the record."""

    def __init__(self, location: str, layout: OutputLayout, node: Any) -> None:
        self.location = location
        self.layout = layout
        self.node = node  # the array (plain zarr) or the OME-Zarr group: holds the attributes

    def level_location(self, level: int) -> str:
        return join(self.location, self.layout.path(level))

    def level(self, level: int, mode: str = "r+") -> Any:
        return open_array(self.level_location(level), mode)

    def read_record(self) -> Record | None:
        data = dict(self.node.attrs).get(RECORD_KEY)
        return Record.from_dict(data) if isinstance(data, dict) and "fingerprint" in data else None

    def write_record(
        self, record: Record, *, complete: bool = False, settings: dict[str, Any] | None = None
    ) -> None:
        update: dict[str, Any] = {RECORD_KEY: record.to_dict(), "complete": bool(complete)}
        if settings is not None:
            update["prediction"] = settings
        self.node.attrs.update(update)

    @classmethod
    def create(cls, location: str, layout: OutputLayout) -> ScrollOutput:
        import zarr

        if not is_url(location):
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        if not layout.ome:
            node = zarr.create_array(
                store=location, shape=layout.shape, chunks=layout.chunks(0), dtype="uint8", fill_value=0
            )
            return cls(location, layout, node)
        group = zarr.open_group(store=location, mode="w", zarr_format=2)
        datasets = []
        for level, shape in enumerate(layout.levels):
            group.create_array(
                str(level), shape=shape, chunks=layout.chunks(level), dtype="uint8", fill_value=0
            )
            scale = [float(2**level)] * 3
            datasets.append(
                {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        axes = [{"name": name, "type": "space"} for name in "zyx"]
        name = Path(location.rstrip("/")).name
        group.attrs["multiscales"] = [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]
        return cls(location, layout, group)

    @classmethod
    def open(cls, location: str, layout: OutputLayout) -> ScrollOutput:
        import zarr

        try:
            node = zarr.open(store=location, mode="r+")
        except Exception as error:
            raise VolumeError(location, f"exists but is not a readable zarr ({error})") from error
        return cls(location, layout, node)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        out[f"{prefix}.count"] = len(value)
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value
    return out


def describe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable ``key: old → new`` lines for the (nested) fingerprint entries that differ."""
    before, after = _flatten(old, "", {}), _flatten(new, "", {})
    missing = "(none)"
    return [
        f"{key}: {_short(before.get(key, missing))} → {_short(after.get(key, missing))}"
        for key in sorted(set(before) | set(after))
        if before.get(key, missing) != after.get(key, missing)
    ]


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def prepare_output(
    location: str, layout: OutputLayout, fingerprint: dict[str, Any], *, input_location: str, overwrite: bool
) -> tuple[ScrollOutput, Record]:
    """Create the output, or reopen it to resume when its fingerprint matches; refuse a mismatch.

    ``overwrite`` deletes an existing output first. An output that holds no record (not written by a
    block run) or a different fingerprint is refused with the differences named.
    """
    inside = location.startswith(input_location.rstrip("/") + "/")
    if location == input_location or inside or input_location.startswith(location.rstrip("/") + "/"):
        raise VolumeError(location, "the output must not be the input, lie inside it or contain it")
    counts = layout.grid.counts
    fresh = Record(fingerprint, np.zeros(counts, bool), np.zeros(counts, bool))
    if exists(location) and overwrite:
        if not _is_zarr(location):
            raise VolumeError(location, "exists and is not a zarr; not deleting it (choose another output)")
        remove(location)
    if not exists(location):
        output = ScrollOutput.create(location, layout)
        output.write_record(fresh)
        return output, fresh
    output = ScrollOutput.open(location, layout)
    record = output.read_record()
    hint = "use --overwrite to start again, or write to a new output path"
    if record is None:
        raise VolumeError(location, f"exists and was not written by a block-wise run; {hint}")
    if record.fingerprint != fingerprint:
        differences = "; ".join(describe_differences(record.fingerprint, fingerprint))
        raise VolumeError(location, f"was started with different settings ({differences}); {hint}")
    return output, record
