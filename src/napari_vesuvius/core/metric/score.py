"""The leaderboard score of one volume (and the mean over many), with its per-term breakdown.

``score = 0.30·TopoScore + 0.35·SurfaceDice@2 + 0.35·VOI_score``, clipped to [0, 1], after the official
preprocessing: shapes must match and be 3D; where the label is 2 (ignore) both volumes are set to 0;
foreground is ``x != 0`` with NaN counted as 0. :func:`score_volume` first checks the inputs like
``export`` does (a 0/1 prediction mask, 0/1/2 labels; ``strict=False`` skips that), reads them block by
block keeping only the foreground box (:mod:`.inputs`), and refuses up front what cannot fit in memory
(:mod:`.memory`). TopoScore's tiles, SurfaceDice and VOI are independent jobs sharing one thread pool,
largest first (:mod:`.jobs`), so that every core stays busy until the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Progress, run_job
from .inputs import check_pair, foreground, load, reading_bytes, scan
from .jobs import COST_PER_VOXEL, Job, run_jobs
from .surface_dice import surface_dice
from .topo import Frame, TileBox
from .voi import voi

#: Weights of (TopoScore, SurfaceDice, VOI_score) in the leaderboard score.
SCORE_WEIGHTS = (0.30, 0.35, 0.35)
#: The weights as the official toolkit applies them: renormalised to sum to 1 (in float arithmetic).
_APPLIED_WEIGHTS = tuple(w / sum(SCORE_WEIGHTS) for w in SCORE_WEIGHTS)
#: The floating-point terms of a score, in the order of the CLI/JSON output.
SCORE_KEYS = ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge")
TOPO_BACKENDS = ("auto", "native", "betti_matching")
#: At most this many bytes (and a quarter of the memory limit) of the blocks' foreground are kept
#: while scanning, so that loading the foreground box reads nothing twice (see :func:`.inputs.scan`).
_KEEP_CAP = 2 * 1024**3

ArrayLike = Any
Source = Any  # an array (numpy, dask, anything np.asarray takes) or a zero-argument callable returning one


@dataclass(frozen=True)
class ScoreResult:
    """Leaderboard score of one volume with every term, TopoScore counts per dimension, and timings."""

    score: float
    topo: float
    surface_dice: float
    voi_score: float
    voi_split: float
    voi_merge: float
    topo_counts: dict[int, dict[str, int]]
    topo_f1: dict[int, float | None]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with exactly the keys of the CLI output (dimension keys as strings)."""
        out: dict[str, Any] = {key: float(getattr(self, key)) for key in SCORE_KEYS}
        out["topo_counts"] = {str(k): dict(v) for k, v in sorted(self.topo_counts.items())}
        return out


@dataclass(frozen=True)
class ScoreSummary:
    """Scores of several volumes, by id, and their mean (TopoScore counts are summed, not averaged)."""

    ids: list[str]
    results: list[ScoreResult]

    @property
    def mean(self) -> dict[str, Any]:
        """Mean of every float term over the volumes and total TopoScore counts (NaN when empty)."""
        out: dict[str, Any] = {
            key: float(np.mean([getattr(r, key) for r in self.results])) if self.results else float("nan")
            for key in SCORE_KEYS
        }
        totals: dict[int, dict[str, int]] = {}
        for result in self.results:
            for dim, counts in result.topo_counts.items():
                slot = totals.setdefault(dim, {"m": 0, "p": 0, "g": 0})
                for name in slot:
                    slot[name] += int(counts.get(name, 0))
        out["topo_counts"] = {str(k): v for k, v in sorted(totals.items())}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "volumes": [{"id": i, **r.to_dict()} for i, r in zip(self.ids, self.results, strict=True)],
            "mean": {"id": "mean", "n_volumes": len(self.results), **self.mean},
        }


