"""Client side of a full-scroll run: plan it, start or join a dask cluster, submit blocks, record progress.

``prepare_scroll`` opens the input, loads the models, builds the fingerprint and creates the output or
reopens it to resume (refusing a mismatch). ``iter_run_scroll`` is the job generator (``Progress`` per
finished block plus a heartbeat each second) that runs the missing blocks on a dask cluster: a
``LocalCluster`` by default (one worker per GPU, else one per four CPU cores, each with one task slot
and ``cores // workers`` torch threads) or an existing scheduler. At most a few blocks per worker are
in flight, so the client's memory does not depend on the volume size either.

Models with z-score normalisation need the whole input's mean and std: they are computed once, by the
client in one streaming (chunk-wise) pass, and stored with the output so a resumed run reuses them.

Closing the generator (cancel) stops submitting, cancels the outstanding blocks and saves the record:
the output stays resumable. A worker that dies is replaced by dask and its block re-run; when dask
gives up on a block the run stops with an error, and re-running the same command finishes it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import axis_tiles
from napari_vesuvius.core.inference.intensity import check_input_dtype
from napari_vesuvius.core.inference.model_api import Normalization, WeightedModel
from napari_vesuvius.core.inference.models import members_of
from napari_vesuvius.core.inference.settings import SlidingWindowSettings, describe_members
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.volume.base import DEFAULT_ZARR_FORMAT

from . import store
from .fingerprint import as_json, make_fingerprint
from .record import Record
from .source import InputInfo, normalize_location, open_input

DEFAULT_CHUNK = 128
#: seconds between saves of the progress record (and always at the end, on cancel and on errors)
RECORD_INTERVAL_S = 2.0


def default_block_size(patch: Sequence[int], chunk: int = DEFAULT_CHUNK) -> int:
    """8 patches wide, between 256 and 512 voxels, a multiple of the chunk.

    With step 0.5 a block recomputes ``(1 + patch / (2 · block))³`` of its tiles (1.2× for a 64³
    patch in 512³ blocks); 512³ keeps a worker's memory near 1 GB.
    """
    edge = min(512, max(256, 8 * max(int(p) for p in patch)))
    return max(chunk, -(-edge // chunk) * chunk)


@dataclass
class ScrollPlan:
    """A prepared run: input, output (created or reopened), models, settings and what is left."""

    input: InputInfo
    output: store.ScrollOutput
    members: list[WeightedModel]
    settings: dict[str, Any]  # the run's description (window, block layout, models), stored with it
    record: Record
    window: SlidingWindowSettings = field(default_factory=SlidingWindowSettings)

    @property
    def layout(self) -> store.OutputLayout:
        return self.output.layout

    @property
    def remaining(self) -> int:
        return int((~self.record.done).sum())


@dataclass
class ScrollResult:
    """What a finished (or resumed-and-finished) run reports."""

    output: str
    shape: tuple[int, ...]
    blocks_total: int
    blocks_before: int  # already recorded when this run started
    blocks_computed: int
    blocks_air: int
    elapsed_s: float
    voxels_per_s: float  # voxels of the blocks finished in this run (air included) per second
    compute_voxels_per_s: float  # voxels of the computed (non-air) blocks per second
    tiles_run: int
    tiles_skipped: int
    tiles_with_data: int  # distinct tiles holding scanned voxels that the computed blocks ran
    recompute: float  # tiles with data run, per distinct such tile (tiles on block borders run twice)
    workers: int
    max_worker_rss_mb: float
    complete: bool
    worker_cpu_s: float = 0.0  # CPU seconds of the worker processes in this run's block tasks
    settings: dict[str, Any] = field(default_factory=dict)


def prepare_scroll(
    source: str | Path,
    output: str | Path,
    models: Any,
    settings: SlidingWindowSettings | None = None,
    *,
    block_size: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    ome: bool = False,
    overwrite: bool = False,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    remote: Any = None,
    **overrides: Any,
) -> ScrollPlan:
    """Open the zarr / OME-Zarr ``source``, load ``models`` (ModelSpecs, InferenceModels or
    WeightedModels) and create or reopen ``output`` (uint8; ``ome``: OME-Zarr with a pyramid; zarr
    format 2 by default, 3 when asked), placed like the input (its scale, origin and unit).

    ``settings``: the sliding window (keyword ``overrides`` change single fields; the output is
    always uint8). Raises VolumeError naming the output when it holds a different run (see the module
    docstring). ``remote`` (:class:`~..volume.remote.RemoteOptions`): retries and chunk cache of a URL
    input, for the client's reads and the workers' alike.
    """
    window = SlidingWindowSettings.build(settings, **overrides).replace(output_dtype="uint8")
    info, _ = open_input(source, remote)
    members = members_of(models)
    check_input_dtype(members, info.dtype, info.location)  # refuse or announce an intensity conversion
    patch = [max(int(m.model.patch_size[i]) for m in members) for i in range(3)]
    block = int(block_size) if block_size else default_block_size(patch, chunk_size)
    try:
        layout = store.plan_layout(info.shape, chunk_size, (block,) * 3, ome, zarr_format)
    except ValueError as error:
        raise VolumeError(output, str(error)) from None
    # the settings that change values; batch size does not, so a resume may change it
    fingerprinted = {k: v for k, v in window.to_dict().items() if k != "batch_size"}
    described = {
        "location": info.location,
        "array": info.array_path,
        "shape": list(info.shape),
        "dtype": info.dtype,
    }
    fingerprint = make_fingerprint(
        members, settings=fingerprinted, input_info=described, layout=layout.to_dict()
    )
    location = normalize_location(output)
    out, record = store.prepare_output(
        location,
        layout,
        fingerprint,
        input_location=info.location,
        overwrite=overwrite,
        spatial=info.spatial,
    )
    run_settings = {**window.to_dict(), "block_size": block, "chunk_size": int(chunk_size)}
    run_settings["models"] = describe_members(members)
    return ScrollPlan(info, out, members, run_settings, record, window)


# ------------------------------------------------------------------------------------ normalisation
def _fit_normalizations(plan: ScrollPlan) -> list[Normalization]:
    """Each model's normalisation fitted on the whole input (z-score: one streaming pass, stored).

    A resumed run reuses the stored statistics (every block of an output is normalised alike) when
    they were fitted the same way (kind, ``use_mask``); the fingerprint refuses a different model first.
    """
    import dask.array as da

    stored = plan.record.normalizations
    if stored is not None and _same_fits(stored, [m.model.normalization for m in plan.members]):
        return [
            _normalization_from(d, m.model.normalization) for d, m in zip(stored, plan.members, strict=True)
        ]
    data = None
    fitted = []
    for member in plan.members:
        normalization = member.model.normalization
        if normalization.fitted_per_volume:
            if data is None:
                array = plan.input.open_array()
                data = (
                    da.from_array(array, chunks=array.chunks) if plan.input.squeeze else da.from_zarr(array)
                )
            normalization = normalization.fit(data)
        fitted.append(normalization)
    plan.record.normalizations = [as_json(n.to_dict()) for n in fitted]
    return fitted


def _same_fits(stored: list[dict[str, Any]], configured: Sequence[Normalization]) -> bool:
    """Whether stored fits were taken as ``configured`` would take them (records before ``use_mask``:
    unmasked)."""
    return len(stored) == len(configured) and all(
        isinstance(d, dict) and d.get("kind") == n.kind and bool(d.get("use_mask", False)) == n.use_mask
        for d, n in zip(stored, configured, strict=True)
    )


def _normalization_from(data: dict[str, Any], configured: Normalization) -> Normalization:
    from dataclasses import replace

    return replace(configured, **{k: data[k] for k in ("mean", "std", "lower", "upper") if k in data})


# -------------------------------------------------------------------------------------------- run
class _Tally:
    """Running statistics of this run (client side)."""

    def __init__(self, plan: ScrollPlan) -> None:
        self.grid = plan.layout.grid
        axes = axis_tiles(plan.layout.shape, plan.members[0].model.patch_size, plan.window.step)
        self.tiles_seen = np.zeros([len(a.starts) for a in axes], bool)  # distinct tiles with data run
        self.tile_runs = 0  # ... counted once per block that ran them
        self.started = time.perf_counter()
        self.computed: list[tuple[int, int, int]] = []
        self.air = self.tiles_run = self.tiles_skipped = 0
        self.voxels = self.compute_voxels = 0
        self.rss = 0.0
        self.retries = 0  # remote input reads tried again by the workers
        self.cpu_s = 0.0  # worker CPU seconds of the finished tasks

    def add(self, outcome: Any) -> None:
        region = self.grid.region(outcome.index)
        voxels = int(np.prod([r.stop - r.start for r in region]))
        self.voxels += voxels
        self.rss = max(self.rss, outcome.rss_mb)
        self.retries += getattr(outcome, "remote_retries", 0)
        self.cpu_s += getattr(outcome, "cpu_s", 0.0)
        if outcome.air:
            self.air += 1
            return
        self.computed.append(outcome.index)
        self.compute_voxels += voxels
        self.tile_runs += len(outcome.tiles)
        self.tiles_seen.flat[outcome.tiles] = True
        self.tiles_run += outcome.tiles_run
        self.tiles_skipped += outcome.tiles_skipped

    @property
    def finished(self) -> int:
        return self.air + len(self.computed)

    def result(self, plan: ScrollPlan, before: int, workers: int, complete: bool) -> ScrollResult:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return ScrollResult(
            output=plan.output.location,
            shape=plan.layout.shape,
            blocks_total=self.grid.total,
            blocks_before=before,
            blocks_computed=len(self.computed),
            blocks_air=self.air,
            elapsed_s=elapsed,
            voxels_per_s=self.voxels / elapsed,
            compute_voxels_per_s=self.compute_voxels / elapsed,
            tiles_run=self.tiles_run,
            tiles_skipped=self.tiles_skipped,
            tiles_with_data=int(self.tiles_seen.sum()),
            recompute=self.tile_runs / max(1, int(self.tiles_seen.sum())),
            workers=workers,
            max_worker_rss_mb=self.rss,
            complete=complete,
            worker_cpu_s=self.cpu_s,
            settings=plan.settings,
        )

    def message(self) -> str:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        air = f"air {100 * self.air / self.finished:.0f}%" if self.finished else "air -"
        rate, busy = self.voxels / elapsed / 1e6, self.compute_voxels / elapsed / 1e6
        retries = f" ({self.retries} HTTP retries)" if self.retries else ""
        return f"blocks: {air}, {rate:.1f} Mvox/s ({busy:.2f} non-air){retries}"


def iter_run_scroll(
    plan: ScrollPlan,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool = True,
    torch_threads: int | None = None,
) -> Generator[Progress, None, ScrollResult]:
    """Job: run the blocks the output still lacks on a dask cluster; returns a :class:`ScrollResult`.

    ``scheduler``: address of an existing cluster, else a ``LocalCluster`` of ``workers`` workers
    (``processes=False``: threads in this process, for tests). See the module docstring.
    """
    from .cluster import BlockStream, Cluster, block_result
    from .worker import ScrollPlugin, run_block

    output, layout, record = plan.output, plan.layout, plan.record
    grid = layout.grid
    before = int(record.done.sum())
    todo = [index for index in grid.indices() if not record.done[index]]
    tally = _Tally(plan)
    if todo:
        yield Progress(0, len(todo), f"{before}/{grid.total} blocks already done; starting the cluster")
    else:
        yield Progress(1, 1, f"all {grid.total} blocks already done")
    cluster: Cluster | None = None
    stream: BlockStream | None = None
    n_workers = 0
    try:
        if todo:
            cluster = Cluster(scheduler, workers, processes, plan.window.device, torch_threads)
            n_workers = cluster.workers
            job = _block_job(plan, _fit_normalizations(plan))
            output.write_record(record, settings=plan.settings)
            plugin = ScrollPlugin(
                f"vesuvius-scroll-{uuid.uuid4().hex[:12]}", job, plan.members, cluster.torch_threads
            )
            cluster.register(plugin)
            coarse = {k: output.level(k) for k in range(len(layout.levels)) if not layout.worker_written(k)}
            stream = BlockStream(cluster.client, run_block, todo, window=2 * cluster.slots)
            tally.started = saved = time.perf_counter()
            while stream:
                for index, future in stream.poll(1.0, plugin.name):
                    outcome = block_result(future, index, output.location)
                    for level, array in coarse.items():
                        if level in outcome.coarse:
                            part = layout.region(grid.region(index), level)
                            array[part] = outcome.coarse_array(level, [s.stop - s.start for s in part])
                    record.done[index] = True
                    record.air[index] = outcome.air
                    tally.add(outcome)
                if time.perf_counter() - saved > RECORD_INTERVAL_S:
                    output.write_record(record)
                    saved = time.perf_counter()
                yield Progress(tally.finished, len(todo), tally.message())
        complete = bool(record.done.all())
        output.write_record(record, complete=complete, settings=plan.settings)
    finally:
        if stream is not None:
            stream.cancel()
        if not record.done.all():
            try:
                output.write_record(record, complete=False)
            except Exception as error:  # keep the original error; blocks since the last save re-run
                logging.getLogger(__name__).warning(
                    "%s: progress record not saved: %s", output.location, error
                )
        if cluster is not None:
            cluster.close()
    return tally.result(plan, before, n_workers, complete)


def _block_job(plan: ScrollPlan, normalizations: Sequence[Normalization]) -> Any:
    from .worker import BlockJob

    return BlockJob(
        input_location=plan.input.array_location,
        output_location=plan.output.location,
        layout=plan.layout,
        normalizations=tuple(normalizations),
        window=plan.window,
        remote=plan.input.remote,
        input_squeeze=plan.input.squeeze,
    )


def predict_scroll(
    source: str | Path,
    output: str | Path,
    models: Any,
    settings: SlidingWindowSettings | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    processes: bool = True,
    torch_threads: int | None = None,
    **options: Any,
) -> Generator[Progress, None, ScrollResult]:
    """Job: :func:`prepare_scroll` (``options``: settings, block layout, overrides) then
    :func:`iter_run_scroll`."""
    yield Progress(0, 1, "loading the model(s) and opening the output")
    plan = prepare_scroll(source, output, models, settings, **options)
    return (
        yield from iter_run_scroll(
            plan, scheduler=scheduler, workers=workers, processes=processes, torch_threads=torch_threads
        )
    )
