"""Opening and anisotropic closing: known answers, scipy equivalence, border behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vesuvius.core.postprocess import binary_closing, binary_opening, ellipsoid_footprint


def test_ellipsoid_footprint_shapes() -> None:
    assert ellipsoid_footprint(0, 0).shape == (1, 1, 1)
    line = ellipsoid_footprint(2, 0)
    assert line.shape == (5, 1, 1) and line.all()
    fp = ellipsoid_footprint(2, 1)
    assert fp.sum() == 9  # z-line of 5 plus the 4 in-plane neighbours of the centre
    assert fp[2].sum() == 5 and fp[:, 1, 1].all()
    disk = ellipsoid_footprint(0, 2)
    assert disk.shape == (1, 5, 5) and disk.sum() == 13


def _z_gap_volume(gap: int) -> np.ndarray:
    mask = np.zeros((12, 6, 6), bool)
    mask[2:5, 1:5, 1:5] = True
    mask[5 + gap : 8 + gap, 1:5, 1:5] = True
    return mask


def test_closing_bridges_z_gap_of_two_with_z_radius_one_only() -> None:
    mask = _z_gap_volume(2)
    closed = binary_closing(mask, 1, 0)
    assert closed[5:7, 1:5, 1:5].all()  # gap filled
    assert np.array_equal(closed & ~mask, np.pad(np.ones((2, 4, 4), bool), ((5, 5), (1, 1), (1, 1))))
    assert np.array_equal(binary_closing(mask, 0, 0), mask)
    assert np.array_equal(binary_closing(mask, 0, 1), mask)  # xy radius does not bridge z
    assert not binary_closing(_z_gap_volume(3), 1, 0)[5:8].any()  # a gap of 3 needs radius 2


def test_closing_does_not_shrink_at_volume_faces() -> None:
    mask = np.zeros((8, 8, 8), bool)
    mask[0:3, 0:8, 0:2] = True  # touches several faces
    mask[5, 5, 7] = True
    for rz, rxy in [(1, 1), (2, 1), (3, 2)]:
        closed = binary_closing(mask, rz, rxy)
        assert np.array_equal(closed & mask, mask), (rz, rxy)


@pytest.mark.parametrize("rz, rxy", [(0, 1), (1, 0), (2, 1), (1, 2), (3, 3), (1, 9)])
def test_matches_scipy_on_padded_volume(rz: int, rxy: int) -> None:
    rng = np.random.default_rng(rz * 10 + rxy)
    footprint = ellipsoid_footprint(rz, rxy)
    pad = ((rz, rz), (rxy, rxy), (rxy, rxy))
    for shape in [(9, 13, 21), (5, 7, 70)]:
        mask = rng.random(shape) < 0.35
        inner = tuple(slice(p, p + n) for (p, _), n in zip(pad, shape, strict=True))
        expected_close = ndi.binary_closing(np.pad(mask, pad), footprint)[inner]
        expected_open = ndi.binary_opening(np.pad(mask, pad), footprint)[inner]
        assert np.array_equal(binary_closing(mask, rz, rxy), expected_close)
        assert np.array_equal(binary_opening(mask, rz, rxy), expected_open)


def test_opening_removes_thin_lines_and_keeps_thick_slab() -> None:
    mask = np.zeros((10, 12, 12), bool)
    mask[2:8, 2:10, 2:10] = True  # thick slab
    mask[5, 11, :] = True  # a free one-voxel-thin line
    opened = binary_opening(mask, 1, 1)
    assert not opened[5, 11].any()
    assert opened[3:7, 3:9, 3:9].all()
    assert not (opened & ~mask).any()


def test_empty_and_full_masks() -> None:
    empty = np.zeros((4, 5, 6), bool)
    assert not binary_closing(empty, 2, 1).any()
    full = np.ones((4, 5, 6), bool)
    assert binary_closing(full, 2, 1).all()
    assert not binary_opening(full, 3, 3).any()  # zeros outside the volume erode a small full box
