"""Components: labelling by size, dust, keep-k, remove/keep by id, 2D holes and 3D cavities."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vesuvius.core.postprocess import (
    ComponentFilter,
    fill_cavities_3d,
    fill_holes_2d,
    filter_components,
    keep_components,
    keep_largest_components,
    label_components,
    remove_components,
    remove_dust,
)


def _three_blobs() -> np.ndarray:
    """Components of 27, 8 and 2 voxels; the 2-voxel one is joined only through a corner."""
    mask = np.zeros((12, 12, 12), bool)
    mask[1:4, 1:4, 1:4] = True  # 27
    mask[7:9, 7:9, 7:9] = True  # 8
    mask[5, 10, 10] = mask[6, 11, 11] = True  # 2, diagonal neighbours (26-connected)
    return mask


def test_label_components_sorted_by_size() -> None:
    labels, sizes = label_components(_three_blobs())
    assert labels.dtype == np.uint32
    assert sizes.tolist() == [27, 8, 2]
    assert labels[2, 2, 2] == 1 and labels[8, 8, 8] == 2
    assert labels[5, 10, 10] == labels[6, 11, 11] == 3
    assert labels[0, 0, 0] == 0


def test_label_components_empty() -> None:
    labels, sizes = label_components(np.zeros((3, 3, 3), bool))
    assert not labels.any() and sizes.size == 0


def test_remove_and_keep_components_by_id() -> None:
    mask = _three_blobs()
    labels, _ = label_components(mask)
    removed = remove_components(mask, labels, [1, 3])
    assert removed.sum() == 8 and removed[8, 8, 8]
    kept = keep_components(mask, labels, [3, 99])
    assert kept.sum() == 2 and kept[6, 11, 11]


@pytest.mark.parametrize("min_size, expected", [(0, 37), (2, 37), (3, 35), (9, 27), (28, 0)])
def test_dust_removes_exactly_components_below_size(min_size: int, expected: int) -> None:
    assert remove_dust(_three_blobs(), min_size).sum() == expected


def test_keep_largest_k() -> None:
    mask = _three_blobs()
    assert keep_largest_components(mask, 1).sum() == 27
    assert keep_largest_components(mask, 2).sum() == 35
    assert keep_largest_components(mask, 5).sum() == 37
    assert keep_largest_components(mask, 0).sum() == 37
    assert filter_components(mask, min_size=9, keep_largest=2).sum() == 27


def test_keep_largest_matches_cc3d() -> None:
    import cc3d

    rng = np.random.default_rng(3)
    mask = rng.random((20, 20, 20)) < 0.2
    ours = keep_largest_components(mask, 5)
    sizes = np.sort(np.bincount(cc3d.connected_components(mask, connectivity=26)[mask]))[::-1]
    assert ours.sum() == sizes[:5].sum()


def test_fill_holes_2d_per_slice_and_axis() -> None:
    mask = np.zeros((5, 9, 9), bool)
    mask[2, 2:7, 2:7] = True
    mask[2, 3:6, 3:6] = False  # a 3x3 hole in slice z=2
    mask[2, 4, 4] = True  # an island inside the hole
    mask[4, 0:3, 0:3] = True
    mask[4, 0, 0] = False  # not a hole: touches the slice edge
    filled = fill_holes_2d(mask, axis=0)
    assert filled[2, 2:7, 2:7].all()
    assert not filled[4, 0, 0]
    assert filled.sum() == mask.sum() + 8
    # along y the ring is a set of line segments: nothing to fill
    assert np.array_equal(fill_holes_2d(mask, axis=1), mask)
    # a hole bigger than max_size stays open
    assert np.array_equal(fill_holes_2d(mask, axis=0, max_size=7), mask)
    assert fill_holes_2d(mask, axis=0, max_size=8).sum() == mask.sum() + 8


def test_fill_holes_2d_matches_scipy_per_slice() -> None:
    rng = np.random.default_rng(4)
    mask = rng.random((6, 30, 31)) < 0.45
    expected = np.stack([ndi.binary_fill_holes(s) for s in mask])
    assert np.array_equal(fill_holes_2d(mask, axis=0), expected)
    expected_x = np.stack([ndi.binary_fill_holes(mask[:, :, i]) for i in range(31)], axis=2)
    assert np.array_equal(fill_holes_2d(mask, axis=2), expected_x)


def test_fill_cavities_3d() -> None:
    mask = np.zeros((10, 10, 10), bool)
    mask[1:6, 1:6, 1:6] = True
    mask[2:5, 2:5, 2:5] = False  # 27-voxel cavity
    mask[3, 3, 3] = True  # with a voxel floating in it
    mask[7:10, 7:10, 7:10] = True
    mask[8:10, 8, 8] = False  # opening to the face: not a cavity
    filled = fill_cavities_3d(mask)
    assert filled[1:6, 1:6, 1:6].all()
    assert not filled[9, 8, 8]
    assert filled.sum() == mask.sum() + 26
    assert np.array_equal(fill_cavities_3d(mask, max_size=25), mask)
    reference = ndi.binary_fill_holes(mask)  # 6-connected background, like ours
    assert np.array_equal(filled, reference)


def _brute_filter(mask: np.ndarray, min_size: int, keep_largest: int) -> np.ndarray:
    """Reference: scipy labels (raster order), drop small, keep the k largest (stable ties)."""
    labels, count = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    ids = [i + 1 for i in range(count) if sizes[i] >= min_size]
    if keep_largest > 0:
        ids = sorted(ids, key=lambda i: -sizes[i - 1])[:keep_largest]
    return np.isin(labels, ids)


def test_component_filter_equals_brute_force_for_many_values() -> None:
    rng = np.random.default_rng(7)
    for trial in range(4):
        mask = ndi.uniform_filter(rng.random((14, 17, 15)), 2) > 0.62 - 0.02 * trial
        reused = ComponentFilter(mask)  # one labelling, many values
        for min_size in (0, 1, 2, 3, 5, 12, 40, 10**6):
            for keep in (0, 1, 2, 3, 7, 10**6):
                expected = _brute_filter(mask, min_size, keep)
                np.testing.assert_array_equal(reused.filter(min_size, keep), expected)
                np.testing.assert_array_equal(filter_components(mask, min_size, keep), expected)
    assert not ComponentFilter(np.zeros((3, 3, 3), bool)).filter(2, 1).any()


def test_component_filter_returns_new_masks() -> None:
    mask = _three_blobs()
    components = ComponentFilter(mask)
    kept = components.filter(0, 0)
    kept[...] = False  # the caller owns its mask
    assert components.filter(0, 0).sum() == 37 and components.filter(3, 0).sum() == 35
    assert components.keep_table(0, 5) is None  # nothing to drop: no lookup at all


def test_labelling_without_gil_gives_the_same_masks_and_labels(monkeypatch) -> None:
    """Slab-by-slab labelling (releases the GIL between slabs, for GUI workers) equals one cc3d call:
    labels, masks, sizes, keep-k ties, 2D holes; 26-, 18- and 6-connected."""
    import threading

    from napari_vesuvius.core.postprocess import (
        PostprocessConfig,
        components,
        fill_holes_2d,
        label_components,
        labelling_without_gil,
        run_pipeline,
    )

    rng = np.random.default_rng(3)
    mask = rng.random((24, 30, 28)) < 0.3
    monkeypatch.setattr(components, "SLAB_VOXELS", 3 * 30 * 28)  # slabs of 3 planes
    for connectivity in (26, 18, 6):
        labels, count = components._cc3d(mask, connectivity)
        with labelling_without_gil():
            slab_labels, slab_count = components._label(mask, connectivity)
        assert slab_count == count and count > 1
        np.testing.assert_array_equal(slab_labels, labels)
    prob = rng.random((24, 30, 28)).astype(np.float32)
    config = PostprocessConfig(dust_size=4, keep_largest=5, fill_cavities=True, fill_holes=True)
    expected = (label_components(mask), run_pipeline(prob, config), fill_holes_2d(mask, 1))
    with labelling_without_gil():
        got = (label_components(mask), run_pipeline(prob, config), fill_holes_2d(mask, 1))
        other_thread: list[bool] = []  # the switch is per thread
        thread = threading.Thread(target=lambda: other_thread.append(components._THREAD.__dict__ == {}))
        thread.start()
        thread.join()
    np.testing.assert_array_equal(got[0][0], expected[0][0])
    np.testing.assert_array_equal(got[0][1], expected[0][1])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])
    assert other_thread == [True]
    assert not components._THREAD.without_gil
