"""SurfaceDice and VOI terms of the leaderboard metric: hand-made cases and reference equality."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from napari_vesuvius.core.metric.surface_dice import surface_dice, surfel_area_table, tolerance_offsets
from napari_vesuvius.core.metric.voi import voi

A = math.sqrt(3) / 8  # area of the corner triangle of a lone voxel


def _voxel(shape: tuple[int, int, int], *points: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for point in points:
        mask[point] = True
    return mask


def _brute_surface_dice(pred: np.ndarray, label: np.ndarray, tolerance: float) -> float:
    """Surfels by looping over every corner of the zero-padded grid, distances by all pairs."""
    table = surfel_area_table()

    def surfels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        padded = np.pad(mask, 1).astype(int)
        points, areas = [], []
        for corner in itertools.product(*(range(n + 1) for n in mask.shape)):
            block = padded[tuple(slice(c, c + 2) for c in corner)]
            code = int(sum(int(v) << (7 - i) for i, v in enumerate(block.ravel())))
            if code not in (0, 255):
                points.append(corner)
                areas.append(table[code])
        return np.array(points, dtype=float), np.array(areas)

    p_points, p_areas = surfels(pred)
    l_points, l_areas = surfels(label)
    distances = np.sqrt(((p_points[:, None, :] - l_points[None, :, :]) ** 2).sum(-1))
    p_hit = p_areas[distances.min(axis=1) <= tolerance].sum()
    l_hit = l_areas[distances.min(axis=0) <= tolerance].sum()
    return float((p_hit + l_hit) / (p_areas.sum() + l_areas.sum()))


# ----------------------------------------------------------------------------------------- surfel table


def test_surfel_area_table_known_codes() -> None:
    table = surfel_area_table()
    assert table[0] == 0 and table[255] == 0
    assert table[1] == pytest.approx(A)  # one voxel: a corner triangle
    assert table[0b00001111] == pytest.approx(1.0)  # half the block filled: a flat unit square
    assert table[0b00000011] == pytest.approx(math.sqrt(2) / 2)  # an edge: a diagonal rectangle
    np.testing.assert_allclose(table, table[::-1])  # a code and its complement bound the same surface


def test_surfel_area_table_scales_with_spacing() -> None:
    table = surfel_area_table((2.0, 2.0, 2.0))
    np.testing.assert_allclose(table, 4 * surfel_area_table())
    stretched = surfel_area_table((3.0, 1.0, 1.0))
    # the flat square of code 15 is perpendicular to axis 0: its area ignores the spacing along it
    assert stretched[0b00001111] == pytest.approx(1.0)


def test_tolerance_offsets_is_the_ball() -> None:
    offsets = tolerance_offsets(2.0, (1.0, 1.0, 1.0))
    assert len(offsets) == 33  # 1 + 6 + 12 + 8 + 6 (axis neighbours at exactly 2 included)
    assert tuple(offsets[0]) == (0, 0, 0)
    assert len(tolerance_offsets(0.0, (1.0, 1.0, 1.0))) == 1
    assert len(tolerance_offsets(1.0, (2.0, 1.0, 1.0))) == 5  # (0,0,0) and ±1 along y and x


# ----------------------------------------------------------------------------------------- SurfaceDice


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        ((0, 0, 0), 1.0),
        ((0, 0, 2), 1.0),  # facing corners exactly 2 apart count (≤ τ), the far ones too
        ((0, 0, 3), 0.5),  # only the 4 facing corners of each voxel are within 2
        ((0, 0, 4), 0.0),
        ((0, 1, 2), 0.75),  # 3 of 4 corners per face within 2: (2,1) is √5 away
    ],
)
def test_surface_dice_two_voxels(shift: tuple[int, int, int], expected: float) -> None:
    label = _voxel((8, 8, 10), (3, 3, 2))
    pred = _voxel((8, 8, 10), (3 + shift[0], 3 + shift[1], 2 + shift[2]))
    assert surface_dice(pred, label, tolerance=2.0) == pytest.approx(expected)


def test_surface_dice_empty_cases() -> None:
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = _voxel((5, 5, 5), (2, 2, 2))
    assert surface_dice(empty, empty) == 1.0
    assert surface_dice(full, empty) == 0.0
    assert surface_dice(empty, full) == 0.0


def test_surface_dice_mask_touching_the_border() -> None:
    """Surfels on the volume border (outside the voxel grid) are handled like the reference's padding."""
    label = np.ones((4, 5, 6), dtype=bool)
    pred = label.copy()
    pred[:, :, -1] = False
    assert surface_dice(pred, label, tolerance=0.0) == pytest.approx(_brute_surface_dice(pred, label, 0.0))
    assert surface_dice(pred, label, tolerance=1.0) == pytest.approx(1.0)


def test_surface_dice_sheet_with_a_hole_matches_brute_force() -> None:
    label = np.zeros((7, 12, 12), dtype=bool)
    label[3, 1:11, 1:11] = True
    pred = label.copy()
    pred[3, 4:8, 4:8] = False  # a hole: its rim is a surface the label does not have
    for tolerance in (0.0, 1.0, 2.0):
        expected = _brute_surface_dice(pred, label, tolerance)
        assert surface_dice(pred, label, tolerance=tolerance) == pytest.approx(expected, abs=1e-12)
    assert surface_dice(pred, label, tolerance=0.0) < 1.0
    # every rim corner is ≤ 2 from the sheet faces
    assert surface_dice(pred, label, tolerance=2.0) == pytest.approx(1.0)


