"""Full-scroll runs on a dask LocalCluster: equal to the in-memory pass, air not stored, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from inference_helpers import tiny_model
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import BlockGrid, downsample_max
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.scroll import predict_scroll, prepare_scroll
from scroll_helpers import OPTIONS, SHAPE, assert_close, make_scan, one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return make_scan(tmp_path_factory.mktemp("scan"))


@pytest.fixture(scope="module")
def threads_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        yield cluster


def test_ome_output_equals_in_memory_pass_with_pyramid_and_no_air_chunks(
    scan, threads_cluster, tmp_path
) -> None:
    from napari_vesuvius.core.volume.io import open_volume

    path, volume, model, expected = scan
    output = tmp_path / "pred.ome.zarr"
    result = run_job(
        predict_scroll(
            f"file://{path}", output, model, scheduler=threads_cluster.scheduler_address, ome=True, **OPTIONS
        )
    )
    assert result.complete and result.blocks_total == 6 and result.blocks_before == 0
    assert result.blocks_air == 2 and result.blocks_computed == 4 and result.recompute > 1
    assert result.worker_cpu_s > 0  # the workers report their CPU seconds (bench_scroll compares them)
    group = zarr.open_group(str(output), mode="r")
    level0 = group["0"][:]
    assert_close(level0, expected)
    level = level0
    for k in range(1, 3):  # worker-written level 1 and client-written level 2 are max-pooled level 0
        level = downsample_max(level)
        np.testing.assert_array_equal(group[str(k)][:], level)
    grid = BlockGrid(SHAPE, (64, 64, 64))
    air_blocks = [i for i in grid.indices() if not volume[grid.region(i)].any()]
    assert len(air_blocks) == 2
    level_dir = output / "0"  # chunk keys "z/y/x" (OME-Zarr 0.4: "/"-separated on zarr v2)
    written = {
        tuple(int(p) for p in chunk.relative_to(level_dir).as_posix().replace(".", "/").split("/"))
        for chunk in level_dir.rglob("*")
        if chunk.is_file() and not chunk.name.startswith(".")
    }
    assert written and all(len(key) == 3 for key in written)
    for block in air_blocks:
        inside = {
            (block[0] * 2 + a, block[1] * 2 + b, block[2] * 2 + c)
            for a in (0, 1)
            for b in (0, 1)
            for c in (0, 1)
        }
        assert not inside & written  # air blocks leave no chunks behind
    assert group.attrs["complete"] is True and group.attrs["vesuvius_scroll"]["blocks_air"] == 2
    lazy = open_volume(output)
    assert lazy.kind == "ome-zarr" and len(lazy.levels) == 4
    # the same command again finds nothing to do
    again = run_job(
        predict_scroll(path, output, model, scheduler=threads_cluster.scheduler_address, ome=True, **OPTIONS)
    )
    assert again.complete and again.blocks_before == 6 and again.blocks_computed == 0


@pytest.mark.slow
def test_memory_store_urls_and_a_zscore_model(scan, threads_cluster) -> None:
    """fsspec URLs (memory://) in and out; z-score statistics are fitted on the whole input once."""
    from dataclasses import replace

    from napari_vesuvius.core.inference.model_api import Normalization

    _, volume, model, _ = scan
    zscore = replace(model, normalization=Normalization(kind="zscore"))
    expected = predict(volume, zscore, device="cpu", precision="fp32", output_dtype="uint8").probability
    zarr.create_array(store="memory://scroll-test/in.zarr", data=volume, chunks=(32, 32, 32))
    result = run_job(
        predict_scroll(
            "memory://scroll-test/in.zarr", "memory://scroll-test/out.zarr", zscore,
            scheduler=threads_cluster.scheduler_address, **OPTIONS,
        )
    )  # fmt: skip
    assert result.complete
    output = zarr.open_array("memory://scroll-test/out.zarr", mode="r")
    assert_close(output[:], expected)
    (stats,) = output.attrs["vesuvius_scroll"]["normalizations"]
    fitted = Normalization(kind="zscore").fit(volume)  # the in-memory statistics (nnU-Net's rule)
    assert stats["mean"] == pytest.approx(fitted.mean) and stats["std"] == pytest.approx(fitted.std)


def test_mismatched_resume_is_refused_and_overwrite_starts_again(scan, threads_cluster, tmp_path) -> None:
    path, _, model, _ = scan
    output = tmp_path / "pred.zarr"
    plan = prepare_scroll(path, output, model, **OPTIONS)
    assert plan.remaining == 6
    with pytest.raises(VolumeError, match=r"pred\.zarr.*step: 0\.5 → 0\.25.*--overwrite"):
        prepare_scroll(path, output, model, step=0.25, **OPTIONS)
    with pytest.raises(VolumeError, match="weights_sha256"):
        prepare_scroll(path, output, tiny_model(32, seed=5), **OPTIONS)
    assert prepare_scroll(path, output, model, step=0.25, overwrite=True, **OPTIONS).remaining == 6
    (tmp_path / "other.zarr").mkdir()
    zarr.create_array(store=str(tmp_path / "other.zarr"), shape=(4, 4, 4), dtype="uint8", overwrite=True)
    with pytest.raises(VolumeError, match="not written by a block-wise run"):
        prepare_scroll(path, tmp_path / "other.zarr", model, **OPTIONS)
    with pytest.raises(VolumeError, match="must not be the input"):
        prepare_scroll(path, path, model, **OPTIONS)
    with pytest.raises(VolumeError, match="or contain it"):
        prepare_scroll(path, path.parent, model, **OPTIONS)
    (tmp_path / "notes.zarr").mkdir()
    (tmp_path / "notes.zarr" / "keep.txt").write_text("mine")
    with pytest.raises(VolumeError, match="not a zarr; not deleting"):
        prepare_scroll(path, tmp_path / "notes.zarr", model, overwrite=True, **OPTIONS)
    assert (tmp_path / "notes.zarr" / "keep.txt").exists()


def test_cli_block_wise_run_resume_and_refusals(scan, threads_cluster, tmp_path, capsys) -> None:
    from inference_helpers import TEST_CONFIG, tiny_network
    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization

    path, _, _, expected = scan
    checkpoint = save_checkpoint(
        tmp_path / "tiny.pt", tiny_network(0), TEST_CONFIG, Normalization(), (32,) * 3
    )
    output = tmp_path / "pred.ome.zarr"
    argv = ["predict", "--model", str(checkpoint), "--input", str(path), "--output", str(output),
            "--scheduler", threads_cluster.scheduler_address, "--block-size", "64", "--chunk-size", "32",
            "--device", "cpu", "--precision", "fp32"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "complete; 6 blocks, 0 done before, 4 computed, 2 air" in out and "Mvox/s" in out
    assert_close(zarr.open_group(str(output), mode="r")["0"][:], expected)
    assert main(argv) == 0 and "6 done before, 0 computed" in capsys.readouterr().out
    assert main([*argv, "--step", "0.25"]) == 1
    assert "different settings (step: 0.5 → 0.25)" in capsys.readouterr().err
    assert main([*argv, "--dtype", "float16"]) == 1 and "uint8" in capsys.readouterr().err
    tif = tmp_path / "scan.tif"
    tif.write_bytes(b"")
    assert main([*argv[:4], str(tif), *argv[5:]]) == 1 and "zarr" in capsys.readouterr().err


def test_air_blocks_are_recognised_from_missing_chunks(tmp_path) -> None:
    from napari_vesuvius.core.scroll.source import filesystem, may_hold_data

    array = zarr.create_array(
        store=str(tmp_path / "a.zarr"), shape=(64, 64, 64), chunks=(16,) * 3, dtype="uint8"
    )
    array[20:30, 0:10, 0:10] = 7
    fs, root = filesystem(str(tmp_path / "a.zarr"))
    assert may_hold_data(array, fs, root, (slice(16, 32), slice(0, 32), slice(0, 32)))
    assert not may_hold_data(array, fs, root, (slice(32, 64), slice(0, 64), slice(0, 64)))
    grey = zarr.create_array(store=str(tmp_path / "b.zarr"), shape=(8, 8, 8), dtype="uint8", fill_value=5)
    assert may_hold_data(grey, *filesystem(str(tmp_path / "b.zarr")), (slice(0, 8),) * 3)  # missing ≠ air


def test_a_5d_ome_zarr_input_with_singleton_t_c_is_read_as_its_3d_volume(
    scan, threads_cluster, tmp_path
) -> None:
    """ome-zarr-py's (1, 1, Z, Y, X) layout: the block path reads the squeezed volume, scale carried."""
    import warnings

    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    from napari_vesuvius.core.volume.io import open_volume

    _, volume, model, expected = scan
    source = tmp_path / "scan5d.ome.zarr"
    group = zarr.open_group(str(source), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ome-zarr-py warns about the default scale of t / c
        write_image(
            volume[None, None], group, axes="tczyx", fmt=FormatV04(), scale_factors=(),
            scale={"z": 7.91, "y": 7.91, "x": 7.91}, storage_options={"chunks": (1, 1, 32, 32, 32)},
        )  # fmt: skip
    output = tmp_path / "pred.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the squeeze is announced (tested in test_ome_zarr_files)
        result = run_job(
            predict_scroll(source, output, model, scheduler=threads_cluster.scheduler_address, **OPTIONS)
        )
    assert result.complete and result.blocks_air == 2
    with open_volume(output) as written:
        assert_close(np.asarray(written.data), expected)
        assert written.spatial.scale == (7.91, 7.91, 7.91)


def test_a_multi_channel_ome_zarr_input_is_refused_by_the_block_path(tmp_path) -> None:
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    source = tmp_path / "two_channels.ome.zarr"
    group = zarr.open_group(str(source), mode="w", zarr_format=2)
    write_image(np.zeros((2, 8, 16, 16), np.uint8), group, axes="czyx", fmt=FormatV04(), scale_factors=())
    with pytest.raises(VolumeError, match=r"channel|axis"):
        prepare_scroll(source, tmp_path / "out.zarr", tiny_model(32), **OPTIONS)
