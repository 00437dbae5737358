"""CUDA feeding options (``device.GpuTuning``) and the GPU benchmark's CPU dry run.

The prefetching reader is CUDA-only by default; here it is switched on for the CPU so that its
bookkeeping (the right slab for each row, errors from the background read) is tested without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_helpers import scan_volume, tiny_model
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference import device as devices
from napari_vesuvius.core.inference.engine import predict

FP32 = {"device": "cpu", "precision": "fp32", "output_dtype": "float32", "batch_size": 2}


@pytest.fixture
def prefetch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "PREFETCH_DEVICES", ("cuda", "cpu"))


def test_prefetched_rows_give_the_same_probabilities(prefetch_on_cpu: None) -> None:
    volume = scan_volume((52, 30, 26), seed=3)  # several rows of 16³ tiles
    model = tiny_model()
    plain = predict(volume, model, tuning=devices.GpuTuning(prefetch=False), **FP32).probability
    fetched = predict(volume, model, tuning=devices.GpuTuning(prefetch=True), **FP32).probability
    np.testing.assert_array_equal(fetched, plain)


def test_a_bad_slab_read_in_the_background_names_the_file(prefetch_on_cpu: None, tmp_path) -> None:
    volume = scan_volume((52, 30, 26), seed=4).astype(np.float32) / 255
    volume[45, 3, 3] = np.nan  # in a later row, read by the prefetching thread
    with pytest.raises(VolumeError, match=r"NaN.*") as caught:
        predict(volume, tiny_model(), source=tmp_path / "scan.tif", tuning=devices.GpuTuning(), **FP32)
    assert "scan.tif" in str(caught.value)


def test_prepare_networks_on_cpu_only_moves_and_evaluates() -> None:
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Dropout(0.5)).train()
    tuning = devices.GpuTuning(channels_last=True, compile=True)  # CUDA-only options: ignored here
    (prepared,) = devices.prepare_networks([network], torch.device("cpu"), tuning)
    assert prepared is network and not prepared.training


def test_bench_gpu_dry_run_exercises_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nnunetv2")
    pytest.importorskip("dynamic_network_architectures")
    from benchmarks import bench_gpu

    assert bench_gpu.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Tile throughput" in out and "nnU-Net v2 nnUNetPredictor (on device)" in out
    assert "fp32, channels-last" in out and "this engine (defaults)" in out
