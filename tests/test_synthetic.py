"""Tests of the synthetic scroll fragment and the synthetic challenge dataset writer."""

from __future__ import annotations

import csv

import cc3d
import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.filters import threshold_otsu

from napari_vesuvius.core.labels import BACKGROUND, IGNORE, SURFACE
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.synthetic import (
    DEFAULT_SCROLL_IDS,
    SyntheticFragment,
    iter_write_challenge_dataset,
    make_fragment,
    write_challenge_dataset,
)

SEEDS = (1, 2, 9, 11)  # 2 has a merged pair; they cover all three stacking axes
SIZE = 112


@pytest.fixture(scope="module")
def fragments() -> dict[int, SyntheticFragment]:
    return {seed: make_fragment((SIZE, SIZE, SIZE), seed=seed) for seed in SEEDS}


def _along_stack(fragment: SyntheticFragment, volume: np.ndarray) -> np.ndarray:
    return np.moveaxis(volume, fragment.metadata["stack_axis"], 0)


def _band_extent(instances: np.ndarray, sheet: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column (stacking axis first): whether the sheet is there, its first and its last index."""
    mask = instances == sheet
    present = mask.any(axis=0)
    first = np.argmax(mask, axis=0)
    last = mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0)
    return present, first, last


def test_same_seed_same_arrays_other_seed_differs() -> None:
    a = make_fragment((40, 48, 56), seed=5)
    b = make_fragment((40, 48, 56), seed=5)
    c = make_fragment((40, 48, 56), seed=6)
    for name in ("image", "labels", "surface", "instances", "scan_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.metadata == b.metadata
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("stack_axis", [0, 1, 2])
def test_shapes_dtypes_and_label_values(stack_axis: int) -> None:
    shape = (40, 56, 72)
    fragment = make_fragment(shape, seed=2, stack_axis=stack_axis)
    assert fragment.image.shape == fragment.labels.shape == fragment.surface.shape == shape
    assert fragment.scan_mask.shape == fragment.instances.shape == shape
    assert fragment.image.dtype == fragment.labels.dtype == fragment.surface.dtype == np.uint8
    assert fragment.scan_mask.dtype == bool
    assert set(np.unique(fragment.labels)) <= {BACKGROUND, SURFACE, IGNORE}
    assert set(np.unique(fragment.surface)) <= {0, 1}
    assert fragment.metadata["stack_axis"] == stack_axis
    assert fragment.n_sheets == len(np.unique(fragment.instances)) - 1 >= 1
    # labels = surface where annotated, ignore elsewhere; the surface is the union of the sheets.
    annotated = fragment.labels != IGNORE
    np.testing.assert_array_equal(fragment.labels[annotated], fragment.surface[annotated])
    np.testing.assert_array_equal(fragment.surface.astype(bool), fragment.instances > 0)


def test_fractions_match_the_challenge(fragments: dict[int, SyntheticFragment]) -> None:
    surface = [float((f.labels == SURFACE).mean()) for f in fragments.values()]
    ignore = [float((f.labels == IGNORE).mean()) for f in fragments.values()]
    assert all(0.45 <= value <= 0.65 for value in ignore), ignore
    assert all(0.02 <= value <= 0.10 for value in surface), surface
    assert 0.03 <= np.mean(surface) <= 0.08
    for fragment, value in zip(fragments.values(), surface, strict=True):
        assert fragment.metadata["surface_fraction"] == pytest.approx(value)


def test_ignore_fraction_option_and_no_ignore() -> None:
    assert (
        make_fragment((64, 64, 64), seed=1, ignore_fraction=0.62).labels == IGNORE
    ).mean() == pytest.approx(0.62, abs=0.03)
    plain = make_fragment((64, 64, 64), seed=1, ignore_fraction=0.0)
    np.testing.assert_array_equal(plain.labels == IGNORE, ~plain.scan_mask)


def test_outside_the_scan_cylinder_is_air_and_ignored(fragments: dict[int, SyntheticFragment]) -> None:
    for fragment in fragments.values():
        scan = fragment.scan_mask
        assert 0 < (~scan).sum() < 0.3 * scan.size
        assert (scan == scan[:1]).all()  # a cylinder along z
        assert (fragment.image[~scan] == 0).all()
        assert (fragment.image[scan] > 0).all()
        assert (fragment.labels[~scan] == IGNORE).all()
        assert not fragment.surface[~scan].any()
        # Inside ignore regions the image is still real data.
        assert fragment.image[(fragment.labels == IGNORE) & scan].std() > 5


def test_sheet_thickness_and_bands(fragments: dict[int, SyntheticFragment]) -> None:
    """Along the stacking axis every sheet is one contiguous run of 3–8 voxels per column."""
    for fragment in fragments.values():
        instances = _along_stack(fragment, fragment.instances)
        scan = _along_stack(fragment, fragment.scan_mask)
        depth = instances.shape[0]
        runs = []
        for sheet in range(1, fragment.n_sheets + 1):
            present, first, last = _band_extent(instances, sheet)
            counts = (instances == sheet).sum(axis=0)
            np.testing.assert_array_equal(counts[present], (last - first + 1)[present])  # contiguous
            cols = np.nonzero(present & (first > 0) & (last < depth - 1))
            # Skip runs clipped by the scan cylinder's edge.
            clear = scan[(first[cols] - 1, *cols)] & scan[(last[cols] + 1, *cols)]
            runs.append(counts[cols][clear])
        runs_all = np.concatenate(runs)
        assert runs_all.size > 1000
        assert runs_all.min() >= 3 and runs_all.max() <= 8
        assert 5.0 <= runs_all.mean() <= 7.5


def test_tears_are_holes_in_the_sheets(fragments: dict[int, SyntheticFragment]) -> None:
    for fragment in fragments.values():
        torn = fragment.metadata["torn_sheets"]
        assert torn
        instances = _along_stack(fragment, fragment.instances)
        hole_pixels = 0
        for sheet in torn:
            footprint = (instances == sheet).any(axis=0)
            hole_pixels += int((ndimage.binary_fill_holes(footprint) & ~footprint).sum())
        assert hole_pixels >= 10


def test_near_touching_pairs_and_separation(fragments: dict[int, SyntheticFragment]) -> None:
    """Some neighbours come within 3 voxels; sheets touch (26-connect) only in recorded merges."""
    for seed, fragment in fragments.items():
        instances = _along_stack(fragment, fragment.instances)
        merged = {tuple(pair) for pair in fragment.metadata["merged_pairs"]}
        smallest = []
        for sheet in range(1, fragment.n_sheets):
            below, _, last_b = _band_extent(instances, sheet)
            above, first_a, _ = _band_extent(instances, sheet + 1)
            both = below & above
            if both.any():
                gap = int((first_a - last_b - 1)[both].min())
                assert gap >= (0 if (sheet, sheet + 1) in merged else 1), (seed, sheet, gap)
                smallest.append(gap)
        assert any(gap <= 3 for gap in smallest), (seed, smallest)
        components = cc3d.connected_components(fragment.surface, connectivity=26)
        touching = set()
        for component in range(1, int(components.max()) + 1):
            ids = tuple(int(i) for i in np.unique(fragment.instances[components == component]))
            if len(ids) > 1:
                touching.add(ids)
        assert touching <= merged, (seed, touching, merged)
    assert any(fragment.metadata["merged_pairs"] for fragment in fragments.values())


def test_no_merges_when_disabled() -> None:
    fragment = make_fragment((96, 96, 96), seed=3, merge_probability=0.0)
    assert fragment.metadata["merged_pairs"] == []
    components = cc3d.connected_components(fragment.surface, connectivity=26)
    pairs = np.stack([components.ravel(), fragment.instances.ravel()])[:, fragment.surface.ravel() > 0]
    unique_pairs = np.unique(pairs, axis=1)
    assert len(np.unique(unique_pairs[0])) == unique_pairs.shape[1]  # each component holds one sheet


def test_image_contrast_and_informative_but_not_trivial(fragments: dict[int, SyntheticFragment]) -> None:
    for fragment in fragments.values():
        scan = fragment.scan_mask
        sheet = fragment.surface.astype(bool)
        papyrus, gaps = fragment.image[sheet].mean(), fragment.image[scan & ~sheet].mean()
        assert 120 <= papyrus <= 210 and 15 <= gaps <= 70 and papyrus - gaps > 60
        # A blurred global threshold finds the sheets well, but not perfectly.
        blurred = ndimage.gaussian_filter(fragment.image.astype(np.float32), 1.0)
        predicted = (blurred > threshold_otsu(blurred[scan])) & scan
        dice = 2 * (predicted & sheet).sum() / (predicted.sum() + sheet.sum())
        chance = 2 * sheet.mean() * predicted.mean() / (sheet.mean() + predicted.mean())
        assert chance < 0.2 < 0.6 < dice < 0.97, dice


def test_bad_options_and_shapes() -> None:
    with pytest.raises(TypeError, match="unknown synthetic fragment option"):
        make_fragment((32, 32, 32), seed=0, sheet_count=3)
    with pytest.raises(ValueError, match="stack_axis"):
        make_fragment((32, 32, 32), seed=0, stack_axis=3)
    with pytest.raises(ValueError, match="shape"):
        make_fragment((32, 32), seed=0)
    with pytest.raises(ValueError, match="ignore_fraction"):
        make_fragment((32, 32, 32), seed=0, ignore_fraction=1.5)


def test_write_challenge_dataset_layout(tmp_path) -> None:
    layout = write_challenge_dataset(tmp_path / "data", n_train=3, n_test=2, shape=(32, 40, 48), seed=7)
    assert len(layout.train_ids) == 3 and len(layout.test_ids) == 2
    assert len(set(layout.train_ids + layout.test_ids)) == 5
    assert all(10**8 <= vid < 2**31 for vid in layout.train_ids + layout.test_ids)
    for csv_path, ids in ((layout.train_csv, layout.train_ids), (layout.test_csv, layout.test_ids)):
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["id", "scroll_id"]
        assert [int(row["id"]) for row in rows] == ids
        assert all(int(row["scroll_id"]) in DEFAULT_SCROLL_IDS for row in rows)
    paths = [layout.train_image(i) for i in layout.train_ids] + [
        layout.train_label(i) for i in layout.train_ids
    ]
    paths += [layout.test_image(i) for i in layout.test_ids] + [layout.test_label(i) for i in layout.test_ids]
    for path in paths:
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == 32
            assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
            assert tif.pages[0].shape == (40, 48)
            volume = tif.asarray()
        assert volume.shape == (32, 40, 48) and volume.dtype == np.uint8
    first = layout.train_ids[0]
    expected = make_fragment((32, 40, 48), seed=layout.seeds[first])
    np.testing.assert_array_equal(tifffile.imread(layout.train_image(first)), expected.image)
    np.testing.assert_array_equal(tifffile.imread(layout.train_label(first)), expected.labels)
    assert not (tmp_path / "data" / "train_labels" / f"{layout.test_ids[0]}.tif").exists()
    assert not list((tmp_path / "data").rglob("*.tmp"))
    again = write_challenge_dataset(tmp_path / "again", n_train=3, n_test=2, shape=(32, 40, 48), seed=7)
    assert again.train_ids == layout.train_ids and again.scroll_ids == layout.scroll_ids


def test_dataset_writer_options(tmp_path) -> None:
    layout = write_challenge_dataset(
        tmp_path, n_train=1, n_test=1, shape=(24, 24, 24), scroll_ids=[1667], write_test_labels=False
    )
    assert set(layout.scroll_ids.values()) == {1667}
    assert not (tmp_path / "test_labels_hidden").exists()
    with pytest.raises(ValueError, match="at least one volume"):
        write_challenge_dataset(tmp_path / "none", n_train=0, n_test=0)


def test_dataset_writer_reports_progress_and_cancels_cleanly(tmp_path) -> None:
    job = iter_write_challenge_dataset(tmp_path, n_train=2, n_test=1, shape=(24, 24, 24))
    first = next(job)
    assert isinstance(first, Progress) and (first.done, first.total) == (0, 3)
    next(job)
    job.close()  # cancelled after one volume: no CSVs, no temporary files
    assert not (tmp_path / "train.csv").exists() and not (tmp_path / "test.csv").exists()
    assert len(list((tmp_path / "train_images").iterdir())) == 1
    assert not list(tmp_path.rglob("*.tmp"))
