"""The dask cluster of a full-scroll run: start or join one, stream blocks through it, shut it down.

A ``LocalCluster`` by default: one worker per GPU when CUDA is used, else one per four CPU cores; each
worker runs one block at a time (memory is bounded by the block size) with ``cores // workers`` torch
threads. Worker processes keep freed memory for reuse (glibc settings of ``core/heap.py``, as the
in-memory ``predict`` command does): dask's default ``MALLOC_TRIM_THRESHOLD_`` made every activation
a fresh ``mmap`` and a block's forwards twice as slow. ``--scheduler ADDRESS`` joins an existing
cluster instead (its workers keep their own thread and heap settings: start them with
``heap.heap_environment(True)`` in their environment for the same speed). The client is never made
the process-wide dask default, so dask arrays elsewhere in the process (napari layers) keep computing
locally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from napari_vesuvius.core.errors import VesuviusError


def default_workers(device: str) -> int:
    """One worker per visible GPU (CUDA), else one per four CPU cores (at least one)."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // 4)


class Cluster:
    """A dask client plus the ``LocalCluster`` it started (None when joining a scheduler)."""

    def __init__(
        self,
        scheduler: str | None,
        workers: int | None,
        processes: bool,
        device: str,
        torch_threads: int | None,
    ) -> None:
        from distributed import Client, LocalCluster

        self.local = None
        self.torch_threads = torch_threads
        if scheduler:
            try:
                self.client = Client(scheduler, set_as_default=False, timeout="20s")
            except OSError as error:
                raise VesuviusError(
                    f"cannot connect to the dask scheduler at {scheduler}: {error}"
                ) from error
            try:
                self.client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                self.close()
                raise VesuviusError(
                    f"the dask scheduler at {scheduler} has no workers (waited 60 s)"
                ) from None
        else:
            count = int(workers) if workers else default_workers(device)
            with _worker_environment() if processes else contextlib.nullcontext():
                self.local = LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=processes,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self.local, set_as_default=False)
            self.torch_threads = torch_threads or max(1, (os.cpu_count() or 1) // count)
        self.plugins: list[str] = []

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    @property
    def slots(self) -> int:
        return sum(int(w["nthreads"]) for w in self.client.scheduler_info()["workers"].values())

    def register(self, plugin: Any) -> None:
        """Send a worker plugin to every worker (and to workers that join later)."""
        register = getattr(self.client, "register_plugin", None) or self.client.register_worker_plugin
        register(plugin, name=plugin.name)
        self.plugins.append(plugin.name)

    def close(self) -> None:
        """Drop our plugins from an external cluster (it keeps running); stop a cluster we started."""
        if self.local is None:
            for name in self.plugins:
                with contextlib.suppress(Exception):
                    self.client.unregister_worker_plugin(name)
        with contextlib.suppress(Exception):
            self.client.close()
        if self.local is not None:
            with contextlib.suppress(Exception):
                self.local.close()


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """Worker processes started meanwhile (and restarted later) get ``core/heap.py``'s settings.

    dask's nanny takes its variables from this process's ``os.environ`` where set there (an earlier
    cluster leaves its own), puts them into it and spawns the worker (glibc reads them at start-up);
    ``os.environ`` is put back as it was afterwards, so later subprocesses of the client (a training
    run) inherit neither one OpenMP thread nor the workers' heap settings.
    """
    import dask

    from napari_vesuvius.core.heap import heap_environment

    key = "distributed.nanny.pre-spawn-environ"
    heap = heap_environment(single_arena=True)
    env = {**dask.config.get(key, {}), **heap}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(heap)
    try:
        with dask.config.set({key: env}):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class BlockStream:
    """Submits tasks a window at a time and hands back finished ones, without a default client."""

    def __init__(self, client: Any, task: Callable[..., Any], items: Iterable[Any], window: int) -> None:
        self.client = client
        self.task = task
        self.todo = deque(items)
        self.window = max(1, int(window))
        self.running: dict[Any, Any] = {}
        self.arrived: queue.Queue[Any] = queue.Queue()  # dask puts finished futures here

    def __bool__(self) -> bool:
        return bool(self.todo or self.running)

    def poll(self, timeout: float, *args: Any) -> list[tuple[Any, Any]]:
        """Top up the window, then wait up to ``timeout`` s; returns ``(item, future)`` that finished."""
        while self.todo and len(self.running) < self.window:
            item = self.todo.popleft()
            future = self.client.submit(self.task, *args, item, pure=False)
            self.running[future] = item
            future.add_done_callback(self.arrived.put)
        try:
            finished = [self.arrived.get(timeout=timeout)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while True:
                finished.append(self.arrived.get_nowait())
        return [(self.running.pop(future), future) for future in finished if future in self.running]

    def cancel(self) -> None:
        """Stop submitting and cancel what is queued or running (running tasks finish on the worker)."""
        self.todo.clear()
        if self.running:
            with contextlib.suppress(Exception):
                self.client.cancel(list(self.running))
        self.running.clear()


def block_result(future: Any, index: Any, location: str) -> Any:
    """The task's result; a block whose workers kept dying becomes an error that says how to resume."""
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except KilledWorker as error:
        raise VesuviusError(
            f"{location}: block {index} failed because its worker died repeatedly ({error}); the finished "
            "blocks are kept: run the same command again to resume"
        ) from error
