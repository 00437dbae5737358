"""Remote volumes over HTTP: retries with backoff, give-up errors, missing chunks, the chunk cache, ``info``.

Every test serves a folder from a loopback server (``tests/http_server.py``) that injects 429 / 503
answers, slow answers and dropped connections; retry delays are tiny so the whole module takes seconds.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from http_server import DROP, FaultServer, slow, status
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume._remote_cache import ChunkCache
from napari_vesuvius.core.volume.io import open_volume
from napari_vesuvius.core.volume.remote import (
    RemoteOptions,
    RetryEvent,
    RetryPolicy,
    is_url,
    open_remote_store,
    open_remote_volume,
)

SHAPE = (32, 40, 48)
FAST = RetryPolicy(attempts=6, base_delay_s=0.01, max_delay_s=0.05, budget_s=5.0, timeout_s=0.3)


def fast(**changes: object) -> RemoteOptions:
    return RemoteOptions(retry=FAST, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A plain zarr v2 array (one chunk removed: reads as fill value 0) and an OME-Zarr 0.4 written by
    ome-zarr-py, with a 7.91 µm scale (its level 1 is downsampled in y and x only)."""
    from ome_zarr.format import FormatV04

    with warnings.catch_warnings():  # ome-zarr-py's own deprecated default argument, on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image

    root = tmp_path_factory.mktemp("served")
    data = np.random.default_rng(0).integers(1, 60000, SHAPE, dtype=np.uint16)
    plain = zarr.create_array(
        root / "plain.zarr", shape=SHAPE, chunks=(16, 16, 16), dtype="uint16", zarr_format=2, fill_value=0
    )
    plain[:] = data
    (root / "plain.zarr" / "1.1.1").unlink()
    group = zarr.open_group(root / "scan.ome.zarr", mode="w", zarr_format=2)
    write_image(
        data, group, axes="zyx", fmt=FormatV04(), scale_factors=(2,), scale=dict.fromkeys("zyx", 7.91),
        axes_units=dict.fromkeys("zyx", "micrometer"), storage_options={"chunks": (16, 16, 16)},
    )  # fmt: skip
    return root, data


@pytest.fixture
def server(served: tuple[Path, np.ndarray]) -> Iterator[FaultServer]:
    with FaultServer(served[0]) as running:
        yield running


def plain_expected(data: np.ndarray) -> np.ndarray:
    expected = data.copy()
    expected[16:32, 16:32, 16:32] = 0  # the removed chunk
    return expected


def test_is_url_keeps_file_urls_local() -> None:
    assert is_url("http://host/a.zarr") and is_url("s3://bucket/a.zarr")
    assert not is_url("file:///tmp/a.zarr") and not is_url("/tmp/a.zarr")


