"""Output side of a full-scroll run: lay out and create (or resume) the output, record progress.

The input side (locations, the input array) is :mod:`.source`.

The output is a uint8 zarr array (zarr format 2 by default, 3 when asked), or an OME-Zarr group (NGFF 0.4
on zarr v2, 0.5 on v3) with a max-pooled pyramid; either carries the input's physical placement (plain
zarr attributes, NGFF coordinate transformations). Chunks are cubic (128³ = 2 MB by default) and
all-zero chunks are never stored (fill value 0), so air costs nothing. Level 0 and every coarser level
whose chunks a block covers exactly are written by the worker that computed the block; the coarser
levels, where several blocks share a chunk, are written by the client (one writer, no read-modify-write
races).

Progress lives in the output's attributes under ``vesuvius_scroll``: the run's fingerprint and two bit
masks over the block grid (finished, air), written only by the client, atomically (zarr replaces the
metadata object as a whole). ``complete`` stays false until every block is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import BlockGrid, Index3, Region
from napari_vesuvius.core.volume.base import DEFAULT_ZARR_FORMAT, check_zarr_format
from napari_vesuvius.core.volume.spatial import Spatial

from .record import RECORD_KEY, Record
from .source import exists, is_url, join, open_array, remove
from .source import is_zarr as _is_zarr


# ------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class OutputLayout:
    """Shapes and chunks of the output levels and which levels the block workers write."""

    shape: Index3
    chunk: int
    block: Index3
    ome: bool
    levels: tuple[Index3, ...]
    zarr_format: int = DEFAULT_ZARR_FORMAT

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
        return {
            "chunk": self.chunk,
            "block": list(self.block),
            "ome": self.ome,
            "levels": len(self.levels),
            "zarr_format": self.zarr_format,
        }


def plan_layout(
    shape: Sequence[int],
    chunk: int,
    block: Sequence[int],
    ome: bool,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
) -> OutputLayout:
    """Check the block size against the chunks and list the pyramid levels (OME-Zarr only).

    Levels halve until the largest side fits one chunk (as long as blocks stay aligned). ``zarr_format``:
    2 (the default) or 3, the format of the output store (part of the fingerprint).
    """
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr format must be 2 or 3, got {zarr_format!r}")
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
    return OutputLayout(shape3, int(chunk), block3, bool(ome), tuple(levels), int(zarr_format))


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
    def create(cls, location: str, layout: OutputLayout, *, spatial: Spatial | None = None) -> ScrollOutput:
        """Create the empty output (``layout.zarr_format``), placed like the input (``spatial``)."""
        from napari_vesuvius.core.volume import ngff
        from napari_vesuvius.core.volume.io import volume_id
        from napari_vesuvius.core.volume.ome_zarr_write import create_ome_zarr_base, create_ome_zarr_level
        from napari_vesuvius.core.volume.zarr_write import create_zarr_array

        zarr_format = check_zarr_format(layout.zarr_format, location)
        if not is_url(location):
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        if not layout.ome:
            node = create_zarr_array(
                location, layout.shape, "uint8", chunks=layout.chunks(0), zarr_format=zarr_format,
                fill_value=0, spatial=spatial,
            )  # fmt: skip
            return cls(location, layout, node)
        group, _ = create_ome_zarr_base(
            location, layout.levels[0], "uint8", chunks=layout.chunks(0), zarr_format=zarr_format
        )
        for level in range(1, len(layout.levels)):
            shape = layout.levels[level]
            create_ome_zarr_level(group, layout.path(level), shape, "uint8", layout.chunks(level), 0)
        group.attrs.update(
            ngff.multiscales_attrs(
                zarr_format=zarr_format,
                level_shapes=layout.levels,
                spatial=spatial or Spatial(),
                downsample="max",
                name=volume_id(location.rstrip("/")),
                paths=[layout.path(level) for level in range(len(layout.levels))],
            )
        )
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
    location: str,
    layout: OutputLayout,
    fingerprint: dict[str, Any],
    *,
    input_location: str,
    overwrite: bool,
    spatial: Spatial | None = None,
) -> tuple[ScrollOutput, Record]:
    """Create the output, or reopen it to resume when its fingerprint matches; refuse a mismatch.

    ``spatial``: the input's placement, carried into a new output. ``overwrite`` deletes an existing
    output first. An output that holds no record (not written by a
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
        output = ScrollOutput.create(location, layout, spatial=spatial)
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
