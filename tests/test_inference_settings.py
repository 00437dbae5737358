"""The one sliding-window settings object, its CLI options, model members and prediction outputs."""

from __future__ import annotations

import argparse
import json
import types

import numpy as np
import pytest
import torch
import zarr

from inference_helpers import scan_volume, tiny_model
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import VesuviusError
from napari_vesuvius.core.inference import _runner
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.inference.models import ModelSpec, as_members, model_specs, parse_folds
from napari_vesuvius.core.inference.outputs import create_prediction_output
from napari_vesuvius.core.inference.settings import (
    SettingsError,
    SlidingWindowSettings,
    add_settings_arguments,
    settings_from_args,
)
from napari_vesuvius.core.outputs import OutputError


# ------------------------------------------------------------------------------------- settings
def test_settings_are_validated_and_normalised() -> None:
    settings = SlidingWindowSettings(step=0.25, tta_axes=[2, 0, 2], batch_size=4.0, device="CUDA:1")
    assert settings.tta_axes == (0, 2) and settings.batch_size == 4 and settings.device == "cuda:1"
    bad = [
        ({"step": 0}, "step must be in"),
        ({"step": 1.5}, "step must be in"),
        ({"step": "half"}, "step must be a number"),
        ({"tta_axes": (3,)}, "tta_axes must be a subset"),
        ({"batch_size": 0}, "batch_size must be a whole number"),
        ({"batch_size": 1.5}, "batch_size must be a whole number"),
        ({"device": "tpu"}, "unknown device"),
        ({"device": "cpu:1"}, "unknown device"),
        ({"precision": "int8"}, "unknown precision"),
        ({"output_dtype": "int16"}, "output_dtype must be one of"),
    ]
    for values, message in bad:
        with pytest.raises(SettingsError, match=message):
            SlidingWindowSettings(**values)
    assert issubclass(SettingsError, ValueError) and issubclass(SettingsError, VesuviusError)
    with pytest.raises(Exception, match=r"frozen|cannot assign"):
        settings.step = 0.5  # type: ignore[misc]


def test_settings_round_trip_through_json_and_overrides() -> None:
    settings = SlidingWindowSettings(0.3, False, (1,), 3, "cpu", "fp32", "uint8", False)
    data = json.loads(json.dumps(settings.to_dict()))
    assert data["tta_axes"] == [1]
    assert SlidingWindowSettings.from_dict({**data, "models": []}) == settings  # extra keys ignored
    assert SlidingWindowSettings.build(settings, step=0.5) == settings.replace(step=0.5)
    assert SlidingWindowSettings.build(None) == SlidingWindowSettings()
    with pytest.raises(TypeError, match="unknown sliding-window setting"):
        SlidingWindowSettings.build(settings, stride=0.5)


def test_cli_options_build_the_settings() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, output_dtype=True)
    args = parser.parse_args(["--step", "0.25", "--tta", "all", "--no-gaussian", "--batch-size", "3",
                              "--device", "cpu", "--precision", "fp32", "--dtype", "uint8",
                              "--no-skip-air"])  # fmt: skip
    assert settings_from_args(args) == SlidingWindowSettings(
        0.25, False, (0, 1, 2), 3, "cpu", "fp32", "uint8", False
    )
    defaults = settings_from_args(parser.parse_args([]))
    assert defaults == SlidingWindowSettings()
    assert settings_from_args(parser.parse_args([]), output_dtype="uint8").output_dtype == "uint8"
    bare = argparse.ArgumentParser()
    add_settings_arguments(bare, skip_air=False)
    assert (
        not hasattr(bare.parse_args([]), "no_skip_air") and settings_from_args(bare.parse_args([])).skip_air
    )