def test_retries_429_503_slow_and_dropped_then_right_values(
    server: FaultServer, served: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    chunk = "/plain.zarr/0.0.0"
    server.inject(chunk, status(429), status(429, retry_after=0.05), status(503), slow(0.6), DROP)
    server.inject("/plain.zarr/.zarray", status(502))
    events: list[RetryEvent] = []
    volume = open_remote_volume(server.url + "/plain.zarr", options=fast())
    volume.remote.listener = events.append
    assert volume.remote.retries == 1 and volume.remote.last_retry_reason == "HTTP 502"  # metadata retried
    with caplog.at_level(logging.WARNING, logger="napari_vesuvius.remote"):
        values = volume.data.compute()
    np.testing.assert_array_equal(values, plain_expected(served[1]))
    stats = volume.remote.to_dict()
    assert stats["retries"] >= 5 and stats["failures"] == 0 and stats["bytes_fetched"] > 0
    reasons = [e.reason for e in events]
    assert reasons[:4] == ["HTTP 429", "HTTP 429", "HTTP 503", "timeout"]
    assert events[1].delay_s == pytest.approx(0.05)  # Retry-After honoured (within max_delay_s)
    assert all(e.key == "0.0.0" and e.url == server.url + "/plain.zarr" for e in events)
    assert server.requests[chunk] >= 6
    assert "0.0.0 failed on try 1 (HTTP 429)" in caplog.text


def test_ome_zarr_over_http_with_retry_after_capped(
    server: FaultServer, served: tuple[Path, np.ndarray]
) -> None:
    server.inject("/scan.ome.zarr/s0/0/0/0", status(429, retry_after=3600), status(503))
    server.inject("/scan.ome.zarr/.zattrs", status(503))
    events: list[RetryEvent] = []
    volume = open_volume(server.url + "/scan.ome.zarr/", remote=fast())
    volume.remote.listener = events.append
    assert volume.kind == "ome-zarr" and len(volume.levels) == 2 and volume.shape == SHAPE
    assert volume.spatial.scale == pytest.approx((7.91,) * 3) and volume.spatial.unit == "micrometer"
    started = time.monotonic()
    np.testing.assert_array_equal(volume.data.compute(), served[1])
    assert time.monotonic() - started < 3  # Retry-After: 3600 capped by max_delay_s
    assert [e.delay_s for e in events][:1] == [FAST.max_delay_s]
    local = zarr.open_group(served[0] / "scan.ome.zarr", mode="r")
    np.testing.assert_array_equal(volume.levels[1].compute(), local["s1"][:])
    assert volume.remote.retries >= 3
    coarse = open_volume(server.url + "/scan.ome.zarr", remote=fast(), level=1)
    assert coarse.shape == local["s1"].shape == (32, 20, 24)
    assert coarse.spatial.scale == pytest.approx((7.91, 15.82, 15.82))


def test_server_that_keeps_failing_gives_up_naming_the_url(server: FaultServer) -> None:
    url = server.url + "/plain.zarr"
    volume = open_remote_volume(url, options=fast())
    server.always(503)
    started = time.monotonic()
    with pytest.raises(VolumeError) as caught:
        volume.data[:16, :16, :16].compute()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(url) and "'0.0.0'" in message and "after 6 tries" in message
    assert "HTTP 503" in message
    assert server.requests["/plain.zarr/0.0.0"] == FAST.attempts
    assert volume.remote.failures >= 1
    server.clear()
    server.always(503, retry_after=0.2)  # an open that never succeeds: bounded by the time budget
    tight = RemoteOptions(retry=RetryPolicy(attempts=50, base_delay_s=0.01, budget_s=0.5, timeout_s=0.3))
    started = time.monotonic()
    with pytest.raises(VolumeError, match=f"^{url}: gave up reading"):
        open_remote_volume(url, options=tight)
    assert time.monotonic() - started < 3


def test_access_denied_fails_at_once(server: FaultServer) -> None:
    volume = open_remote_volume(server.url + "/plain.zarr", options=fast())
    server.always(403, path="/plain.zarr/0.0.0")
    with pytest.raises(VolumeError, match=r"access denied reading '0\.0\.0' \(HTTP 403\)"):
        volume.data[:4, :4, :4].compute()
    assert server.requests["/plain.zarr/0.0.0"] == 1 and volume.remote.retries == 0


def test_missing_chunk_reads_fill_value_without_retries(
    server: FaultServer, served: tuple[Path, np.ndarray]
) -> None:
    volume = open_remote_volume(server.url + "/plain.zarr", options=fast())
    region = volume.data[16:32, 16:32, 16:32].compute()
    assert not region.any()
    assert server.requests["/plain.zarr/1.1.1"] == 1
    assert volume.remote.retries == 0 and volume.remote.missing_chunks == 1


def test_no_zarr_and_unreachable_host_name_the_url(server: FaultServer) -> None:
    with pytest.raises(VolumeError, match=r"nothing\.zarr: no zarr or OME-Zarr at this URL"):
        open_remote_volume(server.url + "/nothing.zarr", options=fast())
    closed = "http://127.0.0.1:9/x.zarr"  # the discard port: nothing listens on loopback
    started = time.monotonic()
    with pytest.raises(VolumeError, match=f"^{closed}: gave up reading .*ClientConnectorError"):
        open_remote_volume(closed, options=fast())
    assert time.monotonic() - started < 5


def test_s3_without_s3fs_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from zarr.storage import FsspecStore

    def missing(*args: object, **kwargs: object) -> None:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(FsspecStore, "from_url", missing)
    with pytest.raises(VolumeError, match=r"s3://bucket/v\.zarr: .*install s3fs"):
        open_remote_volume("s3://bucket/v.zarr")


def test_cache_second_read_makes_no_requests(
    server: FaultServer, served: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    url = server.url + "/plain.zarr"
    options = fast(cache_dir=tmp_path / "cache")
    first = open_remote_volume(url, options=options)
    np.testing.assert_array_equal(first.data[:16, :32].compute(), served[1][:16, :32])
    assert first.remote.cache_misses == 6 and first.remote.cache_hits == 0
    server.reset_counts()
    np.testing.assert_array_equal(first.data[:16, :32].compute(), served[1][:16, :32])
    assert server.count() == 0 and first.remote.cache_hits == 6
    again = open_remote_volume(url, options=options)  # a new session: only metadata is fetched
    np.testing.assert_array_equal(again.data[:16, :32].compute(), served[1][:16, :32])
    assert all(path.rsplit("/", 1)[-1].startswith((".z", "zarr.json")) for path in server.requests)
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.name != "url.txt"]
    assert sorted(p.name for p in cached) == sorted(f"0.{y}.{x}" for y in range(2) for x in range(3))
    assert (cached[0].parent / "url.txt").read_text().strip() == url


def test_cache_evicts_least_recently_used(server: FaultServer, tmp_path: Path) -> None:
    url = server.url + "/plain.zarr"
    sizes = [(server.root / "plain.zarr" / f"0.{y}.{x}").stat().st_size for y in range(2) for x in range(3)]
    limit = int(max(sizes) * 3.5)  # room for 3 chunks
    volume = open_remote_volume(url, options=fast(cache_dir=tmp_path / "cache", cache_max_bytes=limit))
    cache = ChunkCache(tmp_path / "cache", url, limit)

    def read(y: int, x: int) -> None:
        volume.data[:16, 16 * y : 16 * y + 16, 16 * x : 16 * x + 16].compute()
        time.sleep(0.02)  # distinct modification times

    for x in range(3):
        read(0, x)
    assert all(cache.has(f"0.0.{x}") for x in range(3))
    read(0, 0)  # a cache hit: 0.0.0 is now the most recently used
    assert volume.remote.cache_hits == 1
    read(1, 0)  # over the bound: the least recently used (0.0.1) goes
    assert cache.has("0.0.0") and not cache.has("0.0.1") and cache.has("0.0.2") and cache.has("0.1.0")
    assert 0 < cache.size() <= limit


def test_chunk_cache_refuses_escaping_keys_and_serves_ranges(tmp_path: Path) -> None:
    from zarr.abc.store import RangeByteRequest

    from napari_vesuvius.core.volume._remote_store import slice_range

    cache = ChunkCache(tmp_path, "http://h/v.zarr", 1 << 20)
    for key in ("../x", "a/../../x", "", "/abs"):
        assert cache.path(key) is None
        cache.put(key, b"data")
    cache.put("c/0/1", b"0123456789")
    assert cache.get("c/0/1") == b"0123456789" and cache.has("c/0/1")
    assert slice_range(b"0123456789", RangeByteRequest(2, 5)) == b"234"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["url.txt", "1"] or cache.size() == 10


def test_retry_policy_delays_are_bounded() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    for retry in range(1, 10):
        assert 0 <= policy.delay(retry) <= min(4.0, 0.5 * 2 ** (retry - 1))
    assert policy.delay(3, retry_after=2.0) == 2.0 and policy.delay(1, retry_after=100.0) == 4.0


def test_store_pickles_for_dask_workers(server: FaultServer, tmp_path: Path) -> None:
    store = open_remote_store(server.url + "/plain.zarr", fast(cache_dir=tmp_path))
    store.stats.listener = print
    copy = pickle.loads(pickle.dumps(store))
    assert copy.url == store.url and copy.stats.listener is None and copy.cache is not None
    assert zarr.open_array(store=copy, mode="r")[0, 0, 0] == zarr.open_array(store=store, mode="r")[0, 0, 0]


def test_info_url_json_reports_retries(
    server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.inject("/scan.ome.zarr/.zattrs", status(429, retry_after=0))
    args = ["info", server.url + "/scan.ome.zarr", "--json", "--counts", "--retries", "3"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "ome-zarr" and info["shape"] == list(SHAPE) and info["path"].startswith("http://")
    remote = info["remote"]
    assert remote["retries"] == 1 and remote["last_retry_reason"] == "HTTP 429" and remote["cache_misses"] > 0
    assert main(["info", server.url + "/plain.zarr", "--no-counts"]) == 0
    assert "remote: " in capsys.readouterr().out
    server.always(503)
    assert main(["info", server.url + "/scan.ome.zarr", "--retries", "2", "--json"]) == 1
    assert "gave up reading" in capsys.readouterr().err


@pytest.mark.slow  # a dask run of a tiny model: ~15 s on a busy CPU
def test_block_wise_run_reads_a_url_input_with_retries(tmp_path: Path) -> None:
    """A full-scroll run whose input is a URL: client and workers read through the retrying store, the
    chunk-existence checks (air blocks) too, and the progress messages report the retries."""
    from distributed import LocalCluster

    from napari_vesuvius.core.progress import Progress, run_job
    from napari_vesuvius.core.scroll import predict_scroll
    from scroll_helpers import OPTIONS, assert_close, make_scan, one_torch_thread

    path, _, model, expected = make_scan(tmp_path)
    reports: list[Progress] = []
    with (
        FaultServer(tmp_path) as server,
        one_torch_thread(),
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
    ):
        server.inject("/scan.zarr/c/0/0/1", status(429), status(503, retry_after=0), DROP)
        server.inject("/scan.zarr/c/1/2/4", status(429))  # an air chunk's existence check
        result = run_job(
            predict_scroll(
                f"{server.url}/{path.name}", tmp_path / "out.zarr", model,
                scheduler=cluster.scheduler_address, remote=fast(), **OPTIONS,
            ),
            reports.append,
        )  # fmt: skip
        assert server.requests["/scan.zarr/c/0/0/1"] >= 4
    assert result.complete and result.blocks_air == 2
    assert_close(zarr.open_array(tmp_path / "out.zarr", mode="r")[:], expected)
    assert "HTTP retries)" in reports[-1].message


def test_failures_are_sorted_into_transient_and_permanent() -> None:
    from napari_vesuvius.core.volume._remote_store import classify

    def boto(name: str) -> Exception:
        return type(name, (Exception,), {"__module__": "botocore.exceptions"})("boom")

    assert classify("s3://b/v", "k", boto("ReadTimeoutError")).reason == "ReadTimeoutError: boom"
    assert classify("s3://b/v", "k", ConnectionResetError("reset")).reason.startswith("ConnectionResetError")
    assert classify("s3://b/v", "k", TimeoutError()).reason == "timeout"
    with pytest.raises(VolumeError, match=r"^s3://b/v: no credentials"):
        classify("s3://b/v", "k", boto("NoCredentialsError"))
    with pytest.raises(VolumeError, match=r"^s3://b/v: access denied reading 'k'"):
        classify("s3://b/v", "k", PermissionError("Access Denied"))
    with pytest.raises(VolumeError, match=r"cannot read 'k' \(ValueError: bad\)"):
        classify("s3://b/v", "k", ValueError("bad"))
