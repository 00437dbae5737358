"""The metric's memory: what scoring one volume costs, how much may be used, and refusing up front.

Scoring works on the **foreground box**: the bounding box of ``prediction ∪ label surface`` (after
the ignore label), grown by one voxel and clipped to the volume; nothing outside it is held in memory
(:mod:`.inputs` reads both volumes block by block). With ``V`` the voxels of that box, ``F`` the
foreground voxels (prediction + label), ``U = min(V, F)`` and ``S = Σ min(V, 4·F_side)`` the surfels
(surface corners) of both masks, the peak above the inputs is at most about::

    2·V                       the two cropped boolean masks, held throughout
  + max(
      reading      the blocks of both volumes being read (up to 3 at once, on 2 threads) and their masks
      SurfaceDice  6·V + 10·S      corner codes, surfel maps, 5 bytes per surfel and its work list
      VOI          5·V + 12·U      the union, uint32 component labels, the pair table
      TopoScore    per 2×2×2 tile running (its own foreground box ``T``, foreground ``F_t``):
                   max(28·T + 14·F_t,  11·T + 8·F_t + 24·w·F_t)
    ) + 64 MB                 allocator and bookkeeping slack (:data:`READ_OVERHEAD`)

where ``w`` is the number of 64-bit words of random cycles TopoScore's dimension-1 sweep uses: 4 to
start, up to one per 64 tunnels of a tile (the only part that is not bounded per voxel: a tile full
of tunnels needs more). A mostly-background volume therefore costs little whatever its size; a dense
box of thin sheets (F ≈ 0.4·V) peaks near 27 bytes per box voxel with two TopoScore workers.

Measured (``/usr/bin/time -v napari-vesuvius score pred.tif label.tif``, max RSS above the ~208 MB of
scoring a tiny pair, 2 cores): a 1024³ pair with a 64³ foreground region: 20 MB (the old full-volume
computation took ~9.7 bytes per voxel, 1.2 GB already at 512³); a dense 256³ pair of wavy sheets
(F = 0.43·V): 437 MB = 27 bytes per voxel with two TopoScore workers (estimate for one: 29; the old
code took 34).

TopoScore tiles run on as many threads as fit the limit (:class:`ByteBudget`); a tile that needs more
words than the limit allows is refused then (:class:`MetricMemoryError`). The limit is
``memory_limit=`` / ``--memory-limit``, else ``$NAPARI_VESUVIUS_MEMORY_LIMIT`` (bytes, or ``8G``,
``512M``...), else ``MemAvailable`` of ``/proc/meminfo`` (or ``os.sysconf``). When the estimate with one
worker exceeds it, scoring is refused before anything is allocated, with the estimate in the message.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import VolumeError

MEMORY_LIMIT_ENV = "NAPARI_VESUVIUS_MEMORY_LIMIT"

#: Coefficients of the formula in the module docstring (bytes per box voxel, per foreground voxel...):
#: upper bounds of the peaks measured term by term on random noise, solid blocks and sheet-like volumes
#: (tests/test_metric_memory.py checks a measured peak against the estimate).
MASK_BYTES_PER_VOXEL = 2
SURFACE_DICE_BYTES = (6, 10)  # per V, per surfel
SURFELS_PER_FOREGROUND = 4
VOI_BYTES = (5, 12)  # per V, per union voxel
TOPO_TILE_BYTES = (28, 14)  # per T, per F_t: components, cavities, dimension 0 and 2
TOPO_SWEEP_BYTES = (11, 8)  # per T, per F_t: what the dimension-1 sweep keeps besides its words
#: Dimension-1 random cycles, per foreground voxel and 64-bit word: the y- and z-edge bits kept for the
#: sweep plus the accumulator ``_betti_dim1.random_cycles`` fills while building them; and the words a
#: sweep starts with (``_betti_native._START_WORDS``).
TOPO_WORD_BYTES = 24
TOPO_START_WORDS = 4
#: Bytes the interpreter's allocator and the per-block bookkeeping add on top (arrays aside).
READ_OVERHEAD = 64 * 1024**2

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class MetricMemoryError(VolumeError):
    """Scoring would need more memory than the limit allows; the message holds the estimate."""


def parse_bytes(text: str | int | float) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5 GB"``, ``"2000000"`` → bytes (binary units); ValueError otherwise."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*", str(text).upper())
        if match is None:
            raise ValueError(f"not a size in bytes: {text!r} (use e.g. 8G, 512M or a number of bytes)")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a memory limit must be positive, got {text!r}")
    return int(value)


def available_memory() -> int | None:
    """Memory the system can give without swapping: ``MemAvailable`` (Linux), else free pages, else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit(explicit: int | str | None = None) -> int | None:
    """The bytes scoring may use: ``explicit``, else ``$NAPARI_VESUVIUS_MEMORY_LIMIT``, else available."""
    if explicit is not None:
        return parse_bytes(explicit)
    env = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if env:
        try:
            return parse_bytes(env)
        except ValueError as error:
            raise VolumeError(None, f"{MEMORY_LIMIT_ENV}: {error}") from error
    return available_memory()


