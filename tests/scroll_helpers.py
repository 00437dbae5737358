"""Shared pieces of the full-scroll tests: a small sparse zarr scan with its in-memory prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from inference_helpers import scan_volume, tiny_model
from napari_vesuvius.core.inference.engine import predict

SHAPE = (64, 128, 160)
#: 64³ blocks of 32³ chunks: the scan is 1×2×3 blocks wide
OPTIONS = dict(device="cpu", precision="fp32", block_size=64, chunk_size=32)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a shared, busy CPU OpenMP threads spin against each other (10× slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_scan(folder: Path) -> tuple[Path, np.ndarray, Any, np.ndarray]:
    """A zarr volume whose scanned region leaves two of its six blocks all air; (path, volume, model,
    the in-memory uint8 prediction)."""
    volume = np.zeros(SHAPE, np.uint8)
    volume[8:60, 10:110, 20:100] = scan_volume((52, 100, 80), seed=3)
    path = folder / "scan.zarr"
    zarr.create_array(store=str(path), data=volume, chunks=(32, 32, 32))
    model = tiny_model(32)
    expected = predict(volume, model, device="cpu", precision="fp32", output_dtype="uint8").probability
    return path, volume, model, expected


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    """uint8 probabilities equal within one level (float noise of batching)."""
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
