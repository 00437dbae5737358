"""The checkpoint's normalisation is applied identically by every inference path.

A built-in checkpoint with ``Normalization(kind="zscore", use_mask=True)`` (statistics over the scanned
region) predicts a uint8 volume with air (0) outside a scan disc through the core engine, the CLI
``predict``, ``submit``, the block-wise scroll path and the Inference widget: every path normalises
with the mean/std that ``Normalization.fit`` takes on the whole volume, and all give the same
probabilities. A brightness-scaled and offset copy of the scan gives nearly the same prediction with
that model and a clearly different one with a fixed-scale model: the point of the z-score default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_vesuvius.core.inference.model_api import Normalization

pytest.importorskip("nnunetv2")
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    ZScoreNormalization,
)

SHAPE = (48, 64, 64)
PATCH = (32, 32, 32)
MASKED = Normalization(kind="zscore", input_range=None, use_mask=True)


def disc_scan(shape: tuple[int, int, int] = SHAPE, seed: int = 2) -> np.ndarray:
    """A synthetic fragment (uint8) inside a scan disc about the z axis; exact zeros (air) outside."""
    from napari_vesuvius.core.synthetic import make_fragment

    image = make_fragment(shape, seed=seed).image
    _z, y, x = np.indices(shape)
    inside = (y - shape[1] / 2 + 0.5) ** 2 + (x - shape[2] / 2 + 0.5) ** 2 < (0.45 * shape[1]) ** 2
    return np.where(inside, np.maximum(image, 1), 0).astype(np.uint8)


def brighter(volume: np.ndarray) -> np.ndarray:
    """Another scan of the same scroll: intensities x·0.6 + 40 inside the scan, air stays 0."""
    shifted = np.clip(np.rint(volume.astype(np.float64) * 0.6 + 40), 0, 255).astype(np.uint8)
    return np.where(volume > 0, shifted, 0).astype(np.uint8)


def save_model(path: Path, normalization: Normalization, seed: int = 0) -> Path:
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.unet import build_unet, preset

    torch.manual_seed(seed)
    config = preset("tiny", features_base=4, features_max=16)  # few channels: fast tests
    return save_checkpoint(path, build_unet(config), config, normalization, PATCH, {"note": "random"})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("normalization")
    volume = disc_scan()
    (root / "test_images").mkdir()
    tifffile.imwrite(root / "test_images" / "7.tif", volume)
    zarr.create_array(store=str(root / "scan.zarr"), data=volume, chunks=(16, 32, 32))
    return {
        "root": root,
        "volume": volume,
        "masked": save_model(root / "masked.pt", MASKED),
        "scale": save_model(root / "scale.pt", Normalization()),
    }


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float, bool]]:
    """(mean, std, use_mask) of every normalisation applied to a tile while the test runs."""
    calls: list[tuple[float, float, bool]] = []
    original = Normalization.apply

    def spy(self: Normalization, tile: np.ndarray) -> np.ndarray:
        calls.append((self.mean, self.std, self.use_mask))
        return original(self, tile)

    monkeypatch.setattr(Normalization, "apply", spy)
    return calls


def _predict(volume: np.ndarray, model_path: Path, **options) -> np.ndarray:
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model

    options = {"device": "cpu", "precision": "fp32", "batch_size": 4, **options}
    return np.asarray(predict(volume, load_model(model_path), **options).probability, np.float32)


def _fitted(volume: np.ndarray) -> tuple[float, float, bool]:
    fitted = MASKED.fit(volume)
    return fitted.mean, fitted.std, True


def test_masked_statistics_match_nnunet_and_ignore_the_air(setup: dict) -> None:
    volume = setup["volume"]
    data, seg, _bbox = crop_to_nonzero(volume[None].astype(np.float32))
    mask = seg[0] >= 0
    expected = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(data[0].copy(), seg[0])
    fitted = MASKED.fit(volume)
    inside = data[0][mask].astype(np.float64)
    assert fitted.mean == pytest.approx(inside.mean(), rel=1e-6)
    assert fitted.std == pytest.approx(inside.std(), rel=1e-6)
    crop = volume[tuple(slice(a, b) for a, b in _bbox)]
    np.testing.assert_allclose(fitted.apply(crop)[crop != 0], expected[crop != 0], rtol=1e-4, atol=1e-4)
    padded = np.pad(volume, ((0, 0), (20, 20), (20, 20)))  # more air around the scan: same statistics
    again = MASKED.fit(padded)
    assert (again.mean, again.std) == pytest.approx((fitted.mean, fitted.std), rel=1e-9)
    unmasked = Normalization(kind="zscore").fit(volume)  # the non-zero box still holds the disc's air
    assert abs(unmasked.mean - fitted.mean) > 1.0


def test_the_checkpoint_keeps_use_mask(setup: dict) -> None:
    from napari_vesuvius.core.inference.loading import load_model

    loaded = load_model(setup["masked"]).normalization
    assert loaded.kind == "zscore" and loaded.use_mask and loaded.input_range is None
    assert Normalization.from_dict({"kind": "zscore", "mean": 0, "std": 1}).use_mask is False  # older files
    with pytest.raises(ValueError, match="use_mask"):
        Normalization(kind="scale", use_mask=True)
    with pytest.raises(ValueError, match="use_mask"):
        Normalization.from_dict({"kind": "zscore", "use_mask": "yes"})


def test_core_and_cli_predict_use_the_whole_volume_statistics(
    setup: dict, seen: list, tmp_path: Path
) -> None:
    from napari_vesuvius.cli.main import main

    volume, model = setup["volume"], setup["masked"]
    expected = _predict(volume, model)
    assert seen and set(seen) == {_fitted(volume)}
    seen.clear()
    out = tmp_path / "pred.tif"
    argv = ["predict", "--model", str(model), "--input", str(setup["root"] / "test_images" / "7.tif")]
    argv += ["--output", str(out), "--device", "cpu", "--precision", "fp32", "--batch-size", "4", "--quiet"]
    assert main(argv) == 0
    assert seen and set(seen) == {_fitted(volume)}
    got = tifffile.imread(out).astype(np.float32)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # float16 output rounding


@pytest.mark.slow
def test_submit_uses_the_same_normalisation(setup: dict, seen: list, tmp_path: Path) -> None:
    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.export import read_submission
    from napari_vesuvius.core.postprocess import PostprocessConfig, run_pipeline, scan_mask_from_ct

    volume, model = setup["volume"], setup["masked"]
    config = PostprocessConfig(threshold_mode="hysteresis", t_low=0.45, t_high=0.6, dust_size=5)
    config_path = config.save(tmp_path / "config.json")
    out = tmp_path / "submission.zip"
    argv = ["submit", "--model", str(model), "--data", str(setup["root"] / "test_images"), "--out", str(out)]
    argv += ["--postprocess", str(config_path), "--device", "cpu", "--precision", "fp32", "--batch-size", "4"]
    assert main([*argv, "--quiet"]) == 0
    assert seen and set(seen) == {_fitted(volume)}
    probability = _predict(volume, model, output_dtype="float16")
    expected = run_pipeline(probability, config, scan_mask=scan_mask_from_ct(volume)).astype(np.uint8)
    np.testing.assert_array_equal(read_submission(out)["7"], expected)


@pytest.mark.slow
def test_block_wise_run_fits_once_on_the_whole_input(setup: dict, seen: list, tmp_path: Path) -> None:
    from distributed import LocalCluster

    from napari_vesuvius.core.inference.models import ModelSpec
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.scroll import predict_scroll

    volume, model = setup["volume"], setup["masked"]
    output = tmp_path / "pred.zarr"
    options = dict(device="cpu", precision="fp32", block_size=32, chunk_size=16, batch_size=4)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        result = run_job(predict_scroll(setup["root"] / "scan.zarr", output, [ModelSpec(model)],
                                        scheduler=cluster.scheduler_address, **options))  # fmt: skip
    assert result.complete
    assert seen and set(seen) == {_fitted(volume)}  # every block: the whole input's statistics
    record = zarr.open_array(str(output), mode="r").attrs["vesuvius_scroll"]
    assert record["normalizations"][0]["use_mask"] is True
    assert record["fingerprint"]["models"][0]["normalization"]["use_mask"] is True
    got = zarr.open_array(str(output), mode="r")[:].astype(np.float32) / 255
    np.testing.assert_allclose(got, _predict(volume, model), atol=1 / 255 + 1e-3)  # uint8 output


def test_resuming_a_block_wise_output_with_another_normalisation_is_refused(
    setup: dict, tmp_path: Path
) -> None:
    import torch

    from napari_vesuvius.core.errors import VolumeError
    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.scroll.run import prepare_scroll

    masked = load_model(setup["masked"])
    unmasked = save_checkpoint(
        tmp_path / "unmasked.pt",
        masked.networks[0],
        masked.networks[0].config,
        Normalization(kind="zscore", input_range=None),
        PATCH,
        {},
    )  # fmt: skip  (same weights: only the normalisation differs)
    output = tmp_path / "pred.zarr"
    options = dict(device="cpu", precision="fp32", block_size=32, chunk_size=16)
    prepare_scroll(setup["root"] / "scan.zarr", output, masked, **options)
    with pytest.raises(VolumeError, match="use_mask"):
        prepare_scroll(setup["root"] / "scan.zarr", output, load_model(unmasked), **options)
    assert torch.equal(load_model(unmasked).networks[0].heads[0].weight, masked.networks[0].heads[0].weight)


@pytest.mark.slow
def test_inference_widget_uses_the_same_normalisation(
    make_napari_viewer, setup: dict, seen: list, qtbot
) -> None:
    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    volume, model = setup["volume"], setup["masked"]
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="ct")
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.image.value = viewer.layers["ct"]
    widget.models.model.value = model
    widget.device.value = "cpu"
    widget.precision.value = "fp32"
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert seen and set(seen) == {_fitted(volume)}
    got = np.asarray(viewer.layers["ct probability"].data, np.float32)
    np.testing.assert_allclose(got, _predict(volume, model), atol=2e-3)


@pytest.mark.slow
def test_zscore_model_is_robust_to_a_brightness_change_and_fixed_scale_is_not(setup: dict) -> None:
    volume, masked, scale = setup["volume"], setup["masked"], setup["scale"]
    shifted = brighter(volume)
    assert abs(float(shifted[volume > 0].mean()) - float(volume[volume > 0].mean())) > 10
    same = np.abs(_predict(shifted, masked) - _predict(volume, masked))
    other = np.abs(_predict(shifted, scale) - _predict(volume, scale))
    # the z-score model differs only by the uint8 rounding of x·0.6 + 40; the fixed scale sees new values
    assert same.mean() < 0.01 and np.percentile(same, 99) < 0.06, (same.mean(), np.percentile(same, 99))
    assert other.mean() > 4 * same.mean() and np.percentile(other, 99) > 0.15, other.mean()
    exact = np.where(volume > 0, volume.astype(np.float32) * 0.6 + 40, 0).astype(np.float32)  # no rounding
    np.testing.assert_allclose(_predict(exact, masked), _predict(volume, masked), atol=1e-3)
