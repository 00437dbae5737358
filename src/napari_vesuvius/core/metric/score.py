"""The leaderboard score of one volume (and the mean over many), with its per-term breakdown.

``score = 0.30·TopoScore + 0.35·SurfaceDice@2 + 0.35·VOI_score``, clipped to [0, 1], after the official
preprocessing: shapes must match and be 3D; where the label is 2 (ignore) both volumes are set to 0;
foreground is ``x != 0`` with NaN counted as 0. :func:`score_volume` first checks the inputs like
``export`` does (a 0/1 prediction mask, 0/1/2 labels; ``strict=False`` skips that), reads them block by
block keeping only the foreground box (:mod:`.inputs`), and refuses up front what cannot fit in memory
(:mod:`.memory`). The three terms are independent and can run in parallel threads (``parallel=True``);
on the 2-core reference machine that was slower than running them one after the other (TopoScore
already spreads its tiles over the cores), so serial is the default.
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
from ..value_checks import block_bytes
from .inputs import check_pair, foreground, load, scan
from .surface_dice import surface_dice
from .topo import Frame
from .voi import voi

#: Weights of (TopoScore, SurfaceDice, VOI_score) in the leaderboard score.
SCORE_WEIGHTS = (0.30, 0.35, 0.35)
#: The weights as the official toolkit applies them: renormalised to sum to 1 (in float arithmetic).
_APPLIED_WEIGHTS = tuple(w / sum(SCORE_WEIGHTS) for w in SCORE_WEIGHTS)
#: The floating-point terms of a score, in the order of the CLI/JSON output.
SCORE_KEYS = ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge")
TOPO_BACKENDS = ("auto", "native", "betti_matching")

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


def _topo_term(
    pred: np.ndarray,
    label: np.ndarray,
    backend: str,
    frame: Frame | None = None,
    memory_limit: int | None = None,
) -> Any:
    from .topo import topo_score  # imported lazily: torch-free but heavy, and optional backends

    return topo_score(pred, label, backend=backend, frame=frame, memory_limit=memory_limit)


def score_masks(
    pred: np.ndarray,
    label: np.ndarray,
    *,
    tolerance: float = 2.0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    topo_backend: str = "auto",
    parallel: bool = False,
    frame: Frame | None = None,
    memory_limit: int | None = None,
) -> ScoreResult:
    """Score two boolean masks that already went through :func:`prepare_masks`.

    ``frame`` says where cropped masks lie in their full volume (TopoScore tiles the full volume);
    ``memory_limit`` bounds the bytes TopoScore's concurrent tiles may use (see :mod:`.memory`).
    """
    if topo_backend not in TOPO_BACKENDS:
        raise ValueError(f"topo_backend must be one of {TOPO_BACKENDS}, got {topo_backend!r}")
    timings: dict[str, float] = {}

    def timed(name: str, func: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            start = time.perf_counter()
            try:
                return func()
            finally:
                timings[name] = time.perf_counter() - start

        return run

    jobs = {
        "topo": timed(
            "topo",
            lambda: _topo_term(pred, label, topo_backend, frame=frame, memory_limit=memory_limit),
        ),
        "surface_dice": timed(
            "surface_dice", lambda: surface_dice(pred, label, tolerance=tolerance, spacing=spacing)
        ),
        "voi": timed("voi", lambda: voi(pred, label)),
    }
    if parallel:
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="score") as pool:
            futures = {name: pool.submit(job) for name, job in jobs.items()}
            values = {name: future.result() for name, future in futures.items()}
    else:
        values = {name: job() for name, job in jobs.items()}

    topo, sd, v = values["topo"], float(values["surface_dice"]), values["voi"]
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
    parallel: bool = False,
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
    ``names`` (prediction, label) are the files that errors name. ``timings`` holds seconds for
    ``prepare``, ``topo``, ``surface_dice``, ``voi`` and ``total``; ``parallel=True`` runs the three
    terms in threads (their timings then overlap).
    """
    from .memory import MetricMemoryError, check_fits, estimate
    from .memory import memory_limit as resolve_limit

    start = time.perf_counter()
    found = scan(pred, label, strict=strict, names=names)
    limit = resolve_limit(memory_limit)
    reading = block_bytes([pred, label])
    need = estimate(found.box_voxels, found.pred_voxels, found.label_voxels, found.tiles, reading)
    check_fits(need, limit, found.box_shape, names[0])
    masks = load(pred, label, found)
    prepared = time.perf_counter()
    topo_limit = None
    if limit is not None:
        others = need.surface_dice + need.voi if parallel else 0
        topo_limit = max(limit - need.masks - others, 0)
    try:
        result = score_masks(
            masks.pred,
            masks.label,
            tolerance=tolerance,
            spacing=spacing,
            topo_backend=topo_backend,
            parallel=parallel,
            frame=masks.frame,
            memory_limit=topo_limit,
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
        )
    )
