"""The autosave file: the edited labels (whole volume or crop) kept safe between versioned saves.

``<stem>.autosave.tif`` next to the original labels is written through
:func:`~napari_vesuvius.core.atomic.atomic_file` (temporary sibling + fsync + ``os.replace``), so a
crash or a kill mid-write leaves the previous autosave intact. The TIFF description holds JSON with
the box origin, the full volume's shape and the original's path, and the pages after the labels hold
the accepted baseline, so the work (and its changes view) can be restored onto the right region.

**An older autosave never replaces a newer one.** Each autosave carries a *generation*
(:func:`next_generation`: taken when the labels are snapshotted, strictly increasing, wall-clock
based so a later process continues above an earlier one). Several writes of one file may run at
once (a slow background autosave, then the synchronous one when napari closes); a write is skipped
when a newer generation has already started or is on disk, and the final check and the rename
happen under a per-file lock, so the file only ever moves forward. :func:`discard_autosave` (after a
version save) also moves the file's generation forward, so an autosave still in flight for
already-saved labels does not bring the file back.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..errors import VolumeError
from .naming import autosave_path
from .region import Box, box_origin, box_shape, full_box

AUTOSAVE_FORMAT = "napari-vesuvius-autosave"
#: longest wait (s) for another write of the same autosave to finish its rename (bounded at exit)
LOCK_TIMEOUT_S = 30.0
#: an autosave on disk whose generation lies this far in the future (ns: a clock set back) is ignored
FUTURE_SLACK_NS = 60 * 10**9

_generation_lock = threading.Lock()
_last_generation = 0


def next_generation() -> int:
    """A generation larger than every earlier one of this process (nanoseconds of wall-clock time).

    Take it when the labels are snapshotted: an autosave with a larger generation holds newer edits.
    """
    global _last_generation
    with _generation_lock:
        _last_generation = max(time.time_ns(), _last_generation + 1)
        return _last_generation


@dataclass
class _Ledger:
    """What this process started and wrote for one autosave file (``lock``: check + rename)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0
    written: int = 0


_ledgers: dict[str, _Ledger] = {}


def _ledger(path: Path) -> _Ledger:
    with _generation_lock:
        return _ledgers.setdefault(os.path.abspath(path), _Ledger())


def disk_generation(path: str | Path) -> int:
    """The generation of the autosave file at ``path`` (0 when absent or unreadable; files written
    before generations existed count by their save time)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = json.loads(tif.pages[0].description)
        generation = int(meta.get("generation") or float(meta.get("saved", 0.0)) * 1e9)
    except Exception:  # absent, half-copied or not an autosave: nothing newer to protect
        return 0
    return 0 if generation > time.time_ns() + FUTURE_SLACK_NS else generation


def _superseded(ledger: _Ledger, path: Path, generation: int, on_disk: bool) -> bool:
    if ledger.started > generation or ledger.written >= generation:
        return True
    return on_disk and disk_generation(path) >= generation


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
    generation: int = 0


def _encode(pages: np.ndarray, meta: dict[str, object]) -> bytes:
    """The autosave TIFF in memory (labels compress ~50x), written to disk in one atomic step."""
    import tifffile

    encoded = io.BytesIO()
    options = {"photometric": "minisblack", "compression": "zlib", "compressionargs": {"level": 1}}
    tifffile.imwrite(encoded, pages, description=json.dumps(meta), metadata=None, **options)
    return encoded.getvalue()


def write_autosave(
    original: str | Path,
    data: np.ndarray,
    *,
    box: Box | None = None,
    full_shape: Sequence[int] | None = None,
    baseline: np.ndarray | None = None,
    generation: int | None = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> Path | None:
    """Write ``<stem>.autosave.tif`` atomically (the previous autosave stays intact until replaced).

    The TIFF pages hold the edited array's z-slices, then (if given) the ``baseline``'s.
    ``generation``: from :func:`next_generation` when the labels were snapshotted (default: now).
    Returns the path, or None when the write was skipped because a newer autosave of the file has
    started or is already on disk. ``VolumeError`` when another write holds the file longer than
    ``lock_timeout`` seconds.
    """
    original = Path(original)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    shape = tuple(int(n) for n in (full_shape if full_shape is not None else data.shape))
    box = full_box(shape) if box is None else box
    if box_shape(box) != data.shape:
        raise VolumeError(original, f"crop shape {data.shape} does not match its box {box_shape(box)}")
    if baseline is not None and baseline.shape != data.shape:
        raise VolumeError(original, f"baseline shape {baseline.shape} differs from the labels' {data.shape}")
    path = autosave_path(original)
    generation = next_generation() if generation is None else int(generation)
    ledger = _ledger(path)
    with _generation_lock:
        if _superseded(ledger, path, generation, on_disk=False):
            return None
        ledger.started = generation
    meta = {
        "format": AUTOSAVE_FORMAT,
        "version": 1,
        "original": str(original),
        "origin": list(box_origin(box)),
        "full_shape": list(shape),
        "saved": time.time(),
        "baseline": baseline is not None,
        "depth": int(data.shape[0]),
        "generation": generation,
    }
    pages = data if baseline is None else np.concatenate([data, np.asarray(baseline, np.uint8)])
    encoded = _encode(pages, meta)  # the slow part, outside the lock: writes of one file overlap here
    if not ledger.lock.acquire(timeout=lock_timeout):
        raise VolumeError(path, f"another autosave of this file did not finish within {lock_timeout:.0f} s")
    try:
        if _superseded(ledger, path, generation, on_disk=True):
            return None
        with atomic_file(path, "wb") as handle:
            handle.write(encoded)
        ledger.written = generation
    finally:
        ledger.lock.release()
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
        generation=int(meta.get("generation") or float(meta.get("saved", 0.0)) * 1e9),
    )


def discard_autosave(
    original: str | Path, upto: int | None = None, lock_timeout: float = LOCK_TIMEOUT_S
) -> bool:
    """Remove the autosave of ``original`` once its contents are saved as a version.

    ``upto``: the generation of the saved labels' snapshot (default: now). An autosave file newer than
    that is kept; autosaves of older snapshots still in flight are skipped from now on. Returns
    whether the file is gone.
    """
    path = autosave_path(original)
    upto = next_generation() if upto is None else int(upto)
    ledger = _ledger(path)
    if not ledger.lock.acquire(timeout=lock_timeout):
        raise VolumeError(path, f"another autosave of this file did not finish within {lock_timeout:.0f} s")
    try:
        if ledger.written > upto or disk_generation(path) > upto:
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        ledger.written = max(ledger.written, upto)
    finally:
        ledger.lock.release()
    return True
