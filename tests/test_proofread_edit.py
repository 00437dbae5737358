"""Accepting predictions as labels, boxes, the changes (diff) and the component tools."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.labels import IGNORE, SURFACE
from napari_vesuvius.core.postprocess import PostprocessConfig, label_components, run_pipeline
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.proofread.accept import iter_accept
from napari_vesuvius.core.proofread.diff import (
    ADDED,
    FROM_IGNORE,
    REMOVED,
    TO_IGNORE,
    diff_counts,
    label_diff,
)
from napari_vesuvius.core.proofread.region import format_box, grow_box, parse_box, visible_box
from napari_vesuvius.core.proofread.tools import (
    delete_components,
    keep_only_components,
    remove_diagonal_bridges,
    split_component,
)


def _sheets() -> tuple[np.ndarray, np.ndarray]:
    """Two plates (z 8-10 and 18-20) joined by a weak 2×2 column; labels and probability."""
    labels = np.zeros((30, 20, 20), np.uint8)
    prob = np.full(labels.shape, 0.02, np.float32)
    for z0 in (8, 18):
        labels[z0 : z0 + 3] = SURFACE
        prob[z0 : z0 + 3] = 0.9
    labels[11:18, 9:11, 9:11] = SURFACE
    prob[11:18, 9:11, 9:11] = 0.45
    labels[0:3, 0:3, 0:3] = IGNORE
    return labels, prob


def _count(mask: np.ndarray, connectivity: int = 26) -> int:
    return int(cc3d.connected_components(mask, connectivity=connectivity, return_N=True)[1])


def test_boxes_parse_clip_and_format() -> None:
    shape = (10, 20, 30)
    assert parse_box("", shape) == (slice(0, 10), slice(0, 20), slice(0, 30))
    assert format_box(parse_box("2:5, :, 25:99", shape)) == "2:5,0:20,25:30"
    for bad, message in (("1:2,3:4", "three ranges"), ("a:b,0:1,0:1", "integers"), ("5:5,:,:", "empty")):
        with pytest.raises(ValueError, match=message):
            parse_box(bad, shape)
    outer, inner = grow_box(parse_box("2:5,0:20,10:12", shape), 4, shape)
    assert format_box(outer) == "0:9,0:20,6:16" and format_box(inner) == "2:5,0:20,4:6"
    box = visible_box([0, 3.4, 5], [9, 12.6, 25], [1, 2], [7, 0, 0], depth=4, shape=shape)
    assert format_box(box) == "5:9,3:13,5:26"


def test_accepting_a_probability_keeps_the_ignore_regions() -> None:
    labels, prob = _sheets()
    existing = np.zeros_like(labels)
    existing[0:12, 0:5] = IGNORE
    config = PostprocessConfig(dust_size=0, closing_z=0, closing_xy=0)
    accepted = run_job(iter_accept(prob, is_probability=True, labels=existing, config=config))
    mask = run_pipeline(prob, config)
    np.testing.assert_array_equal(accepted.mask, mask)
    np.testing.assert_array_equal(accepted.labels == IGNORE, existing == IGNORE)
    np.testing.assert_array_equal(accepted.labels == SURFACE, mask & (existing != IGNORE))
    assert accepted.ignored_voxels == int((existing == IGNORE).sum()) and accepted.probability is not None


def test_accepting_a_box_post_processes_with_context_and_a_mask_as_is() -> None:
    labels, prob = _sheets()
    config = PostprocessConfig(threshold_mode="hysteresis", t_low=0.3, t_high=0.85, dust_size=0)
    box = parse_box("11:16,5:15,5:15", prob.shape)  # only weak column voxels inside the box
    accepted = run_job(iter_accept(prob, is_probability=True, box=box, config=config))
    np.testing.assert_array_equal(accepted.mask, run_pipeline(prob, config)[box])  # seeds outside the box
    assert accepted.labels.shape == (5, 10, 10) and accepted.labels.any()
    from_mask = run_job(iter_accept(labels, is_probability=False, box=box))
    np.testing.assert_array_equal(from_mask.labels, (labels[box] == SURFACE).astype(np.uint8))
    assert from_mask.probability is None


def test_accept_refuses_regions_too_large_and_mismatched_shapes() -> None:
    _, prob = _sheets()
    with pytest.raises(VolumeError, match="too large to edit in memory"):
        run_job(iter_accept(prob, is_probability=True, max_voxels=1000))
    with pytest.raises(VolumeError, match="label volume shape"):
        run_job(iter_accept(prob, is_probability=True, labels=np.zeros((2, 2, 2), np.uint8)))


def test_the_diff_reports_each_kind_of_change() -> None:
    baseline = np.array([[[0, 1, 1, 0, 2, 2, 1]]], np.uint8)
    edited = np.array([[[1, 0, 2, 2, 0, 1, 1]]], np.uint8)
    diff = label_diff(baseline, edited)
    assert diff.tolist() == [[[ADDED, REMOVED, TO_IGNORE, TO_IGNORE, FROM_IGNORE, FROM_IGNORE, 0]]]
    assert diff_counts(diff) == {"added": 1, "removed": 1, "to ignore": 2, "from ignore": 2}
    assert not label_diff(baseline, baseline).any()


def test_delete_and_keep_components_leave_ignore_alone() -> None:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = SURFACE  # 8 voxels: component 2
    labels[6:9, 6:9, 6:9] = SURFACE  # 27 voxels: component 1
    labels[0, 9, 9] = IGNORE
    components, sizes = label_components(labels == SURFACE)
    assert sizes.tolist() == [27, 8]
    deleted = delete_components(labels, components, [2])
    assert int((deleted == SURFACE).sum()) == 27 and deleted[0, 9, 9] == IGNORE
    kept = keep_only_components(labels, components, [2])
    assert int((kept == SURFACE).sum()) == 8 and kept[0, 9, 9] == IGNORE


def test_split_cuts_a_merged_component_at_its_weakest_voxels() -> None:
    labels, prob = _sheets()
    components, _ = label_components(labels == SURFACE)
    assert _count(labels == SURFACE) == 1
    result = split_component(labels, components, 1, prob, min_part=50)
    assert result.parts == 2 and 0.45 < result.threshold <= 0.9
    assert _count(result.labels == SURFACE) == 2
    assert result.removed == 4  # one 2×2 layer of the weak column, nothing of the plates
    assert (result.labels[8:11] == SURFACE).all() and (result.labels[18:21] == SURFACE).all()
    np.testing.assert_array_equal(result.labels == IGNORE, labels == IGNORE)
    with pytest.raises(ValueError, match=r"does not split at threshold 0\.300"):
        split_component(labels, components, 1, prob, threshold=0.3)
    with pytest.raises(ValueError, match="component 5 does not exist"):
        split_component(labels, components, 5, prob)


def test_diagonal_bridges_between_sheets_are_removed() -> None:
    labels = np.zeros((12, 10, 30), np.uint8)
    labels[0:3, :, 0:10] = SURFACE
    labels[3:6, :, 10:20] = SURFACE  # touches the first sheet only along an edge (z 2|3, x 9|10)
    labels[9:12, :, 23:30] = SURFACE
    for step in range(3):  # a one-voxel diagonal staircase from the second sheet to the third
        labels[6 + step, 5, 20 + step] = SURFACE
    labels[11, 0, 0] = IGNORE
    assert _count(labels == SURFACE) == 1 and _count(labels == SURFACE, 6) == 6
    result = remove_diagonal_bridges(labels, min_sheet=20)
    assert (result.components_before, result.components_after) == (1, 3)
    assert result.removed == 10 + 3  # one row of the smaller sheet's edge, and the staircase
    assert _count(result.labels == SURFACE) == 3 and result.labels[11, 0, 0] == IGNORE
    again = remove_diagonal_bridges(result.labels, min_sheet=20)
    assert again.removed == 0 and again.rounds == 0
