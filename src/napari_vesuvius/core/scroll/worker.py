"""The worker side of a full-scroll run: a dask worker plugin holding the models, and the block task.

The plugin is registered once per run; dask sends it to every worker (and to workers that join or are
restarted later), so each worker unpickles the models exactly once and keeps them for all its blocks.
Its ``setup`` picks the worker's device (one GPU per worker, round-robin over the visible GPUs) and
its torch thread count. Per-worker state (device, opened arrays) is kept on the plugin, keyed by the
worker's address: in a threaded cluster several workers may share one process.

:func:`run_block` is the task: read and predict one block (``core/inference/blocks.py``), write it
and its worker-owned pyramid levels, and return the coarse levels the client writes plus statistics.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import Index3, downsample_max, predict_block
from napari_vesuvius.core.inference.model_api import Normalization, WeightedModel
from napari_vesuvius.core.inference.settings import SlidingWindowSettings

from .source import (
    filesystem,
    join,
    may_hold_data,
    open_array,
    open_input_array,
    remote_url,
    squeezed,
)
from .store import OutputLayout


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs besides the models (small, picklable)."""

    input_location: str
    output_location: str
    layout: OutputLayout
    normalizations: tuple[Normalization, ...]
    window: SlidingWindowSettings
    remote: Any = None  # RemoteOptions of a URL input: retries and chunk cache (None: defaults)
    input_squeeze: tuple[int, ...] = ()  # singleton t / c axes of a 5D OME-Zarr input, read at 0


@dataclass
class BlockOutcome:
    """What a block task returns to the client."""

    index: Index3
    air: bool
    tiles_run: int = 0
    tiles_skipped: int = 0
    forward_s: float = 0.0
    elapsed_s: float = 0.0
    rss_mb: float = 0.0
    worker: str = ""
    #: flat indices of the tiles with data the block ran (global tile grid of the first model)
    tiles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: level → zlib-compressed uint8 bytes of this block's part of a client-written level
    coarse: dict[int, bytes] = field(default_factory=dict)
    #: reads of a remote input this block tried again (HTTP 429 / 5xx, timeouts); progress reports them
    remote_retries: int = 0
    #: CPU seconds of the worker process during the task (all its threads; in a threaded cluster also the
    #: other workers sharing the process)
    cpu_s: float = 0.0

    def coarse_array(self, level: int, shape: Sequence[int]) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.coarse[level]), np.uint8).reshape(tuple(shape))


@dataclass
class _WorkerState:
    device: Any
    precision: str
    arrays: dict[str, Any] = field(default_factory=dict)
    filesystem: tuple[Any, str] | None = None  # the input's fsspec filesystem and path in it
    lock: threading.Lock = field(default_factory=threading.Lock)


def _device_for(requested: str, worker_name: Any) -> Any:
    """The torch device of a worker: ``auto``/``cuda`` spread workers over the visible GPUs."""
    import torch

    from napari_vesuvius.core.inference import device as devices

    device = devices.resolve_device(requested)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        number = worker_name if isinstance(worker_name, int) else sum(str(worker_name).encode())
        device = torch.device("cuda", int(number) % torch.cuda.device_count())
    return device


class ScrollPlugin(WorkerPlugin):
    """Carries the models and the job to the workers; see the module docstring."""

    def __init__(self, name: str, job: BlockJob, members: Sequence[WeightedModel], torch_threads: int | None):
        self.name = name
        self.job = job
        self.members = list(members)
        self.torch_threads = torch_threads
        self._states: dict[str, _WorkerState] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_states"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def setup(self, worker: Any) -> None:
        self.state(worker)

    def teardown(self, worker: Any) -> None:
        self._states.pop(worker.address, None)

    def state(self, worker: Any) -> _WorkerState:
        """This worker's device and open arrays (created on first use)."""
        import torch

        from napari_vesuvius.core.inference import device as devices

        with self._lock:
            if worker.address not in self._states:
                if self.torch_threads:
                    torch.set_num_threads(int(self.torch_threads))
                device = _device_for(self.job.window.device, worker.name)
                for member in self.members:
                    for network in member.model.networks:
                        network.to(device).eval()
                precision = devices.resolve_precision(self.job.window.precision, device)
                self._states[worker.address] = _WorkerState(device, precision)
            return self._states[worker.address]

    def array(self, state: _WorkerState, location: str, mode: str) -> Any:
        with state.lock:
            if location not in state.arrays:
                if location == self.job.input_location:  # a URL: the retrying, caching store
                    array = open_input_array(location, self.job.remote)
                    state.arrays[location] = squeezed(array, self.job.input_squeeze)
                else:
                    state.arrays[location] = open_array(location, mode)
            return state.arrays[location]

    def run(self, worker: Any, index: Index3) -> BlockOutcome:
        """:meth:`_run` one block; its outcome counts the remote input's retries meanwhile."""
        state = self.state(worker)
        source = self.array(state, self.job.input_location, "r")
        stats = getattr(getattr(source, "source", source).store, "stats", None)
        before = stats.retries if stats is not None else 0
        cpu = time.process_time()
        outcome = self._run(worker, index)
        outcome.cpu_s = time.process_time() - cpu
        outcome.remote_retries = (stats.retries - before) if stats is not None else 0
        return outcome

    def _run(self, worker: Any, index: Index3) -> BlockOutcome:
        from napari_vesuvius.core.volume.io import GuardedSource

        job, layout = self.job, self.job.layout
        state = self.state(worker)
        source = self.array(state, job.input_location, "r")
        if state.filesystem is None:  # a URL: ask the retrying store (see may_hold_data)
            state.filesystem = (
                (None, "") if remote_url(job.input_location) else filesystem(job.input_location)
            )
        try:
            stored = may_hold_data(source, *state.filesystem, layout.grid.region(index))
        except OSError as error:
            raise VolumeError(job.input_location, f"cannot list the input's chunks ({error})") from error
        if not stored:
            return BlockOutcome(index=index, air=True, rss_mb=_rss_mb(), worker=str(worker.address))
        volume = GuardedSource(source, Path(job.input_location))
        block = predict_block(
            volume,
            layout.grid,
            index,
            self.members,
            job.normalizations,
            step=job.window.step,
            gaussian=job.window.gaussian,
            tta_axes=job.window.tta_axes,
            batch_size=job.window.batch_size,
            device=state.device,
            precision=state.precision,
            skip_air=job.window.skip_air,
        )
        outcome = BlockOutcome(
            index=block.index,
            air=block.air,
            tiles_run=block.tiles_run,
            tiles_skipped=block.tiles_skipped,
            forward_s=block.forward_s,
            elapsed_s=block.elapsed_s,
            rss_mb=_rss_mb(),
            worker=str(worker.address),
            tiles=block.tiles,
        )
        if block.probability is None:
            return outcome
        region = layout.grid.region(index)
        data = block.probability
        for level in range(len(layout.levels)):
            if level:
                data = downsample_max(data)
            if layout.worker_written(level):
                target = self.array(state, join(job.output_location, layout.path(level)), "r+")
                target[layout.region(region, level)] = data
            else:
                outcome.coarse[level] = zlib.compress(np.ascontiguousarray(data).tobytes(), 1)
        return outcome


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_block(plugin_name: str, index: Index3) -> BlockOutcome:
    """The dask task: compute, write and describe one block, with the models of ``plugin_name``."""
    worker = get_worker()
    return worker.plugins[plugin_name].run(worker, index)
