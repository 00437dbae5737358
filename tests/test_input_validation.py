"""Bad input volumes give a clear error or a documented, announced conversion, never a silent result.

* TIFF page layouts that are not one z-stack (4D tifffile shapes, ImageJ hyperstacks, OME with C/T > 1)
  are refused naming the file and the real shape; explicit singleton axes are dropped with a warning.
* NaN/Inf in a float CT volume is refused (in memory, lazily slab by slab, block-wise) naming the file.
* The intensity rule (core/inference/intensity.py): uint16 and float [0, 1] volumes are converted onto
  the uint8 range a built-in model was trained on, with a warning, and predict as the uint8 original;
  other floats and dtypes are refused; z-score/CT (nnU-Net) models take any dtype as it is.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

from inference_helpers import TEST_CONFIG, scan_volume, tiny_model, tiny_network
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.blocks import BlockGrid, predict_block
from napari_vesuvius.core.inference.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.inference.intensity import conversion_for
from napari_vesuvius.core.inference.model_api import Normalization, WeightedModel
from napari_vesuvius.core.volume.base import VolumeWarning
from napari_vesuvius.core.volume.io import GuardedSource, open_volume
from napari_vesuvius.core.volume.tiff import TiffPageStack, open_tiff_source

FP32 = {"device": "cpu", "precision": "fp32", "output_dtype": "float32"}
STACK = (np.arange(2 * 32 * 32 * 32) % 251).astype(np.uint8).reshape(2, 32, 32, 32)


# ------------------------------------------------------------------------------------ TIFF layouts
def _write(path: Path, data: np.ndarray, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile's own notes on ImageJ/OME metadata
        tifffile.imwrite(path, data, **kwargs)
    return path


FOUR_D = {
    "shaped.tif": (STACK, {}, "(2, 32, 32, 32)"),
    "named_axes.tif": (STACK, {"metadata": {"axes": "CZYX"}}, "axes CZYX"),
    "imagej_zcyx.tif": (STACK.transpose(1, 0, 2, 3), {"imagej": True, "metadata": {"axes": "ZCYX"}}, "ZCYX"),
    "imagej_tzyx.tif": (STACK, {"imagej": True, "metadata": {"axes": "TZYX"}}, "(2, 32, 32, 32)"),
    "ome_czyx.ome.tif": (STACK, {"ome": True, "metadata": {"axes": "CZYX"}}, "CZYX"),
    "ome_tczyx.ome.tif": (STACK[None], {"ome": True, "metadata": {"axes": "CTZYX"}}, "(2, 32, 32, 32)"),
}


@pytest.mark.parametrize("name", sorted(FOUR_D))
def test_non_3d_tiff_layout_is_refused_with_its_real_shape(tmp_path: Path, name: str) -> None:
    data, kwargs, shown = FOUR_D[name]
    path = _write(tmp_path / name, data, **kwargs)
    with pytest.raises(VolumeError) as info:
        open_volume(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "4D" in message and shown in message, message


def test_info_cli_refuses_a_4d_tiff_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "hyper.tif", STACK)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    assert (
        captured.out == "" and captured.err.startswith(f"error: {path}") and "(2, 32, 32, 32)" in captured.err
    )
    assert "(64, 32, 32)" not in captured.err + captured.out


@pytest.mark.parametrize(
    ("name", "data", "kwargs"),
    [
        ("one_channel.tif", STACK[:1], {}),
        ("two_singletons.tif", STACK[:1, :, None], {}),
    ],
)
def test_explicit_singleton_axes_are_squeezed_with_a_warning(tmp_path: Path, name, data, kwargs) -> None:
    path = _write(tmp_path / name, data, **kwargs)
    with pytest.warns(
        VolumeWarning, match=r"axes of length 1 were dropped, read as \(32, 32, 32\)"
    ) as record:
        volume = open_volume(path)
    assert str(record[0].message).startswith(str(path))
    with volume:
        assert volume.shape == (32, 32, 32)
        np.testing.assert_array_equal(volume.data.compute(), STACK[0])


@pytest.mark.parametrize(
    ("name", "data", "kwargs"),
    [
        ("plain.tif", STACK[1], {}),
        ("imagej.tif", STACK[1], {"imagej": True, "metadata": {"axes": "ZYX"}}),
        ("imagej_one_channel.tif", STACK[1][:, None], {"imagej": True, "metadata": {"axes": "ZCYX"}}),
    ],
)
def test_3d_stacks_keep_the_fast_reader_and_no_warning(tmp_path: Path, name, data, kwargs) -> None:
    path = _write(tmp_path / name, data, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        source, tif = open_tiff_source(path)
    try:
        assert isinstance(source, TiffPageStack) and source.shape == (32, 32, 32)
        np.testing.assert_array_equal(source[:], STACK[1])
    finally:
        tif.close()


def test_ome_singleton_axes_are_squeezed_silently(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.ome.tif", STACK[:1, None], ome=True, metadata={"axes": "TCZYX"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_volume(path) as volume:
            assert volume.shape == (32, 32, 32)


def test_imagej_description_declaring_more_images_than_pages_is_truncated(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.tif", STACK[0], imagej=True, metadata={"axes": "ZYX"})
    data = path.read_bytes()
    patched = data.replace(b"images=32", b"images=64").replace(b"slices=32", b"slices=64")
    assert patched != data
    path.write_bytes(patched)
    with pytest.raises(VolumeError, match=r"short\.tif: truncated TIFF.*\(1, 64, 1, 32, 32\)"):
        open_volume(path)


def test_zarr_that_is_not_3d_stays_a_clear_error(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "tczyx.zarr"), data=np.zeros((1, 1, 4, 5, 6), np.uint8))
    with pytest.raises(VolumeError, match=r"tczyx\.zarr: expected a 3D volume .*\(1, 1, 4, 5, 6\) \(5D\)"):
        open_volume(tmp_path / "tczyx.zarr")


# ---------------------------------------------------------------------------------------- NaN / Inf
def _float_ct(shape=(24, 20, 20), seed=1) -> np.ndarray:
    return scan_volume(shape, seed=seed, air_below_z=3).astype(np.float32) / 255


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_in_memory_volume_is_refused_up_front(bad: float) -> None:
    volume = _float_ct()
    volume[17, 4, 9] = bad
    with pytest.raises(VolumeError, match=r"ct\.tif: contains NaN or infinite values \(first at z=17\)"):
        predict(volume, tiny_model(16), source="ct.tif", **FP32)


def test_non_finite_lazy_volume_is_refused_while_reading(tmp_path: Path) -> None:
    volume = _float_ct((40, 20, 20))
    volume[33, 0, 0] = np.nan
    zarr.create_array(str(tmp_path / "ct.zarr"), data=volume, chunks=(8, 20, 20))
    output = zarr.create_array(str(tmp_path / "p.zarr"), shape=volume.shape, dtype="float16", fill_value=0)
    match = r"ct\.zarr: contains NaN or infinite values \(first at z=33\)"
    with (
        open_volume(tmp_path / "ct.zarr") as lazy,
        pytest.warns(VolumeWarning),
        pytest.raises(VolumeError, match=match),
    ):
        predict(lazy.data, tiny_model(16), output=output, device="cpu", precision="fp32")
    assert output.attrs["complete"] is False  # the partial output says so


def test_nan_volume_with_a_zscore_model_names_the_file(tmp_path: Path) -> None:
    volume = _float_ct()
    volume[5] = np.nan
    tifffile.imwrite(tmp_path / "ct.tif", volume)
    model = tiny_model(16)
    model.normalization = Normalization(kind="zscore", mean=0.0, std=1.0)
    with open_volume(tmp_path / "ct.tif") as lazy, pytest.raises(VolumeError, match=r"ct\.tif: contains NaN"):
        predict(lazy.data, model, **FP32)


def test_non_finite_block_is_refused_naming_the_file(tmp_path: Path) -> None:
    volume = _float_ct((64, 32, 32))
    volume[50, 3, 3] = np.inf
    source = GuardedSource(volume, tmp_path / "scroll.zarr")
    members = [WeightedModel(tiny_model(16), 1.0)]
    settings = dict(
        step=0.5, gaussian=True, tta_axes=(), batch_size=2, device=torch.device("cpu"), precision="fp32"
    )
    norms = [members[0].model.normalization]
    grid = BlockGrid(volume.shape, (16, 32, 32))
    assert predict_block(source, grid, (0, 0, 0), members, norms, **settings).probability is not None
    with pytest.raises(VolumeError, match=r"scroll\.zarr: contains NaN or infinite values \(first at z=50\)"):
        predict_block(source, grid, (3, 0, 0), members, norms, **settings)


def test_predict_cli_refuses_a_nan_tiff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = save_checkpoint(tmp_path / "m.pt", tiny_network(), TEST_CONFIG, Normalization(), (16, 16, 16))
    volume = _float_ct((16, 16, 16))
    volume[2, 2, 2] = np.nan
    tifffile.imwrite(tmp_path / "ct.tif", volume)
    argv = [
        "predict",
        "--model",
        str(model),
        "--input",
        str(tmp_path / "ct.tif"),
        "--output",
        str(tmp_path / "p.tif"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'ct.tif'}: contains NaN" in err and "Traceback" not in err


# -------------------------------------------------------------------------------- intensity rule
@pytest.fixture(scope="module")
def uint8_ct() -> np.ndarray:
    volume = scan_volume((24, 20, 20), seed=1, air_below_z=3)
    volume[8:16, 4:12, 4:12] = 0  # air inside as well
    return volume


@pytest.mark.parametrize(
    ("convert", "words"),
    [
        (lambda v: v.astype(np.uint16) * 257, r"uint16 0–65535 mapped linearly onto 0–255 \(x / 257\)"),
        (lambda v: v.astype(np.float32) / 255, r"float32 values in \[0, 1\] mapped onto 0–255 \(x · 255\)"),
        (lambda v: v.astype(np.float64) / 255, r"float64 values in \[0, 1\]"),
    ],
)
def test_converted_copies_predict_as_the_uint8_original(uint8_ct, convert, words) -> None:
    model = tiny_model(16)
    expected = predict(uint8_ct, model, **FP32).probability
    with pytest.warns(VolumeWarning, match=rf"ct\.tif: intensities converted for model 'tiny0': {words}"):
        got = predict(convert(uint8_ct), model, source="ct.tif", **FP32).probability
    assert np.abs(got - expected).max() < 1e-4


def test_uint8_volume_is_not_announced(uint8_ct) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(uint8_ct, tiny_model(16), **FP32)


def test_float_outside_unit_range_is_refused(uint8_ct) -> None:
    with pytest.raises(VolumeError, match=r"ct\.tif: float intensities must lie in \[0, 1\].*found 0\.\.255"):
        predict(uint8_ct.astype(np.float32), tiny_model(16), source="ct.tif", **FP32)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint32, np.int64, np.bool_])
def test_other_dtypes_are_refused_for_a_uint8_model(uint8_ct, dtype) -> None:
    with pytest.raises(VolumeError, match=rf"ct\.tif: model 'tiny0': {np.dtype(dtype).name} volumes cannot"):
        predict(uint8_ct.astype(dtype), tiny_model(16), source="ct.tif", **FP32)


@pytest.mark.parametrize(
    "normalization",
    [
        Normalization(kind="zscore", mean=0.0, std=1.0),
        Normalization(kind="ct", mean=30000.0, std=9000.0, lower=1000.0, upper=60000.0),
        Normalization(kind="scale", mean=0.0, std=1.0, input_range=None),  # nnU-Net NoNormalization
    ],
)
def test_dtype_agnostic_models_take_uint16_as_it_is(uint8_ct, normalization) -> None:
    model = tiny_model(16)
    model.normalization = normalization
    assert conversion_for(np.uint16, normalization).identity
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = predict(uint8_ct.astype(np.uint16) * 257, model, **FP32).probability
    assert np.isfinite(got).all()


def test_blocks_apply_the_same_rule(uint8_ct) -> None:
    members = [WeightedModel(tiny_model(16), 1.0)]
    norms = [members[0].model.normalization]
    grid = BlockGrid(uint8_ct.shape, (16, 16, 16))
    settings = dict(
        step=0.5, gaussian=True, tta_axes=(), batch_size=2, device=torch.device("cpu"), precision="fp32"
    )
    for index in [(0, 0, 0), (1, 1, 0)]:
        expected = predict_block(uint8_ct, grid, index, members, norms, **settings).probability
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # blocks convert silently: the run announces once
            got = predict_block(uint8_ct.astype(np.uint16) * 257, grid, index, members, norms, **settings)
        assert np.abs(got.probability.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(VolumeError, match=r"float intensities must lie in \[0, 1\]"):
        predict_block(uint8_ct.astype(np.float32), grid, (0, 0, 0), members, norms, **settings)


def test_checkpoints_record_the_training_intensity_range(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", tiny_network(), TEST_CONFIG, Normalization(), (16, 16, 16))
    payload = torch.load(path, weights_only=True)
    assert payload["normalization"]["input_range"] == [0.0, 255.0]
    del payload["normalization"]["input_range"]  # a checkpoint saved before the record existed
    torch.save(payload, tmp_path / "old.pt")
    assert read_checkpoint_info(tmp_path / "old.pt").normalization.input_range == (0.0, 255.0)
    zscore = Normalization(kind="zscore", mean=0.0, std=1.0)
    path = save_checkpoint(tmp_path / "z.pt", tiny_network(), TEST_CONFIG, zscore, (16, 16, 16))
    assert torch.load(path, weights_only=True)["normalization"]["input_range"] is None
    assert load_checkpoint(path).normalization.input_range is None


def test_predict_cli_announces_a_uint16_conversion_on_stderr(
    tmp_path: Path, uint8_ct, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_checkpoint(tmp_path / "m.pt", tiny_network(), TEST_CONFIG, Normalization(), (16, 16, 16))
    tifffile.imwrite(tmp_path / "ct16.tif", uint8_ct.astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "ct8.tif", uint8_ct)
    for name in ("ct16", "ct8"):
        argv = ["predict", "--model", str(model), "--input", str(tmp_path / f"{name}.tif"),
                "--output", str(tmp_path / f"{name}_p.tif"), "--device", "cpu", "--quiet"]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ct16.tif'}: intensities converted" in err and "x / 257" in err
    assert "ct8.tif: intensities" not in err
    got = tifffile.imread(tmp_path / "ct16_p.tif").astype(np.float32)
    expected = tifffile.imread(tmp_path / "ct8_p.tif").astype(np.float32)
    assert np.abs(got - expected).max() < 2e-3  # float16 output of the same probabilities


def test_lazy_uint16_volume_names_its_file_in_the_warning(tmp_path: Path, uint8_ct) -> None:
    zarr.create_array(str(tmp_path / "ct16.zarr"), data=uint8_ct.astype(np.uint16) * 257, chunks=(8, 20, 20))
    with open_volume(tmp_path / "ct16.zarr") as lazy:
        assert isinstance(lazy.data, da.Array)
        with pytest.warns(VolumeWarning, match=r"ct16\.zarr: intensities converted"):
            predict(lazy.data, tiny_model(16), **FP32)