def test_surface_dice_random_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(6):
        shape = tuple(int(n) for n in rng.integers(3, 8, size=3))
        pred = rng.random(shape) < 0.3
        label = rng.random(shape) < 0.3
        pred[0, 0, 0] = label[-1, -1, -1] = True
        for tolerance in (1.0, 2.0):
            expected = _brute_surface_dice(pred, label, tolerance)
            assert surface_dice(pred, label, tolerance=tolerance) == pytest.approx(expected, abs=1e-12)


def test_surface_dice_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3D"):
        surface_dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_dice(np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool), spacing=(1.0, 0.0, 1.0))


def test_surface_dice_equals_surface_distance_package() -> None:
    sd = pytest.importorskip("surface_distance")
    rng = np.random.default_rng(7)
    cases = [((1.0, 1.0, 1.0), 2.0), ((1.0, 1.0, 1.0), 1.0), ((2.0, 1.0, 0.5), 1.5), ((0.7, 1.3, 1.0), 2.0)]
    for index in range(16):
        spacing, tolerance = cases[index % len(cases)]
        shape = tuple(int(n) for n in rng.integers(4, 24, size=3))
        label = rng.random(shape) < rng.uniform(0.05, 0.5)
        pred = rng.random(shape) < rng.uniform(0.05, 0.5)
        if index % 2:  # blocky masks with large flat faces and exact-tolerance ties
            label = np.zeros(shape, bool)
            label[1:-1, shape[1] // 3 :, 1:] = True
            pred = np.roll(label, 2, axis=2)
        with np.errstate(all="ignore"):
            distances = sd.compute_surface_distances(label, pred, spacing)
            expected = sd.compute_surface_dice_at_tolerance(distances, tolerance)
        ours = surface_dice(pred, label, tolerance=tolerance, spacing=spacing)
        assert abs(ours - expected) < 1e-9, (index, ours, expected)


# ------------------------------------------------------------------------------------------------ VOI


def test_voi_identical_and_empty() -> None:
    mask = np.zeros((6, 6, 6), dtype=bool)
    assert voi(mask, mask).score == 1.0
    mask[1:3, 1:3, 1:5] = True
    mask[4, 4, 4] = True
    result = voi(mask, mask)
    assert (result.split, result.merge, result.score) == (0.0, 0.0, 1.0)
    assert result.n_label_components == 2


def test_voi_split_bar() -> None:
    """A bar cut in two by the prediction: H(PR|GT) is the entropy of (cut, left, right)."""
    label = np.zeros((4, 4, 11), dtype=bool)
    label[1:3, 1:3, 1:10] = True  # 36 voxels
    pred = label.copy()
    pred[:, :, 5] = False  # 4 voxels missing, two halves of 16
    result = voi(pred, label)
    p = np.array([4, 16, 16]) / 36
    assert result.split == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert result.merge == pytest.approx(0.0)
    assert result.score == pytest.approx(1 / (1 + 0.3 * result.split))


def test_voi_bridged_sheets() -> None:
    """Two sheets joined by a bridge: one predicted component holds both label components."""
    label = np.zeros((9, 8, 8), dtype=bool)
    label[2, 1:7, 1:7] = True  # 36
    label[6, 1:7, 1:7] = True  # 36
    pred = label.copy()
    pred[3:6, 3, 3] = True  # 3 bridge voxels, background in the label
    result = voi(pred, label)
    p = np.array([36, 36, 3]) / 75
    assert result.merge == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert result.split == pytest.approx(0.0)


def test_voi_dust_and_26_connectivity() -> None:
    label = np.zeros((10, 10, 10), dtype=bool)
    label[5, 1:9, 1:9] = True  # 64
    pred = label.copy()
    dust = [(1, 1, 1), (1, 8, 8), (8, 1, 8)]
    for point in dust:
        pred[point] = True
    pred[2, 2, 2] = True  # diagonal to (1,1,1): same 26-component
    result = voi(pred, label)
    n = 64 + 4
    # label 0 holds 4 voxels split over 3 predicted components (2, 1, 1)
    expected = 4 / n * float(-(np.array([0.5, 0.25, 0.25]) * np.log2([0.5, 0.25, 0.25])).sum())
    assert result.split == pytest.approx(expected)
    assert result.merge == pytest.approx(0.0)
    assert result.n_pred_components == 4


def test_voi_equals_skimage() -> None:
    cc3d = pytest.importorskip("cc3d")
    from skimage.metrics import variation_of_information

    rng = np.random.default_rng(11)
    for _ in range(12):
        shape = tuple(int(n) for n in rng.integers(3, 20, size=3))
        pred = rng.random(shape) < rng.uniform(0.02, 0.5)
        label = rng.random(shape) < rng.uniform(0.02, 0.5)
        union = pred | label
        if not union.any():
            continue
        gt_cc = cc3d.connected_components(label.astype(np.uint8), connectivity=26)
        pr_cc = cc3d.connected_components(pred.astype(np.uint8), connectivity=26)
        split, merge = variation_of_information(gt_cc[union], pr_cc[union])
        result = voi(pred, label)
        assert result.split == pytest.approx(split, abs=1e-10)
        assert result.merge == pytest.approx(merge, abs=1e-10)


def test_voi_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3D"):
        voi(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool))
    with pytest.raises(ValueError, match="connectivity"):
        voi(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool), connectivity=8)
