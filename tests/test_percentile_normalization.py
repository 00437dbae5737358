"""``Normalization(kind="percentile")``: each volume's 1st/99th percentiles of its scanned voxels → -1/+1.

The statistics are exact for 8/16-bit volumes (equal to ``np.percentile`` of the non-zero voxels, however
the volume is chunked), stored after ``fit``, kept by checkpoints, used alike by the engine, the CLI and the
block-wise path, and they follow the background and papyrus levels rather than the share of papyrus.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_vesuvius.core.inference.model_api import Normalization
from napari_vesuvius.core.inference.zscore import percentile_statistics
from test_normalization_paths import disc_scan, save_model

PERCENTILE = Normalization(kind="percentile", mean=0.0, std=1.0, input_range=None, use_mask=True)


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 4000)])
def test_statistics_are_exact_for_integer_volumes_in_any_chunking(dtype: type, top: int) -> None:
    rng = np.random.default_rng(3)
    volume = rng.integers(0, top, (23, 31, 37)).astype(dtype)
    volume[:, :6] = 0  # outside the scan
    expected = np.percentile(volume[volume != 0], [1, 99])
    for chunks in ((23, 31, 37), (5, 7, 11)):
        got = percentile_statistics(da.from_array(volume, chunks=chunks))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        percentile_statistics(volume, 10, 90), np.percentile(volume[volume != 0], [10, 90])
    )


def test_float_volumes_empty_scans_and_bad_values() -> None:
    rng = np.random.default_rng(4)
    volume = rng.random((20, 20, 20), dtype=np.float32)
    np.testing.assert_allclose(percentile_statistics(volume), np.percentile(volume[volume != 0], [1, 99]))
    assert percentile_statistics(np.zeros((8, 8, 8), np.uint8)) == (-1.0, 1.0)
    volume[3, 3, 3] = np.nan
    from napari_vesuvius.core.errors import VolumeError

    with pytest.raises(VolumeError, match="NaN or infinite"):
        PERCENTILE.fit(volume)


def test_fit_maps_the_percentiles_to_minus_one_and_one_and_keeps_zeros() -> None:
    volume = disc_scan()
    fitted = PERCENTILE.fit(volume)
    low, high = np.percentile(volume[volume != 0], [1, 99])
    assert (fitted.lower, fitted.upper) == (low, high)
    out = fitted.apply(np.array([low, high, 0], np.float32))
    np.testing.assert_allclose(out, [-1.0, 1.0, 0.0], atol=1e-6)
    assert Normalization.from_dict(fitted.to_dict()) == fitted  # what a block-wise record stores
    padded = np.pad(volume, ((0, 0), (16, 16), (16, 16)))  # more air outside the scan: the same map
    assert PERCENTILE.fit(padded) == fitted
    assert fitted.fitted_per_volume and not Normalization().fitted_per_volume


def test_anchors_follow_the_levels_not_the_share_of_papyrus() -> None:
    """Two scans with the same air (40) and papyrus (170) levels, 10 % vs 60 % papyrus: the percentile map
    puts papyrus at nearly the same value in both (the 99th percentile moves only within papyrus's own
    noise tail); the z-score moves it by more than one unit, ten times as far."""
    rng = np.random.default_rng(5)

    def scan(share: float) -> np.ndarray:
        papyrus = rng.random((40, 40, 40)) < share
        values = np.where(papyrus, 170.0, 40.0) + rng.normal(0, 12, papyrus.shape)
        return np.clip(np.rint(values), 1, 255).astype(np.uint8)

    loose, packed = scan(0.1), scan(0.6)
    zscore = Normalization(kind="zscore", input_range=None, use_mask=True)
    level = np.array([170.0], np.float32)
    by_percentile = [PERCENTILE.fit(v).apply(level)[0] for v in (loose, packed)]
    by_zscore = [zscore.fit(v).apply(level)[0] for v in (loose, packed)]
    percentile_move = abs(by_percentile[0] - by_percentile[1])
    zscore_move = abs(by_zscore[0] - by_zscore[1])
    assert percentile_move < 0.15, by_percentile
    assert zscore_move > 1.0 and zscore_move > 10 * percentile_move, by_zscore


def test_training_choice_checkpoint_and_fine_tuning(tmp_path: Path) -> None:
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.training.config import NORMALIZATIONS
    from napari_vesuvius.core.training.model import _kept_normalization, default_normalization

    assert "percentile" in NORMALIZATIONS
    assert default_normalization(np.dtype(np.uint8), "percentile") == PERCENTILE
    loaded = load_model(save_model(tmp_path / "p.pt", PERCENTILE)).normalization
    assert loaded == PERCENTILE
    assert _kept_normalization(loaded, "auto", "p.pt") == loaded
    from napari_vesuvius.core.training.config import TrainConfigError

    with pytest.raises(TrainConfigError, match="fine-tuning keeps it"):
        _kept_normalization(loaded, "zscore", "p.pt")


@pytest.mark.slow
def test_engine_cli_and_block_wise_use_the_same_fitted_map(tmp_path: Path) -> None:
    from distributed import LocalCluster

    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.inference.models import ModelSpec
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.scroll import predict_scroll

    volume = disc_scan()
    model_path = save_model(tmp_path / "p.pt", PERCENTILE)
    options = {"device": "cpu", "precision": "fp32", "batch_size": 4}
    expected = np.asarray(predict(volume, load_model(model_path), **options).probability, np.float32)

    tifffile.imwrite(tmp_path / "scan.tif", volume)
    out = tmp_path / "pred.tif"
    argv = [
        "predict",
        "--model",
        str(model_path),
        "--input",
        str(tmp_path / "scan.tif"),
        "--output",
        str(out),
    ]
    assert main([*argv, "--device", "cpu", "--precision", "fp32", "--batch-size", "4", "--quiet"]) == 0
    np.testing.assert_allclose(tifffile.imread(out).astype(np.float32), expected, atol=2e-3)

    zarr.create_array(store=str(tmp_path / "scan.zarr"), data=volume, chunks=(16, 32, 32))
    output = tmp_path / "pred.zarr"
    block = dict(device="cpu", precision="fp32", block_size=32, chunk_size=16, batch_size=4)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        result = run_job(predict_scroll(tmp_path / "scan.zarr", output, [ModelSpec(model_path)],
                                        scheduler=cluster.scheduler_address, **block))  # fmt: skip
    assert result.complete
    record = zarr.open_array(str(output), mode="r").attrs["vesuvius_scroll"]
    fitted = PERCENTILE.fit(volume)
    assert (
        record["normalizations"][0]["lower"] == fitted.lower
        and record["normalizations"][0]["upper"] == fitted.upper
    )
    got = zarr.open_array(str(output), mode="r")[:].astype(np.float32) / 255
    np.testing.assert_allclose(got, expected, atol=1 / 255 + 1e-3)


def test_the_intensity_check_treats_it_like_the_z_score() -> None:
    from types import SimpleNamespace

    from napari_vesuvius.core.inference.ood import check_intensity, training_profile

    profile = training_profile([disc_scan(seed=s) for s in (2, 3)]).to_dict()
    model = SimpleNamespace(normalization=PERCENTILE, metadata={"training_intensity": profile})

    assert check_intensity(model, disc_scan(seed=4)) is None
    shift = check_intensity(
        model, np.clip(disc_scan(seed=4).astype(np.float32) * 1.6, 0, 255).astype(np.uint8)
    )
    assert shift is not None and shift.directions[0] == "brighter"
    assert "undoes a global brightness change" in shift.remedy
