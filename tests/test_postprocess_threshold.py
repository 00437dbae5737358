"""Thresholds: exact float64 semantics on uint8/float16/float32 input, percentile, 3D hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.postprocess import (
    ProbabilityKeys,
    percentile_threshold_value,
    threshold_absolute,
    threshold_hysteresis,
    threshold_percentile,
)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_absolute_matches_float64_comparison(dtype: type) -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((6, 7, 8)).astype(dtype)
    for t in (0.0, 0.1, 0.3, 0.5, 0.85, 0.999, 1.0):
        expected = prob.astype(np.float64) >= t
        assert np.array_equal(threshold_absolute(prob, t), expected), t


def test_absolute_on_uint8_scales_by_255() -> None:
    prob = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    for t in (0.0, 0.3, 0.5, 77 / 255, 1.0):
        assert np.array_equal(threshold_absolute(prob, t), prob / 255.0 >= t), t
    assert not threshold_absolute(prob, 1.0)[prob < 255].any()


def test_float16_threshold_is_not_rounded_to_float16() -> None:
    # NumPy 2 evaluates `p16 >= 0.3001` as `p16 >= float16(0.3001)` == `p16 >= 0.30005`;
    # we compare in float64, so a voxel of 0.30005 is below 0.3001.
    value = np.float16(0.3)
    assert float(np.float16(0.3001)) == float(value) < 0.3001
    prob = np.full((2, 2, 2), value, np.float16)
    assert (prob >= 0.3001).all()
    assert not threshold_absolute(prob, 0.3001).any()
    assert threshold_absolute(prob, float(value)).all()


@pytest.mark.parametrize("bad", [1.5, -0.25, np.nan])
def test_out_of_range_probabilities_are_rejected(bad: float) -> None:
    prob = np.zeros((2, 2, 2), np.float32)
    prob[1, 1, 1] = bad
    with pytest.raises(VolumeError, match=r"\[0, 1\]"):
        ProbabilityKeys(prob, "pred.tif")


def test_unsupported_dtype_names_the_source() -> None:
    with pytest.raises(VolumeError, match=r"pred\.tif: probabilities must be uint8"):
        ProbabilityKeys(np.zeros((2, 2, 2), np.int32), "pred.tif")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.uint8])
def test_percentile_gives_requested_fraction_inside_scan(dtype: type) -> None:
    rng = np.random.default_rng(1)
    values = rng.random((20, 30, 30))
    prob = (values * 255).astype(np.uint8) if dtype == np.uint8 else values.astype(dtype)
    scan = np.zeros(prob.shape, bool)
    scan[:, 5:25, 3:27] = True
    prob[~scan] = 0 if dtype == np.uint8 else 0.0
    q = 0.1
    as_float = prob / 255.0 if dtype == np.uint8 else prob.astype(np.float64)
    t = np.quantile(as_float[scan], 1 - q)
    assert percentile_threshold_value(prob, q, scan) == pytest.approx(t, abs=1e-12)
    mask = threshold_percentile(prob, q, scan)
    assert np.array_equal(mask, as_float > t)
    # Ties (uint8 has only 256 values) can only lower the fraction.
    tolerance = 0.02 if dtype == np.uint8 else 0.002
    assert q - tolerance <= mask[scan].mean() <= q + 1e-9


def test_percentile_without_scan_uses_all_voxels() -> None:
    prob = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 10, 10)
    mask = threshold_percentile(prob, 0.25)
    assert mask.sum() == 250


def test_hysteresis_keeps_diagonal_weak_neighbour_and_drops_isolated_blob() -> None:
    prob = np.zeros((9, 9, 9), np.float32)
    prob[2, 2, 2] = 0.95  # strong seed
    prob[3, 3, 3] = 0.5  # weak, touches the seed only by a corner (26-connectivity)
    prob[4, 4, 4] = 0.4  # weak, continues the diagonal chain
    prob[7, 7, 1:4] = 0.6  # weak blob with no strong voxel
    prob[0, 8, 8] = 0.2  # below t_low
    mask = threshold_hysteresis(prob, 0.3, 0.9)
    expected = np.zeros(prob.shape, bool)
    expected[2, 2, 2] = expected[3, 3, 3] = expected[4, 4, 4] = True
    assert np.array_equal(mask, expected)


def test_hysteresis_scan_mask_blocks_seeds_outside_scan() -> None:
    prob = np.zeros((4, 4, 6), np.float32)
    prob[1, 1, :] = 0.5
    prob[1, 1, 0] = 0.95
    scan = np.ones(prob.shape, bool)
    scan[:, :, 0] = False
    assert not threshold_hysteresis(prob, 0.3, 0.9, scan).any()
    assert threshold_hysteresis(prob, 0.3, 0.9).sum() == 6


def test_hysteresis_equals_scipy_reference() -> None:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(2)
    prob = ndi.gaussian_filter(rng.random((24, 24, 24)), 1.5)
    prob = ((prob - prob.min()) / np.ptp(prob)).astype(np.float32)
    ours = threshold_hysteresis(prob, 0.5, 0.7)
    # Note: skimage.filters.apply_hysteresis_threshold labels with 6-connectivity in 3D.
    labels, _ = ndi.label(prob >= 0.5, structure=np.ones((3, 3, 3)))
    seeds = np.unique(labels[prob >= 0.7])
    expected = np.isin(labels, seeds[seeds > 0])
    assert np.array_equal(ours, expected)
    assert ours.any() and not ours.all()


def test_boolean_input_is_probability_zero_or_one() -> None:
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    assert np.array_equal(threshold_absolute(mask, 0.5), mask)
    assert np.array_equal(threshold_hysteresis(mask, 0.3, 0.9), mask)
    assert not threshold_absolute(mask, 1.0)[~mask].any()