def surface_dice_bytes(box_voxels: int, pred_voxels: int, label_voxels: int) -> int:
    """SurfaceDice of masks of ``box_voxels`` with these foreground voxels (surfels bounded per side)."""
    surfels = sum(min(box_voxels, SURFELS_PER_FOREGROUND * int(n)) for n in (pred_voxels, label_voxels))
    return SURFACE_DICE_BYTES[0] * box_voxels + SURFACE_DICE_BYTES[1] * surfels


def voi_bytes(box_voxels: int, foreground: int) -> int:
    """VOI of masks of ``box_voxels`` with ``foreground`` voxels (prediction + label)."""
    return VOI_BYTES[0] * box_voxels + VOI_BYTES[1] * min(box_voxels, foreground)


def topo_sweep_bytes(voxels: int, foreground: int, word_bytes: int) -> int:
    """A TopoScore tile during its dimension-1 sweep, whose random cycles take ``word_bytes``."""
    per_voxel, per_fg = TOPO_SWEEP_BYTES
    return per_voxel * voxels + per_fg * foreground + word_bytes


def topo_tile_bytes(voxels: int, foreground: int, words: int = TOPO_START_WORDS) -> int:
    """One TopoScore tile (``voxels`` in its box, ``foreground`` voxels) with ``words`` of random cycles."""
    per_voxel, per_fg = TOPO_TILE_BYTES
    sweep = topo_sweep_bytes(voxels, foreground, TOPO_WORD_BYTES * words * foreground)
    return max(per_voxel * voxels + per_fg * foreground, sweep)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one score above its inputs, by part (see the module docstring)."""

    box_voxels: int
    foreground: int
    masks: int
    surface_dice: int
    voi: int
    topo_tile: int
    #: one block of each volume being read, and its masks (see :func:`..value_checks.block_bytes`)
    reading: int = 0

    @property
    def peak(self) -> int:
        terms = max(self.surface_dice, self.voi, self.topo_tile)
        return self.masks + max(terms, self.reading) + READ_OVERHEAD

    @property
    def bytes_per_voxel(self) -> float:
        return self.peak / max(self.box_voxels, 1)


def estimate(
    box_voxels: int,
    pred_voxels: int,
    label_voxels: int,
    tiles: Sequence[tuple[int, int]],
    reading: int = 0,
) -> MemoryEstimate:
    """Estimate from the foreground box's voxels, the prediction's and the label's foreground voxels,
    per non-empty TopoScore tile ``(tile box voxels, tile foreground voxels)`` (the largest counts) and
    the bytes of reading one block of both volumes (``reading``)."""
    v = int(box_voxels)
    f = int(pred_voxels) + int(label_voxels)
    return MemoryEstimate(
        box_voxels=v,
        foreground=f,
        masks=MASK_BYTES_PER_VOXEL * v,
        surface_dice=surface_dice_bytes(v, int(pred_voxels), int(label_voxels)),
        voi=voi_bytes(v, f),
        topo_tile=max((topo_tile_bytes(t, n) for t, n in tiles), default=0),
        reading=int(reading),
    )


def gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def check_fits(estimate: MemoryEstimate, limit: int | None, box: Sequence[int], where: object = None) -> None:
    """Raise :class:`MetricMemoryError` (before anything is allocated) when the estimate exceeds ``limit``."""
    if limit is None or estimate.peak <= limit:
        return
    raise MetricMemoryError(
        where,  # type: ignore[arg-type]
        f"scoring needs about {gib(estimate.peak)} ({estimate.bytes_per_voxel:.1f} bytes per voxel of the "
        f"foreground box {tuple(int(n) for n in box)}, {estimate.foreground} foreground voxels) but the "
        f"memory limit is {gib(limit)}; free memory, score on a machine with more, or raise the limit "
        f"with --memory-limit / {MEMORY_LIMIT_ENV}",
    )


class ByteBudget:
    """A counting semaphore over bytes: TopoScore tiles start only while their estimate fits.

    A job that needs more than the whole limit still runs, alone (the up-front check decided it fits
    well enough); ``grow`` adds bytes to a running job, refusing only what cannot fit even alone.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self.running = 0
        self._cond = threading.Condition()

    def acquire(self, nbytes: int) -> None:
        with self._cond:
            while self.limit is not None and self.running and self.used + nbytes > self.limit:
                self._cond.wait()
            self.used += nbytes
            self.running += 1

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.used -= nbytes
            self.running -= 1
            self._cond.notify_all()

    @contextmanager
    def held(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` while the block runs (waiting until they fit, see :meth:`acquire`)."""
        self.acquire(nbytes)
        try:
            yield
        finally:
            self.release(nbytes)

    def grow(self, held: int, total: int, what: str) -> int:
        """Raise a running job's share from ``held`` to ``total`` bytes; returns the new share."""
        with self._cond:
            if self.limit is not None and total > self.limit:
                raise MetricMemoryError(
                    None,
                    f"{what} needs about {gib(total)}, more than the memory limit of {gib(self.limit)}; "
                    f"score on a machine with more memory or raise the limit with --memory-limit / "
                    f"{MEMORY_LIMIT_ENV}",
                )
            self.used += max(0, total - held)
            return max(held, total)
