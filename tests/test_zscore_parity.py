"""Z-score statistics match nnU-Net v2's own preprocessing on volumes with air around the scan."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference import zscore
from napari_vesuvius.core.inference.model_api import Normalization

pytest.importorskip("nnunetv2")
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    ZScoreNormalization,
)


def _scanned_cylinder(shape: tuple[int, int, int] = (24, 40, 36), seed: int = 0) -> np.ndarray:
    """uint16 CT-like values inside an off-centre cylinder, exact zeros (air) around it.

    Zeros are also scattered inside (enclosed: nnU-Net's filled holes count them) and the
    cylinder is cut by the volume faces in z, so the bounding box is smaller in y/x only.
    """
    rng = np.random.default_rng(seed)
    _z, y, x = np.indices(shape)
    inside = (y - 22) ** 2 + (x - 15) ** 2 < 11**2
    volume = np.where(inside, rng.normal(20000, 3000, shape).clip(1, 65535), 0).astype(np.uint16)
    holes = inside & (rng.random(shape) < 0.01)
    holes[:, 22, 15] = True  # a zero line through the middle (enclosed except at the z faces)
    volume[holes] = 0
    return volume


def _nnunet(volume: np.ndarray, use_mask: bool) -> tuple[float, float, np.ndarray, np.ndarray]:
    """nnU-Net's mean/std and normalised crop for one channel, with its own functions."""
    data, seg, _bbox = crop_to_nonzero(volume[None].astype(np.float32))
    image = data[0]
    mask = seg[0] >= 0 if use_mask else np.ones(image.shape, bool)
    mean, std = float(image[mask].astype(np.float64).mean()), float(image[mask].astype(np.float64).std())
    scheme = ZScoreNormalization(use_mask_for_norm=use_mask, intensityproperties={})
    normalised = scheme.run(image.copy(), seg[0])
    return mean, std, normalised, mask


#: nnU-Net's ZScoreNormalization with use_mask_for_norm, as the plugin stores it
MASKED = Normalization(kind="zscore", input_range=None, use_mask=True)


def _crop(volume: np.ndarray) -> np.ndarray:
    return volume[tuple(slice(a, b) for a, b in crop_to_nonzero(volume[None])[2])]


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_unmasked_statistics_ignore_the_air_like_nnunet(lazy: bool, dtype: str) -> None:
    volume = _scanned_cylinder().astype(dtype)  # 8/16 bit: exact histogram moments; float: per chunk
    mean, std, expected, _ = _nnunet(volume, use_mask=False)
    source = da.from_array(volume, chunks=(7, 11, 13)) if lazy else volume
    fitted = Normalization(kind="zscore").fit(source)
    assert fitted.mean == pytest.approx(mean, rel=1e-6) and fitted.std == pytest.approx(std, rel=1e-6)
    assert abs(fitted.mean - volume.mean()) > 1000  # the whole-volume mean (with the air) is far off
    np.testing.assert_allclose(fitted.apply(_crop(volume)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_masked_statistics_use_the_hole_filled_mask_like_nnunet(lazy: bool, dtype: str) -> None:
    volume = _scanned_cylinder(seed=1).astype(dtype)
    mean, std, expected, mask = _nnunet(volume, use_mask=True)
    crop = _crop(volume)
    assert np.any(mask & (crop == 0))  # the fixture has enclosed zeros, which nnU-Net counts
    source = da.from_array(volume, chunks=(5, 16, 9)) if lazy else volume
    fitted = MASKED.fit(source)
    assert fitted.mean == pytest.approx(mean, rel=1e-6) and fitted.std == pytest.approx(std, rel=1e-6)
    out = fitted.apply(crop)
    scanned = crop != 0  # tiles cannot see enclosure: exact zeros stay 0 (documented difference)
    np.testing.assert_allclose(out[scanned], expected[scanned], rtol=1e-4, atol=1e-4)
    assert np.all(out[~mask] == 0) and np.all(expected[~mask] == 0)


def test_large_lazy_box_leaves_enclosed_zeros_out(monkeypatch: pytest.MonkeyPatch) -> None:
    volume = _scanned_cylinder(seed=2)
    monkeypatch.setattr(zscore, "FILL_HOLES_MAX_VOXELS", 10)
    mean, std = zscore.zscore_statistics(da.from_array(volume, chunks=8), use_mask=True)
    scanned = volume[volume != 0].astype(np.float64)
    assert mean == pytest.approx(scanned.mean(), rel=1e-9) and std == pytest.approx(scanned.std(), rel=1e-9)


def test_edge_cases_match_nnunet() -> None:
    empty = np.zeros((4, 5, 6), np.uint8)
    assert zscore.nonzero_box(empty) == (slice(0, 4), slice(0, 5), slice(0, 6))  # nnU-Net keeps it whole
    fitted = Normalization(kind="zscore").fit(empty)
    assert fitted.mean == 0.0 and fitted.std == zscore.STD_EPSILON
    assert MASKED.fit(empty).std == 1.0  # no scanned voxel: identity scale
    constant = np.full((3, 4, 5), 7, np.uint8)
    fitted = Normalization(kind="zscore").fit(constant)
    assert fitted.mean == 7.0 and fitted.std == zscore.STD_EPSILON
    corner = np.zeros((6, 6, 6), np.float32)
    corner[4:, 1:3, 5] = [[1.0, 3.0], [5.0, 7.0]]
    assert zscore.nonzero_box(corner) == (slice(4, 6), slice(1, 3), slice(5, 6))
    assert Normalization(kind="zscore").fit(corner).mean == pytest.approx(4.0)


def test_non_finite_voxels_inside_the_box_are_refused() -> None:
    volume = _scanned_cylinder().astype(np.float32)
    volume[5, 22, 20] = np.nan
    for normalization in (Normalization(kind="zscore"), MASKED):
        with pytest.raises(VolumeError, match="NaN or infinite"):
            normalization.fit(da.from_array(volume, chunks=10))
