"""The sliding-window engine against a direct float64 reference, and its invariances."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from inference_helpers import (
    MirrorAverage,
    reference_probability,
    scan_volume,
    tiny_model,
    tiny_network,
)
from napari_vesuvius.core.errors import CancelledError, VesuviusError, VolumeError
from napari_vesuvius.core.inference._tiling import gaussian_weights, tile_starts
from napari_vesuvius.core.inference.engine import predict, predict_volume
from napari_vesuvius.core.inference.model_api import InferenceModel, WeightedModel
from napari_vesuvius.core.progress import run_job

FP32 = {"device": "cpu", "precision": "fp32", "output_dtype": "float32"}


def test_tile_starts_and_gaussian_follow_nnunet() -> None:
    assert tile_starts(320, 128, 0.5) == [0, 64, 128, 192]
    assert tile_starts(40, 16, 0.5) == [0, 8, 16, 24]
    assert tile_starts(37, 16, 0.5) == [0, 7, 14, 21]
    assert tile_starts(16, 16, 0.5) == [0]
    weights = gaussian_weights((16, 16, 16))
    assert weights.dtype == np.float32 and weights.max() == pytest.approx(10.0)
    assert weights.min() > 0 and weights[8, 8, 8] == weights.max()


@pytest.mark.parametrize("shape", [(30, 27, 22), (10, 20, 12)])  # the second needs padding on z and x
def test_blending_equals_direct_reference(shape: tuple[int, int, int]) -> None:
    volume = scan_volume(shape, seed=1, air_below_z=3)
    model = tiny_model(16)
    result = predict(volume, model, batch_size=3, **FP32)
    expected = reference_probability(volume, model.networks[0], (16, 16, 16))
    assert result.complete and result.probability.shape == shape
    assert np.abs(result.probability - expected).max() < 2e-5
    assert expected[volume > 0].std() > 0.01  # the probabilities really vary


def test_independent_of_batch_size_and_input_kind() -> None:
    volume = scan_volume((36, 30, 28), seed=2)
    model = tiny_model(16)
    one = predict(volume, model, batch_size=1, **FP32).probability
    five = predict(volume, model, batch_size=5, **FP32).probability
    lazy = predict(da.from_array(volume, chunks=(7, 30, 28)), model, batch_size=2, **FP32).probability
    assert np.abs(one - five).max() < 1e-5
    assert np.abs(one - lazy).max() < 1e-5


def test_air_tiles_skipped_without_changing_the_result() -> None:
    volume = scan_volume((40, 24, 24), seed=3, air_below_z=18)  # the 4 tiles of z-row 0 are all air
    volume[24:, :, :16] = 77  # two constant (saturated) tiles: computed once, then reused
    model = tiny_model(16)
    skipped = predict(volume, model, skip_air=True, **FP32)
    full = predict(volume, model, skip_air=False, **FP32)
    assert skipped.tiles_skipped == 4 + 1 and full.tiles_skipped == 0
    assert skipped.tiles_run + skipped.tiles_skipped == full.tiles_run
    assert np.abs(skipped.probability - full.probability).max() < 1e-5
    assert (skipped.probability[:18] == 0).all()


def test_outside_scan_forced_to_zero() -> None:
    volume = scan_volume((32, 32, 32), seed=4)
    volume[:, :, :5] = 0
    volume[10, 10, 10] = 0
    prob = predict(volume, tiny_model(16), **FP32).probability
    assert (prob[volume == 0] == 0).all()
    assert (prob[volume > 0] > 0).mean() > 0.99


def test_tta_equals_manual_flip_averaging() -> None:
    volume = scan_volume((20, 16, 24), seed=5)
    model = tiny_model(16)
    result = predict(volume, model, tta_axes=(0, 2), **FP32)
    manual = MirrorAverage([model.networks[0]], (0, 2))
    expected = reference_probability(volume, manual, (16, 16, 16))
    assert np.abs(result.probability - expected).max() < 2e-5
    plain = predict(volume, model, **FP32).probability
    assert np.abs(plain - result.probability).max() > 1e-3  # TTA really changed something


def test_fold_logits_and_model_probabilities_are_averaged() -> None:
    volume = scan_volume((20, 20, 20), seed=6)
    folds = tiny_model(16, seed=10, networks=2)
    expected = reference_probability(volume, MirrorAverage(list(folds.networks), ()), (16, 16, 16))
    assert np.abs(predict(volume, folds, **FP32).probability - expected).max() < 2e-5

    other = tiny_model(12, seed=20)  # a different patch size: its own tiling
    ensemble = [WeightedModel(folds, 3.0), WeightedModel(other, 1.0)]
    combined = predict(volume, ensemble, **FP32).probability
    single = [predict(volume, m, **FP32).probability for m in (folds, other)]
    assert np.abs(combined - (3 * single[0] + single[1]) / 4).max() < 1e-6


def test_output_dtypes() -> None:
    volume = scan_volume((20, 20, 20), seed=7)
    model = tiny_model(16)
    exact = predict(volume, model, **FP32).probability
    half = predict(volume, model, device="cpu", precision="fp32").probability
    byte = predict(volume, model, device="cpu", precision="fp32", output_dtype="uint8").probability
    assert half.dtype == np.float16 and np.abs(half - exact).max() < 1e-3
    assert byte.dtype == np.uint8 and np.abs(byte.astype(int) - np.rint(exact * 255)).max() <= 1


def test_zarr_output_fills_progressively_and_is_marked_complete(tmp_path) -> None:
    volume = scan_volume((48, 16, 16), seed=8)
    model = tiny_model(16)
    out = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=volume.shape, dtype="float16",
                            chunks=(16, 16, 16), fill_value=0)  # fmt: skip
    job = predict_volume(volume, model, device="cpu", precision="fp32", output=out)
    seen_partial = False
    try:
        while True:
            next(job)
            if not seen_partial and np.any(out[:8]) and not np.any(out[-8:]):
                seen_partial = True
                assert out.attrs["complete"] is False
    except StopIteration as stop:
        result = stop.value
    assert seen_partial and result.complete and out.attrs["complete"] is True
    assert out.attrs["prediction"]["precision"] == "fp32"
    reference = predict(volume, model, **FP32).probability
    assert np.abs(out[:].astype(np.float32) - reference).max() < 1e-3


def test_preview_shows_the_row_in_progress_and_leaves_the_result_unchanged() -> None:
    volume = scan_volume((32, 32, 32), seed=9)
    volume[:, :, :6] = 0  # some air: a preview is 0 there too
    model = tiny_model(16)
    out = np.zeros(volume.shape, np.float32)
    job = predict_volume(volume, model, **FP32, batch_size=1, output=out, preview_s=0.0)
    first_row_shown = False
    try:
        while True:
            report = next(job)
            # the first row of tiles (z < 16) is still being blended: only its preview is in the output
            if 0 < report.done < 9 and np.any(out[:8]):
                first_row_shown = True
                assert not np.any(out[:, :, :6])
    except StopIteration as stop:
        result = stop.value
    assert first_row_shown
    assert result.probability is out
    np.testing.assert_array_equal(out, predict(volume, model, **FP32, batch_size=1).probability)


class TileCount:
    """A thread-safe tile counter shared by every copy of the network (the CPU engine runs a copy)."""

    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> TileCount:
        return self


class CountingNetwork(torch.nn.Module):
    """Counts tiles seen by the network."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.count = TileCount()

    @property
    def tiles(self) -> int:
        return self.count.value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.count.lock:
            self.count.value += x.shape[0]
        return self.inner(x)


