"""Running the score's independent pieces of work on a few threads: largest first.

The score is made of independent jobs: TopoScore's tiles (numba kernels that release the GIL),
SurfaceDice and VOI (numpy and cc3d). On a machine with few cores the score is fastest when all of them
share one pool, started in order of their estimated work (longest-processing-time first), so that the
cores finish together instead of one waiting for the last tile while the other term runs alone.
Results never depend on the order or the number of threads: every job is a pure function of its
inputs, and the callers add the jobs' results up in the jobs' order.

Memory is bounded by the jobs themselves (each holds its estimate of a shared
:class:`~.memory.ByteBudget` while it runs), not here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

#: Relative work per voxel of each kind of job (CPU seconds per voxel, measured on the 320³ benchmark
#: pair, order of magnitude only): a TopoScore tile per voxel of its box, SurfaceDice and VOI per voxel
#: of the foreground box. Used only to order the jobs.
COST_PER_VOXEL = {"topo": 11.0, "surface_dice": 1.0, "voi": 1.5}


@dataclass(frozen=True)
class Job:
    """One independent piece of the score: ``term`` names what it belongs to (timings), ``cost`` orders it."""

    term: str
    run: Callable[[], Any]
    cost: float = 0.0


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def run_jobs(jobs: Sequence[Job], workers: int | None = None) -> tuple[list[Any], dict[str, float]]:
    """Run ``jobs`` on up to ``workers`` threads (default: the CPUs; 1: here, one after the other).

    Returns the results in the order of ``jobs`` and, per term, the seconds from its first job's start
    to its last job's end (terms that ran side by side overlap).
    """
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(jobs)

    def timed(index: int) -> Any:
        start = time.perf_counter()
        try:
            return jobs[index].run()
        finally:
            spans[index] = (start, time.perf_counter())

    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)  # stable: ties keep their order
    n_workers = max(1, min(len(jobs), workers if workers is not None else default_workers()))
    results: list[Any] = [None] * len(jobs)
    if n_workers == 1:
        for i in order:
            results[i] = timed(i)
    else:
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="score") as pool:
            futures = {i: pool.submit(timed, i) for i in order}
            try:
                for i, future in futures.items():
                    results[i] = future.result()
            except BaseException:
                for future in futures.values():  # a failed job: do not start the others
                    future.cancel()
                raise
    seconds: dict[str, float] = {}
    for term in dict.fromkeys(job.term for job in jobs):
        mine = [spans[i] for i, job in enumerate(jobs) if job.term == term]
        seconds[term] = max(end for _, end in mine) - min(start for start, _ in mine)
    return results, seconds
