"""The autosave file: the edited labels (whole volume or crop) kept safe between versioned saves.

``<stem>.autosave.tif`` next to the original labels is written through
:func:`~napari_vesuvius.core.atomic.atomic_file` (temporary sibling + fsync + ``os.replace``), so a
crash or a kill mid-write leaves the previous autosave intact. The TIFF description holds JSON with
the box origin, the full volume's shape and the original's path, and the pages after the labels hold
the accepted baseline, so the work (and its changes view) can be restored onto the right region.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import VolumeError
from .naming import autosave_path
from .region import Box, box_origin, box_shape, full_box

AUTOSAVE_FORMAT = "napari-vesuvius-autosave"


@dataclass(frozen=True)
class Autosave:
    """An autosave file read back: the edited array, where it goes and what it belongs to.

    ``baseline`` is the accepted labels the diff compares against (None if it was not stored).
    """

    path: Path
    data: np.ndarray
    box: Box
    full_shape: tuple[int, int, int]
    original: Path
    saved: float
    baseline: np.ndarray | None = None


def write_autosave(
    original: str | Path,
    data: np.ndarray,
    *,
    box: Box | None = None,
    full_shape: Sequence[int] | None = None,
    baseline: np.ndarray | None = None,
) -> Path:
    """Write ``<stem>.autosave.tif`` atomically (the previous autosave stays intact until replaced).

    The TIFF pages hold the edited array's z-slices, then (if given) the ``baseline``'s.
    """
    import tifffile

    original = Path(original)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    shape = tuple(int(n) for n in (full_shape if full_shape is not None else data.shape))
    box = full_box(shape) if box is None else box
    if box_shape(box) != data.shape:
        raise VolumeError(original, f"crop shape {data.shape} does not match its box {box_shape(box)}")
    if baseline is not None and baseline.shape != data.shape:
        raise VolumeError(original, f"baseline shape {baseline.shape} differs from the labels' {data.shape}")
    path = autosave_path(original)
    meta = {
        "format": AUTOSAVE_FORMAT,
        "version": 1,
        "original": str(original),
        "origin": list(box_origin(box)),
        "full_shape": list(shape),
        "saved": time.time(),
        "baseline": baseline is not None,
        "depth": int(data.shape[0]),
    }
    encoded = io.BytesIO()  # compressed in memory (labels compress ~50x), then one atomic write
    options = {"photometric": "minisblack", "compression": "zlib", "compressionargs": {"level": 1}}
    pages = data if baseline is None else np.concatenate([data, np.asarray(baseline, np.uint8)])
    tifffile.imwrite(encoded, pages, description=json.dumps(meta), metadata=None, **options)
    with atomic_file(path, "wb") as handle:
        handle.write(encoded.getbuffer())
    return path


def read_autosave(path: str | Path) -> Autosave:
    """Read an autosave file; ``VolumeError`` naming it when it is not one or is damaged."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            description = tif.pages[0].description
            pages = np.asarray(tif.asarray(key=range(len(tif.pages))), dtype=np.uint8)
    except FileNotFoundError:
        raise VolumeError(path, "autosave file not found") from None
    except Exception as error:
        raise VolumeError(path, f"cannot read the autosave ({type(error).__name__}: {error})") from error
    try:
        meta = json.loads(description)
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != AUTOSAVE_FORMAT:
        raise VolumeError(path, "not a napari-vesuvius autosave file")
    pages = pages[None] if pages.ndim == 2 else pages
    depth = int(meta.get("depth", pages.shape[0]))
    if pages.shape[0] != depth * (2 if meta.get("baseline") else 1):
        raise VolumeError(path, f"autosave holds {pages.shape[0]} slices, expected {depth}")
    data = pages[:depth]
    baseline = pages[depth:] if meta.get("baseline") else None
    origin = [int(v) for v in meta["origin"]]
    box = tuple(slice(o, o + n) for o, n in zip(origin, data.shape, strict=True))
    return Autosave(
        path=path,
        data=data,
        box=box,  # type: ignore[arg-type]
        full_shape=tuple(int(n) for n in meta["full_shape"]),  # type: ignore[arg-type]
        original=Path(meta["original"]),
        saved=float(meta.get("saved", 0.0)),
        baseline=baseline,
    )


def discard_autosave(original: str | Path) -> None:
    """Remove the autosave of ``original`` (after its contents were saved as a version)."""
    with contextlib.suppress(FileNotFoundError):
        autosave_path(original).unlink()