def test_cancel_stops_within_one_batch_and_marks_output_partial(tmp_path) -> None:
    volume = scan_volume((40, 40, 40), seed=9)
    counter = CountingNetwork(tiny_network())
    model = InferenceModel([counter], (16, 16, 16))
    out = zarr.create_array(store=str(tmp_path / "c.zarr"), shape=volume.shape, dtype="uint8", fill_value=0)
    job = predict_volume(volume, model, batch_size=2, device="cpu", precision="fp32", output=out)
    reports = [next(job) for _ in range(4)]  # "starting" + three batches
    assert reports[-1].done == 6 and reports[-1].total == 4**3
    job.close()
    assert counter.tiles == 6
    assert out.attrs["complete"] is False

    calls = iter(range(100))
    with pytest.raises(CancelledError):
        run_job(predict_volume(volume, model, batch_size=2, device="cpu", precision="fp32"),
                should_cancel=lambda: next(calls) >= 2)  # fmt: skip


class OutOfMemoryAbove(torch.nn.Module):
    """Raises torch's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_retries_with_smaller_batches_then_reports() -> None:
    volume = scan_volume((24, 24, 24), seed=10)
    net = tiny_network()
    expected = predict(volume, InferenceModel([net], (16, 16, 16)), batch_size=1, **FP32).probability
    retried = predict(volume, InferenceModel([OutOfMemoryAbove(net, 1)], (16, 16, 16)), batch_size=4, **FP32)
    assert np.abs(retried.probability - expected).max() < 1e-5
    with pytest.raises(VesuviusError, match="out of CPU memory with one tile"):
        predict(volume, InferenceModel([OutOfMemoryAbove(net, 0)], (16, 16, 16)), **FP32)


def test_bad_arguments_are_reported() -> None:
    model = tiny_model(16)
    with pytest.raises(VolumeError, match="3D"):
        predict(np.zeros((4, 4), np.uint8), model)
    with pytest.raises(ValueError, match="step"):
        predict(np.ones((8, 8, 8), np.uint8), model, step=0)
    with pytest.raises(ValueError, match="tta_axes"):
        predict(np.ones((8, 8, 8), np.uint8), model, tta_axes=(3,))
    with pytest.raises(VolumeError, match="shape"):
        predict(np.ones((8, 8, 8), np.uint8), model, output=np.zeros((8, 8, 9), np.float16))


def test_bf16_autocast_stays_close_to_fp32() -> None:
    volume = scan_volume((24, 24, 24), seed=11)
    model = tiny_model(16)
    exact = predict(volume, model, **FP32).probability
    bf16 = predict(volume, model, device="cpu", precision="bf16", output_dtype="float32").probability
    assert np.abs(bf16 - exact).max() < 0.1
    assert ((bf16 > 0.5) != (exact > 0.5)).mean() < 0.02


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    volume = scan_volume((40, 40, 40), seed=12)
    model = tiny_model(16)
    cpu = predict(volume, model, **FP32).probability
    cuda32 = predict(volume, model, device="cuda", precision="fp32", output_dtype="float32").probability
    cuda_auto = predict(volume, model, device="cuda", output_dtype="float32")
    assert np.abs(cuda32 - cpu).max() < 1e-3
    assert cuda_auto.settings["precision"] in ("bf16", "fp16")
    assert ((cuda_auto.probability > 0.5) != (cpu > 0.5)).mean() < 0.02
