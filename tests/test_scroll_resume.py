"""Resuming a full-scroll run after a worker was killed and the run interrupted (LocalCluster processes)."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import zarr

from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.scroll import predict_scroll
from scroll_helpers import OPTIONS, assert_close, make_scan, one_torch_thread


@pytest.fixture
def scan(tmp_path):
    with one_torch_thread():
        yield make_scan(tmp_path)


@pytest.mark.slow
def test_killed_worker_and_interrupted_run_resume_to_the_same_values(scan, tmp_path) -> None:
    from distributed import Client, LocalCluster

    path, _, model, expected = scan
    output = tmp_path / "pred.zarr"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        job = predict_scroll(path, output, model, scheduler=cluster.scheduler_address, **OPTIONS)
        killed = False
        for report in job:
            if report.total == 6 and report.done >= 1 and not killed:
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)  # the worker dies mid-run; its nanny starts a new one
                killed = True
            elif killed and report.done >= 3:
                job.close()  # then the whole run is interrupted
                break
        assert killed
        partial = zarr.open_array(str(output), mode="r")
        record = partial.attrs["vesuvius_scroll"]
        assert partial.attrs["complete"] is False and 3 <= record["blocks_done"] < 6
        result = run_job(predict_scroll(path, output, model, scheduler=cluster.scheduler_address, **OPTIONS))
    assert result.complete and result.blocks_before == record["blocks_done"]
    assert result.blocks_before + result.blocks_computed + result.blocks_air == 6
    assert_close(zarr.open_array(str(output), mode="r")[:], expected)


def _variables() -> dict[str, str]:
    """This process's glibc heap and OpenMP variables."""
    return {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "OMP_NUM_THREADS"}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_local_worker_processes_keep_freed_memory_and_the_client_environment_is_kept() -> None:
    from napari_vesuvius.core.heap import heap_environment
    from napari_vesuvius.core.scroll.cluster import Cluster

    before = _variables()
    cluster = Cluster(None, 1, True, "cpu", 1)
    try:
        (seen,) = cluster.client.run(_variables).values()
    finally:
        cluster.close()
    assert {name: seen.get(name) for name in heap_environment(True)} == heap_environment(True)
    assert seen["OMP_NUM_THREADS"] == "1"  # dask's own worker settings stay
    assert _variables() == before  # the nanny's os.environ changes were put back
