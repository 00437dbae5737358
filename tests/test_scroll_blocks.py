"""Block geometry and the per-block sliding window (core/inference/blocks.py), plus the output layout."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from inference_helpers import scan_volume, tiny_model
from napari_vesuvius.core.inference._tiling import padded_shape, tile_grid
from napari_vesuvius.core.inference.blocks import (
    BlockGrid,
    axis_tiles,
    downsample_max,
    predict_block,
    recompute_factor,
)
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.inference.model_api import WeightedModel
from napari_vesuvius.core.scroll.record import Record
from napari_vesuvius.core.scroll.store import describe_differences, plan_layout
from scroll_helpers import one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_torch_thread():
        yield


def assemble(volume, members, block, **settings):
    """Every block of the volume through predict_block, pasted together."""
    grid = BlockGrid(volume.shape, block)
    out = np.zeros(volume.shape, np.uint8)
    air, runs = [], []
    for index in grid.indices():
        result = predict_block(
            volume, grid, index, members, [m.model.normalization for m in members],
            step=0.5, gaussian=True, batch_size=3, device=torch.device("cpu"), precision="fp32",
            **{"tta_axes": (), **settings},
        )  # fmt: skip
        if result.air:
            air.append(index)
        else:
            out[grid.region(index)] = result.probability
            runs.append(result.tiles)
    return out, air, runs


def tiles_with_data(volume, patch, step=0.5) -> int:
    """Tiles of the whole-volume grid (padded as the engine pads) that hold a non-zero voxel."""
    full, before = padded_shape(volume.shape, patch)
    padded = np.zeros(full, volume.dtype)
    padded[tuple(slice(b, b + n) for b, n in zip(before, volume.shape, strict=True))] = volume
    return sum(
        bool(padded[z : z + patch[0], y : y + patch[1], x : x + patch[2]].any())
        for z, y, x in itertools.product(*tile_grid(full, patch, step))
    )


@pytest.mark.parametrize(
    ("shape", "patch", "block", "tta"),
    [
        ((24, 40, 44), 16, (16, 32, 32), ()),
        ((12, 32, 33), 16, (16, 16, 16), (2,)),  # z shorter than the patch: padded like in memory
        ((24, 36, 40), (8, 16, 32), (16, 16, 32), ()),  # anisotropic patch
    ],
)
def test_blocks_equal_the_in_memory_pass(shape, patch, block, tta) -> None:
    volume = scan_volume(shape, seed=1, air_below_z=5)
    volume[:, :, :7] = 0  # an air strip: tiles there are skipped in both passes
    volume[8:24, 16:32, 14:30] = 90  # constant: a tile there runs once and is reused (first case)
    model = tiny_model(patch)
    expected = predict(volume, model, device="cpu", precision="fp32", output_dtype="uint8", tta_axes=tta)
    got, _, runs = assemble(volume, [WeightedModel(model, 1.0)], block, tta_axes=tta)
    assert np.abs(got.astype(int) - expected.probability.astype(int)).max() <= 1
    # the tiles blocks report: every tile with data once at least, border tiles once per block
    distinct = np.unique(np.concatenate(runs))
    assert len(distinct) == tiles_with_data(volume, model.patch_size) < sum(len(r) for r in runs)


def test_ensemble_of_different_patches_equals_the_in_memory_pass() -> None:
    volume = scan_volume((24, 32, 32), seed=2, air_below_z=4)
    members = [
        WeightedModel(tiny_model(16, seed=1), 1.0),
        WeightedModel(tiny_model((16, 32, 16), seed=2), 2.5),
    ]
    expected = predict(volume, members, device="cpu", precision="fp32", output_dtype="uint8")
    got, _, _ = assemble(volume, members, (16, 16, 32))
    assert np.abs(got.astype(int) - expected.probability.astype(int)).max() <= 1


def test_air_blocks_are_read_once_and_not_computed() -> None:
    volume = np.zeros((32, 32, 64), np.uint8)
    volume[:, :, 40:] = scan_volume((32, 32, 24), seed=3)
    reads = []

    class Spy:
        shape, dtype, ndim = volume.shape, volume.dtype, 3

        def __getitem__(self, key):
            reads.append(key)
            return volume[key]

    members = [WeightedModel(tiny_model(16), 1.0)]
    grid = BlockGrid(volume.shape, (32, 32, 32))
    settings = dict(
        step=0.5, gaussian=True, tta_axes=(), batch_size=2, device=torch.device("cpu"), precision="fp32"
    )
    norms = [members[0].model.normalization]
    air = predict_block(Spy(), grid, (0, 0, 0), members, norms, **settings)
    assert air.air and air.tiles_run == 0 and len(reads) == 1  # block + halo, nothing else
    assert all(
        r.start <= b.start and r.stop >= b.stop for r, b in zip(reads[0], grid.region((0, 0, 0)), strict=True)
    )
    busy = predict_block(volume, grid, (0, 0, 1), members, norms, **settings)
    assert not busy.air and busy.probability.shape == (32, 32, 32) and busy.tiles_run > 0


def test_grid_regions_tile_the_volume_and_recompute_factor() -> None:
    grid = BlockGrid((50, 70, 90), (16, 32, 32))
    seen = np.zeros(grid.shape, int)
    for index in grid.indices():
        seen[grid.region(index)] += 1
    assert (seen == 1).all() and grid.total == 4 * 3 * 3
    whole = BlockGrid((64, 64, 64), (64, 64, 64))
    assert recompute_factor(whole, (16,) * 3, 0.5, list(whole.indices())) == 1.0
    # step 0.5: a block of 4 patches runs 9 tiles per axis and owns 8 (inner blocks)
    big = BlockGrid((512, 512, 512), (64, 64, 64))
    assert recompute_factor(big, (16,) * 3, 0.5, [(3, 3, 3)]) == pytest.approx(1.0)
    axis = axis_tiles((512, 512, 512), (16,) * 3, 0.5)[0]
    i0, i1 = axis.overlapping(192, 256)
    assert i1 - i0 == 9


def test_layout_levels_and_who_writes_them() -> None:
    layout = plan_layout((96, 160, 160), 32, (64, 64, 64), ome=True)
    assert layout.levels == ((96, 160, 160), (48, 80, 80), (24, 40, 40), (12, 20, 20))
    assert [layout.worker_written(k) for k in range(4)] == [True, True, False, False]
    assert layout.region(BlockGrid(layout.shape, layout.block).region((1, 2, 2)), 2) == (
        slice(16, 24), slice(32, 40), slice(32, 40),
    )  # fmt: skip
    assert plan_layout((96, 160, 160), 32, (64,) * 3, ome=False).levels == ((96, 160, 160),)
    with pytest.raises(ValueError, match="multiple of the output chunk"):
        plan_layout((96, 160, 160), 32, (48,) * 3, ome=False)


def test_downsample_max_keeps_thin_sheets() -> None:
    data = np.zeros((5, 4, 3), np.uint8)
    data[4, 0, 2] = 200
    small = downsample_max(data)
    assert small.shape == (3, 2, 2) and small[2, 0, 1] == 200 and small.sum() == 200


def test_record_round_trip_and_differences() -> None:
    done = np.zeros((3, 4, 5), bool)
    done[1, 2, 3] = done[2, 3, 4] = True
    record = Record({"step": 0.5}, done, done & False)
    again = Record.from_dict(record.to_dict())
    assert np.array_equal(again.done, done) and not again.air.any()
    lines = describe_differences(
        {"step": 0.5, "models": [{"weights_sha256": "aaa"}]},
        {"step": 0.25, "models": [{"weights_sha256": "bbb"}]},
    )
    assert lines == ["models[0].weights_sha256: aaa → bbb", "step: 0.5 → 0.25"]
