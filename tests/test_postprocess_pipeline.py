"""The pipeline end to end: steps, margin, gating, progress/cancel, preview agreement, CLI round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vesuvius.core.errors import CancelledError, VolumeError
from napari_vesuvius.core.postprocess import (
    PostprocessConfig,
    PreviewCache,
    enabled_steps,
    iter_pipeline,
    preview_region,
    preview_slice,
    run_pipeline,
    scan_mask_from_ct,
)
from napari_vesuvius.core.progress import run_job

OFF = PostprocessConfig(threshold_mode="absolute", threshold=0.5, closing_z=0, closing_xy=0, dust_size=0)


def sheets(shape: tuple[int, int, int] = (40, 48, 48), seed: int = 0) -> np.ndarray:
    """Float16 probabilities of three wavy sheets (normal to y) plus blurred noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    prob = np.zeros(shape, np.float32)
    for centre in (10, 24, 38):
        wave = centre + 3 * np.sin(z / 7 + centre) + 2 * np.sin(x / 9)
        prob = np.maximum(prob, np.exp(-((y - wave) ** 2) / 4.5))
    prob += rng.normal(0, 0.25, shape).astype(np.float32)
    prob = ndi.gaussian_filter(prob, 0.8)
    return np.clip(prob, 0, 1).astype(np.float16)


def test_all_steps_off_is_plain_threshold() -> None:
    prob = sheets()
    assert enabled_steps(OFF) == ["threshold"]
    assert np.array_equal(run_pipeline(prob, OFF), prob.astype(np.float64) >= 0.5)


def test_uint8_and_float_inputs_agree() -> None:
    prob = sheets()
    as_uint8 = np.round(prob.astype(np.float64) * 255).astype(np.uint8)
    as_float = (as_uint8 / 255.0).astype(np.float32)
    config = PostprocessConfig()
    assert np.array_equal(run_pipeline(as_uint8, config), run_pipeline(as_float, config))


def test_margin_zeroes_faces() -> None:
    prob = np.ones((10, 12, 14), np.float32)
    mask = run_pipeline(prob, dataclasses.replace(OFF, margin=2))
    assert mask[2:8, 2:10, 2:12].all()
    assert mask.sum() == 6 * 8 * 10


def test_gating_to_scan_region_and_switch_off() -> None:
    prob = np.full((6, 8, 8), 0.9, np.float32)
    ct = np.zeros((6, 8, 8), np.uint8)
    ct[:, 2:6, 2:6] = 100
    scan = scan_mask_from_ct(ct)
    config = dataclasses.replace(OFF, closing_z=2, closing_xy=2)
    assert np.array_equal(run_pipeline(prob, config, scan_mask=scan), scan)
    assert run_pipeline(prob, dataclasses.replace(config, gate_to_scan=False), scan_mask=scan).all()


def test_closing_then_dust_order() -> None:
    # two 2x2x2 cubes separated by a z-gap of 2: closing joins them into one component of 24 voxels,
    # so dust 20 keeps it; without closing each cube (8) is dust.
    prob = np.zeros((12, 6, 6), np.float32)
    prob[2:4, 2:4, 2:4] = prob[6:8, 2:4, 2:4] = 0.9
    closed = dataclasses.replace(OFF, closing_z=1, dust_size=20)
    assert run_pipeline(prob, closed).sum() == 24
    assert not run_pipeline(prob, dataclasses.replace(closed, closing_z=0)).any()


def test_percentile_and_hysteresis_modes() -> None:
    prob = sheets()
    scan = np.zeros(prob.shape, bool)
    scan[:, :, 8:40] = True
    mask = run_pipeline(
        prob, dataclasses.replace(OFF, threshold_mode="percentile", percentile_fraction=0.1), scan_mask=scan
    )
    assert abs(mask[scan].mean() - 0.1) < 0.002 and not mask[~scan].any()
    hyst = run_pipeline(prob, dataclasses.replace(OFF, threshold_mode="hysteresis", t_low=0.3, t_high=0.85))
    assert (hyst <= (prob >= 0.3)).all() and hyst.sum() > (prob >= 0.85).sum()


def test_generator_reports_each_step_and_can_be_cancelled() -> None:
    prob = sheets()
    config = PostprocessConfig(fill_holes=True, keep_largest=2)
    reports = []
    mask = run_job(iter_pipeline(prob, config), reports.append)
    assert [r.message for r in reports] == ["threshold", "closing", "fill holes", "components", "done"]
    assert reports[-1].fraction == 1.0 and mask.dtype == np.bool_
    with pytest.raises(CancelledError):
        run_job(iter_pipeline(prob, config), should_cancel=lambda: True)