@pytest.mark.parametrize("command", ["predict", "submit"])
def test_a_bad_setting_is_one_cli_error_line(command, tmp_path, capsys) -> None:
    if command == "predict":
        argv = ["predict", "--model", "m.pt", "--input", str(tmp_path / "ct.tif"), "--output", "p.tif"]
    else:
        argv = ["submit", "--model", "m.pt", "--data", str(tmp_path), "--out", str(tmp_path / "s.zip")]
    assert main([*argv, "--step", "0", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: step must be in (0, 1], got 0.0"]
    assert not (tmp_path / "s.zip").exists()


def test_engine_takes_the_settings_object_or_keywords() -> None:
    volume = scan_volume((20, 18, 17), seed=4, air_below_z=2)
    model = tiny_model(16)
    settings = SlidingWindowSettings(device="cpu", precision="fp32", output_dtype="float32", batch_size=3)
    by_object = predict(volume, model, settings)
    by_keywords = predict(volume, model, device="cpu", precision="fp32", output_dtype="float32", batch_size=3)
    np.testing.assert_array_equal(by_object.probability, by_keywords.probability)
    assert SlidingWindowSettings.from_dict(by_object.settings) == settings
    assert by_object.settings["models"] == [{"name": "tiny0", "weight": 1.0, "patch_size": [16, 16, 16]}]
    with pytest.raises(ValueError, match="step must be in"):
        predict(volume, model, settings, step=2.0)


# -------------------------------------------------------------------------------------- members
def test_model_members_and_specs() -> None:
    model = tiny_model(16)
    assert [m.weight for m in as_members(model)] == [1.0]
    with pytest.raises(ValueError, match="at least one model"):
        as_members([])
    specs = model_specs(["a.pt", "b.pt"], [None, 2.0], parse_folds(["0", "all"]), "x.pth")
    assert specs == [ModelSpec("a.pt", 1.0, (0, "all"), "x.pth"), ModelSpec("b.pt", 2.0, (0, "all"), "x.pth")]
    assert parse_folds(None) is None
    with pytest.raises(VesuviusError, match="one weight per model"):
        model_specs(["a.pt"], [1.0, 2.0])


# -------------------------------------------------------------------------------- runner checks
class _OomOnce(torch.nn.Module):
    """Two-class logits of zeros; the first call with more than one tile raises a CUDA-style OOM.

    Each call advances a fake clock by one second, so ``forward_s`` counts forward calls.
    """

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock
        self.failed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock[0] += 1.0
        if len(x) > 1 and not self.failed:
            self.failed = True
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.zeros((len(x), 2, *x.shape[2:]))


def test_out_of_memory_retry_counts_forward_time_once(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(_runner, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    volume = scan_volume((16, 16, 16), seed=1)
    runner = _runner.ModelRunner(
        volume, tiny_model(16), step=0.5, gaussian=True, tta_axes=(), batch_size=4,
        device=torch.device("cpu"), precision="fp32", skip_air=True,
    )  # fmt: skip
    network = _OomOnce(clock)
    runner.networks, runner.cpu_workers = [network], 1
    logits = runner._forward_with_retry(np.zeros((4, 16, 16, 16), np.float32))
    assert logits.shape == (4, 1, 16, 16, 16) and network.failed
    assert runner.batch_size == 2
    assert clock[0] == 3.0  # the failed attempt and the two halves
    assert runner.forward_s == pytest.approx(3.0)  # each counted once (it used to be 5)


class _CountingArray:
    """A lazy zarr-backed volume that counts the voxels read through it."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, key: object) -> np.ndarray:
        data = self.array[key]
        self.reads.append((key.start, key.stop) if isinstance(key, slice) else (-1, -1))
        return data


def test_a_lazy_input_is_read_once_per_tile_row(tmp_path) -> None:
    volume = scan_volume((40, 20, 20), seed=3, air_below_z=5)
    volume[:, :3] = 0  # air on y too
    array = zarr.create_array(
        store=str(tmp_path / "ct.zarr"), shape=volume.shape, dtype="uint8", chunks=(8, 20, 20)
    )
    array[:] = volume
    counting = _CountingArray(array)
    settings = SlidingWindowSettings(device="cpu", precision="fp32", output_dtype="float32")
    result = predict(counting, tiny_model(16), settings)
    expected = predict(volume, tiny_model(16), settings).probability
    np.testing.assert_array_equal(result.probability, expected)
    assert (result.probability[volume == 0] == 0).all() and result.probability[volume > 0].max() > 0
    # rows start every 8 z (16-voxel patch, step 0.5): 4 rows, each one slab read, nothing read again
    assert counting.reads == [(0, 16), (8, 24), (16, 32), (24, 40)]


# ----------------------------------------------------------------------------- prediction outputs
def test_prediction_output_publishes_atomically_and_cleans_up(tmp_path) -> None:
    source = tmp_path / "ct.zarr"
    zarr.create_array(store=str(source), shape=(4, 4, 4), dtype="uint8")[:] = 7
    target = tmp_path / "pred.zarr"
    with pytest.raises(OutputError, match="input"):
        create_prediction_output(source, (4, 4, 4), "float16", inputs=[source], overwrite=True)
    assert zarr.open_array(str(source), mode="r")[0, 0, 0] == 7  # the input is untouched
    with create_prediction_output(target, (4, 4, 4), "float16", inputs=[source]) as pending:
        assert pending.partial.parent == tmp_path and pending.partial.name.startswith(".pred.zarr")
        assert not target.exists()
        pending.array[:] = 0.5
        pending.publish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.zarr", "pred.zarr"]
    assert zarr.open_array(str(target), mode="r")[1, 2, 3] == 0.5
    with pytest.raises(OutputError, match="exists"):
        create_prediction_output(target, (4, 4, 4), "uint8")
    with (
        pytest.raises(RuntimeError, match="boom"),
        create_prediction_output(target, (4, 4, 4), "uint8", overwrite=True) as pending,
    ):
        pending.array[:] = 9
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.zarr", "pred.zarr"]  # partial removed
    assert zarr.open_array(str(target), mode="r")[1, 2, 3] == 0.5  # the old target stays


def test_sliding_window_section_edits_the_settings(qtbot) -> None:
    from napari_vesuvius.widgets._sliding_window_section import SlidingWindowSection

    section = SlidingWindowSection(output_dtype=True)
    assert section.settings() == SlidingWindowSettings()
    settings = SlidingWindowSettings(0.25, False, (0, 2), 5, "cpu", "bf16", "uint8", True)
    section.set_settings(settings)
    assert section.settings() == settings
    assert section.settings(output_dtype="float32").output_dtype == "float32"
    assert "output_dtype" in section.persisted
    plain = SlidingWindowSection()
    assert not plain.output_dtype.visible and "output_dtype" not in plain.persisted
    plain.set_settings(settings)
    assert plain.settings() == settings.replace(output_dtype="float16")