def prepare_masks(pred: ArrayLike, label: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Official preprocessing of whole volumes: check shapes, drop ignore voxels (label == 2) from both,
    binarise (``x != 0``, NaN as 0). Any numeric dtype; no value check (see :func:`score_volume`).

    Raises :class:`VolumeError` for non-3D input or a shape mismatch (before reading lazy arrays).
    """
    check_pair(pred, label, strict=False)
    return foreground(np.asarray(pred), np.asarray(label))


def _warm_up() -> None:
    from ._betti_native import warm_up

    warm_up()


def score_masks(
    pred: np.ndarray,
    label: np.ndarray,
    *,
    tolerance: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    topo_backend: str = "auto",
    workers: int | None = None,
    frame: Frame | None = None,
    memory_limit: int | None = None,
    tile_boxes: Sequence[TileBox] | None = None,
) -> ScoreResult:
    """Score two boolean masks that already went through :func:`prepare_masks`.

    TopoScore's tiles, SurfaceDice and VOI run as independent jobs on one pool of ``workers`` threads
    (default: the CPUs; 1: one after the other; see :mod:`.jobs`), largest first; the result does not
    depend on it. ``frame`` says where cropped masks lie in their full volume (TopoScore tiles the full
    volume) and ``tile_boxes`` are the tiles' computation boxes when already known (see
    :func:`.inputs.scan`); ``memory_limit`` bounds the bytes the running jobs may hold together (see
    :mod:`.memory`). ``timings`` holds each term's seconds from its first job's start to its last's end.
    """
    from .memory import ByteBudget, surface_dice_bytes, voi_bytes
    from .topo import sum_counts, topo_jobs, topo_result  # lazily: torch-free but heavy (numba)

    if topo_backend not in TOPO_BACKENDS:
        raise ValueError(f"topo_backend must be one of {TOPO_BACKENDS}, got {topo_backend!r}")
    budget = ByteBudget(memory_limit)
    sd_bytes = v_bytes = 0
    if memory_limit is not None:
        n_pred, n_label = int(np.count_nonzero(pred)), int(np.count_nonzero(label))
        sd_bytes = surface_dice_bytes(pred.size, n_pred, n_label)
        v_bytes = voi_bytes(pred.size, n_pred + n_label)

    def sd_job() -> float:
        with budget.held(sd_bytes):
            return float(surface_dice(pred, label, tolerance=tolerance, spacing=spacing))

    def voi_job() -> Any:
        with budget.held(v_bytes):
            return voi(pred, label)

    tiles = topo_jobs(pred, label, budget=budget, backend=topo_backend, frame=frame, boxes=tile_boxes)
    jobs = [
        *tiles,
        Job("surface_dice", sd_job, COST_PER_VOXEL["surface_dice"] * pred.size),
        Job("voi", voi_job, COST_PER_VOXEL["voi"] * pred.size),
    ]
    if topo_backend == "betti_matching":
        workers = 1  # the reference module holds the GIL: threads would only add memory
    results, timings = run_jobs(jobs, workers)
    topo = topo_result(sum_counts(results[: len(tiles)]))
    timings.setdefault("topo", 0.0)
    sd, v = results[len(tiles)], results[len(tiles) + 1]
    w_topo, w_sd, w_voi = _APPLIED_WEIGHTS
    total = w_topo * float(topo.score) + w_sd * sd + w_voi * v.score
    return ScoreResult(
        score=float(min(1.0, max(0.0, total))),
        topo=float(topo.score),
        surface_dice=sd,
        voi_score=float(v.score),
        voi_split=float(v.split),
        voi_merge=float(v.merge),
        topo_counts={int(k): {n: int(c) for n, c in counts.items()} for k, counts in topo.counts.items()},
        topo_f1={int(k): (None if f is None else float(f)) for k, f in topo.f1.items()},
        timings=timings,
    )


def score_volume(
    pred: ArrayLike,
    label: ArrayLike,
    *,
    tolerance: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    topo_backend: str = "auto",
    workers: int | None = None,
    strict: bool = True,
    memory_limit: int | str | None = None,
    names: tuple[str | Path | None, str | Path | None] = (None, None),
) -> ScoreResult:
    """Leaderboard score of a prediction against a label volume (numpy, dask or zarr-like; 3D).

    ``strict`` (the default) checks the inputs like ``export`` does: the prediction must be a bool or
    integer mask holding only 0 and 1 (floats and 0/255 masks are refused with a hint), the label only
    0 (background), 1 (surface) and 2 (ignore). ``strict=False`` is the official toolkit's permissive
    preprocessing instead: any numeric dtype, ``x != 0`` is foreground, NaN counts as 0.

    Both volumes are read block by block and only the foreground box is held (see :mod:`.inputs`);
    the peak memory is estimated first and scoring is refused when it exceeds ``memory_limit`` (bytes
    or ``"8G"``; default ``$NAPARI_VESUVIUS_MEMORY_LIMIT`` or the available memory; see :mod:`.memory`).
    ``names`` (prediction, label) are the files that errors name. ``workers``: threads (see
    :func:`score_masks`). ``timings`` holds seconds for ``prepare``, ``topo``, ``surface_dice``,
    ``voi`` (which overlap when they run side by side) and ``total``.
    """
    from .memory import MetricMemoryError, check_fits, estimate
    from .memory import memory_limit as resolve_limit

    start = time.perf_counter()
    warming = None
    if topo_backend != "betti_matching":  # load the kernels while the volumes are read
        warming = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-warm-up")
        warmed = warming.submit(_warm_up)
        warming.shutdown(wait=False)
    limit = resolve_limit(memory_limit)
    keep = _KEEP_CAP if limit is None else min(limit // 4, _KEEP_CAP)
    found = scan(pred, label, strict=strict, names=names, keep_bytes=keep)
    reading = reading_bytes(pred, label)
    need = estimate(found.box_voxels, found.pred_voxels, found.label_voxels, found.tile_sizes, reading)
    check_fits(need, limit, found.box_shape, names[0])
    masks = load(pred, label, found)
    if warming is not None:
        warmed.result()
    prepared = time.perf_counter()
    try:
        result = score_masks(
            masks.pred,
            masks.label,
            tolerance=tolerance,
            spacing=spacing,
            topo_backend=topo_backend,
            workers=workers,
            frame=masks.frame,
            memory_limit=None if limit is None else max(limit - need.masks, 0),
            tile_boxes=found.tiles,
        )
    except MetricMemoryError as error:
        if error.path is None and names[0] is not None:
            raise MetricMemoryError(names[0], error.problem) from error
        raise
    result.timings["prepare"] = prepared - start
    result.timings["total"] = time.perf_counter() - start
    return result


def _normalise_pairs(pairs: Iterable[Any]) -> Iterator[tuple[str, Source, Source]]:
    for index, item in enumerate(pairs):
        if len(item) == 3:
            yield str(item[0]), item[1], item[2]
        elif len(item) == 2:
            yield str(index), item[0], item[1]
        else:
            raise ValueError(f"pair {index}: expected (pred, label) or (id, pred, label), not {len(item)}")


def _resolve(source: Source) -> ArrayLike:
    return source() if callable(source) else source


def iter_score_many(
    pairs: Iterable[Any],
    *,
    tolerance: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    topo_backend: str = "auto",
    on_result: Callable[[str, ScoreResult], Any] | None = None,
    strict: bool = True,
    memory_limit: int | str | None = None,
    workers: int | None = None,
) -> Iterator[Progress]:
    """Job generator scoring ``(pred, label)`` or ``(id, pred, label)`` pairs; returns a ScoreSummary.

    ``pred``/``label`` may be arrays or zero-argument callables that load them, so only one pair is in
    memory at a time. ``on_result(id, result)`` is called after each volume (e.g. to stream JSON lines).
    """
    items = list(_normalise_pairs(pairs))
    ids: list[str] = []
    results: list[ScoreResult] = []
    yield Progress(0, len(items), "scoring")
    for done, (item_id, pred, label) in enumerate(items, start=1):
        result = score_volume(
            _resolve(pred),
            _resolve(label),
            tolerance=tolerance,
            spacing=spacing,
            topo_backend=topo_backend,
            strict=strict,
            memory_limit=memory_limit,
            workers=workers,
        )
        ids.append(item_id)
        results.append(result)
        if on_result is not None:
            on_result(item_id, result)
        yield Progress(done, len(items), f"{item_id}: {result.score:.4f}")
    return ScoreSummary(ids=ids, results=results)


def score_many(
    pairs: Iterable[Any],
    *,
    tolerance: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    topo_backend: str = "auto",
    strict: bool = True,
    memory_limit: int | str | None = None,
    workers: int | None = None,
) -> ScoreSummary:
    """Score several volumes synchronously (see :func:`iter_score_many`); ``.mean`` holds the mean."""
    return run_job(
        iter_score_many(
            pairs,
            tolerance=tolerance,
            spacing=spacing,
            topo_backend=topo_backend,
            strict=strict,
            memory_limit=memory_limit,
            workers=workers,
        )
    )