def test_dask_input_and_bad_inputs() -> None:
    import dask.array as da

    prob = sheets()
    assert np.array_equal(run_pipeline(da.from_array(prob, chunks=16)), run_pipeline(prob))
    with pytest.raises(VolumeError, match=r"pred\.tif: expected a 3D"):
        run_pipeline(prob[0], source="pred.tif")
    with pytest.raises(VolumeError, match="scan mask shape"):
        run_pipeline(prob, scan_mask=np.ones((2, 2, 2), bool), source="pred.tif")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2 * (a & b).sum() / total


def test_preview_is_exact_without_global_steps() -> None:
    prob = sheets()
    config = dataclasses.replace(OFF, opening_z=1, closing_z=2, closing_xy=1, fill_holes=True, margin=3)
    full = run_pipeline(prob, config)
    for z in (0, 1, 5, 20, 39):
        assert np.array_equal(preview_slice(prob, z, config), full[z]), z
    assert np.array_equal(preview_slice(prob, 30, config, axis=2), full[:, :, 30])
    box = (slice(5, 20), (10, 30), (0, 48))
    assert np.array_equal(preview_region(prob, box, config), full[5:20, 10:30, 0:48])


def test_preview_with_hysteresis_closing_dust_agrees_with_full() -> None:
    prob = sheets()
    config = PostprocessConfig(dust_size=30)  # hysteresis + closing + dust
    full = run_pipeline(prob, config)
    cache = PreviewCache()
    cache.prepare(prob, config)
    no_dust = dataclasses.replace(config, dust_size=0)
    cache.prepare(prob, no_dust)  # same hysteresis settings: reuses the cached mask
    full_no_dust = run_pipeline(prob, no_dust)
    for z in range(0, 40, 3):
        approx = preview_slice(prob, z, config)
        assert _dice(approx, full[z]) >= 0.99, z
        cached = preview_slice(prob, z, config, cache=cache)
        assert not (cached & ~full[z]).any()  # exact threshold, no keep-k: preview is a subset
        assert _dice(cached, full[z]) >= 0.99
        assert np.array_equal(preview_slice(prob, z, no_dust, cache=cache), full_no_dust[z])


def test_preview_percentile_uses_global_threshold() -> None:
    prob = sheets()
    config = dataclasses.replace(OFF, threshold_mode="percentile", percentile_fraction=0.08)
    full = run_pipeline(prob, config)
    cache = PreviewCache()
    for z in (3, 17):
        assert np.array_equal(preview_slice(prob, z, config), full[z])
        assert np.array_equal(preview_slice(prob, z, config, cache=cache), full[z])


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tifffile

    from napari_vesuvius.cli.main import main

    prob = sheets()
    as_uint8 = np.round(prob.astype(np.float64) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "prob.tif", as_uint8)
    ct = np.full(prob.shape, 50, np.uint8)
    ct[:, :, :4] = 0
    tifffile.imwrite(tmp_path / "ct.tif", ct)
    cfg = tmp_path / "cfg.json"
    assert main(["postprocess", "--write-default-config", str(cfg)]) == 0
    assert PostprocessConfig.load(cfg) == PostprocessConfig()
    dataclasses.replace(PostprocessConfig(), dust_size=20).save(cfg)
    out = tmp_path / "mask.tif"
    args = ["postprocess", str(tmp_path / "prob.tif"), "-c", str(cfg), "-o", str(out), "-q"]
    assert main([*args, "--scan-mask-from", str(tmp_path / "ct.tif")]) == 0
    written = tifffile.imread(out)
    expected = run_pipeline(as_uint8, PostprocessConfig.load(cfg), scan_mask=ct > 0)
    assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 1}
    assert np.array_equal(written.astype(bool), expected) and not written[:, :, :4].any()
    zarr_out = tmp_path / "mask.zarr"
    assert main(["postprocess", str(out), "-o", str(zarr_out), "-q"]) == 0  # zarr output
    cfg.write_text('{"t_lo": 0.3}')
    assert main([*args, "--overwrite"]) == 1
    assert "cfg.json: unknown key(s) 't_lo'" in capsys.readouterr().err


def test_preview_keep_k_is_exact_after_prepare_result() -> None:
    prob = sheets()
    config = PostprocessConfig(keep_largest=2, fill_cavities=True)
    full = run_pipeline(prob, config)
    cache = PreviewCache()
    assert np.array_equal(cache.prepare_result(prob, config), full)
    for z in (0, 13, 39):
        assert np.array_equal(preview_slice(prob, z, config, cache=cache), full[z])
    other = dataclasses.replace(config, keep_largest=3)
    assert cache.result(prob, other) is None  # a different config is not served from the cache
    cache.prepare(prob, other)  # the threshold mask is reused by prepare_result
    assert np.array_equal(cache.prepare_result(prob, other), run_pipeline(prob, other))
    assert cache.result(sheets(seed=1), config) is None  # another volume resets the cache
