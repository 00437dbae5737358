"""Tests of domain randomisation in the synthetic generator (``core/synthetic/domain.py``)."""

from __future__ import annotations

import hashlib
import itertools
import json

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from napari_vesuvius.core.labels import IGNORE
from napari_vesuvius.core.synthetic import (
    SUBRANGE_AXES,
    DomainRanges,
    SyntheticFragment,
    make_fragment,
    randomised_fragment,
)

SIZE = (56, 56, 56)
SEEDS = (0, 1, 2, 3)
# make_fragment(shape, seed) with default options, hashed before domain randomisation was added:
# the sample data, the existing tests and the original-fragment benchmark row depend on these bytes.
DEFAULT_HASHES = {
    ((48, 48, 48), 0): "b507323054ad7cb2",
    ((64, 64, 64), 1): "ba673786fd2b626b",
    ((40, 56, 72), 3): "58acf92db85cf682",
}


def _hash(fragment: SyntheticFragment) -> str:
    digest = hashlib.sha256()
    for array in (fragment.image, fragment.labels, fragment.instances, fragment.scan_mask):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _gaps(fragment: SyntheticFragment, *, skip_close: bool = False) -> np.ndarray:
    """Air gap (voxels along the stacking axis) between consecutive sheets, over columns holding both.

    ``skip_close`` leaves out the pairs made to converge (the wide mode's close and merged pairs).
    """
    instances = np.moveaxis(fragment.instances, fragment.metadata["stack_axis"], 0)
    close = {tuple(pair) for key in ("close_pairs", "merged_pairs") for pair in fragment.metadata[key]}
    gaps = []
    for sheet in range(1, int(instances.max())):
        if skip_close and (sheet, sheet + 1) in close:
            continue
        below, above = instances == sheet, instances == sheet + 1
        last = below.shape[0] - 1 - np.argmax(below[::-1], axis=0)
        first = np.argmax(above, axis=0)
        both = below.any(axis=0) & above.any(axis=0)
        gaps.append((first - last - 1)[both])
    return np.concatenate(gaps) if gaps else np.zeros(0, int)


def _contrast_to_noise(fragment: SyntheticFragment) -> float:
    """(mean sheet - mean air) / air std, air = scanned voxels at least 3 voxels from any sheet."""
    sheet = fragment.surface.astype(bool)
    air = fragment.scan_mask & ~ndimage.binary_dilation(sheet, iterations=3)
    image = fragment.image.astype(np.float32)
    return float((image[sheet].mean() - image[air].mean()) / image[air].std())


def _forced(seed: int, **tags: str) -> SyntheticFragment:
    return randomised_fragment(SIZE, seed, subranges=tags)


@pytest.mark.parametrize(("shape", "seed"), list(DEFAULT_HASHES))
def test_default_make_fragment_is_bit_identical(shape: tuple[int, int, int], seed: int) -> None:
    assert _hash(make_fragment(shape, seed=seed)) == DEFAULT_HASHES[(shape, seed)]


def test_deterministic_per_seed_and_metadata_records_the_draw() -> None:
    first, again, other = (randomised_fragment((40, 48, 56), seed) for seed in (5, 5, 6))
    for name in ("image", "labels", "surface", "instances", "scan_mask"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.metadata == again.metadata
    assert not np.array_equal(first.image, other.image)
    meta = json.loads(json.dumps(first.metadata))  # JSON-serialisable as it is
    assert meta["seed"] == 5 and meta["shape"] == [40, 48, 56]
    assert set(meta["subranges"]) == set(SUBRANGE_AXES)
    assert all(meta["subranges"][axis] in tags for axis, tags in SUBRANGE_AXES.items())
    for key in ("gap_range", "contrast_range", "intensity_scale", "psf_axis_factors", "scan_radius"):
        assert key in meta["domain"]
    forced = randomised_fragment((40, 48, 56), 5, subranges={"packing": "packed"})
    assert forced.metadata["subranges"]["packing"] == "packed"
    assert forced.metadata["domain"]["packing"] == "tight"


def test_both_tags_of_every_axis_are_drawn() -> None:
    from napari_vesuvius.core.synthetic.domain import domain_options

    drawn = [domain_options(seed)[0] for seed in range(40)]
    for axis, tags in SUBRANGE_AXES.items():
        share = np.mean([tag[axis] == tags[0] for tag in drawn])
        assert 0.25 <= share <= 0.75, (axis, share)


def test_labels_match_the_sheets_and_outside_the_scan_is_zero() -> None:
    for seed in SEEDS:
        fragment = randomised_fragment(SIZE, seed, subranges={"packing": ("packed", "separated")[seed % 2]})
        scan = fragment.scan_mask
        assert (fragment.image[~scan] == 0).all() and (fragment.image[scan] >= 1).all()
        assert (fragment.labels[~scan] == IGNORE).all() and not fragment.surface[~scan].any()
        np.testing.assert_array_equal(fragment.surface.astype(bool), fragment.instances > 0)
        annotated = fragment.labels != IGNORE
        np.testing.assert_array_equal(fragment.labels[annotated], fragment.surface[annotated])
        assert fragment.surface[scan].mean() >= 0.01  # something to learn inside the scan


def test_small_scan_radius_leaves_much_of_the_volume_outside() -> None:
    ranges = DomainRanges(scan_radius=(0.55, 0.6))
    fragment = randomised_fragment(SIZE, 3, ranges=ranges)
    assert fragment.scan_mask.mean() < 0.45
    assert (fragment.image[~fragment.scan_mask] == 0).all()


def test_packed_sheets_have_small_gaps_touching_spots_and_more_papyrus() -> None:
    packed = [_forced(seed, packing="packed") for seed in SEEDS]
    separated = [_forced(seed, packing="separated") for seed in range(8)]  # small volumes: few wide pairs
    for fragment in packed:
        gaps = _gaps(fragment)
        assert gaps.size and np.median(gaps) <= 5, np.median(gaps)  # along the axis: ≥ 1 + tilt slope
    assert any((_gaps(fragment) == 0).any() for fragment in packed)  # some sheets touch
    wide = [_gaps(f, skip_close=True) for f in separated]
    assert all(np.median(gaps) >= 8 for gaps in wide if gaps.size) and any(gaps.size for gaps in wide)
    share = [np.mean([f.surface[f.scan_mask].mean() for f in group]) for group in (packed, separated[:4])]
    assert share[0] > 1.5 * share[1], share


def test_touching_sheets_are_recorded_as_merged_pairs() -> None:
    fragment = make_fragment(SIZE, seed=4, packing="tight", gap_range=(1.0, 2.0), touch_fraction=0.04)
    gaps = _gaps(fragment)
    assert np.median(gaps) <= 3 and (gaps == 0).any()
    merged = {tuple(pair) for pair in fragment.metadata["merged_pairs"]}
    components = cc3d.connected_components(fragment.surface, connectivity=26)
    for component in range(1, int(components.max()) + 1):
        ids = np.unique(fragment.instances[components == component])
        assert all((int(a), int(b)) in merged for a, b in itertools.pairwise(ids))


def test_low_contrast_has_a_lower_contrast_to_noise_ratio() -> None:
    for seed in SEEDS[:3]:
        tags = {"packing": "separated", "intensity": "standard"}
        low, normal = _forced(seed, contrast="low", **tags), _forced(seed, contrast="normal", **tags)
        np.testing.assert_array_equal(low.labels, normal.labels)  # only the look changes
        assert _contrast_to_noise(low) < 0.6 * _contrast_to_noise(normal), seed
        assert low.metadata["domain"]["contrast_range"][0] <= 80


def test_shifted_intensity_scales_and_offsets_the_image_but_not_the_labels() -> None:
    seen_scale = seen_offset = False
    for seed in range(8):
        shifted, standard = _forced(seed, intensity="shifted"), _forced(seed, intensity="standard")
        np.testing.assert_array_equal(shifted.labels, standard.labels)
        np.testing.assert_array_equal(shifted.instances, standard.instances)
        s1, o1 = (standard.metadata["domain"][key] for key in ("intensity_scale", "intensity_offset"))
        s2, o2 = (shifted.metadata["domain"][key] for key in ("intensity_scale", "intensity_offset"))
        assert abs(s2 - 1) >= 0.15 or abs(o2) >= 10, (s2, o2)
        assert abs(s1 - 1) <= 0.07 and abs(o1) <= 6
        # Same noise, same geometry: the shifted image is the standard one through scale/offset (unclipped).
        a, b = standard.image.astype(np.float64), shifted.image.astype(np.float64)
        keep = standard.scan_mask & (a > 2) & (a < 253) & (b > 2) & (b < 253)
        expected = (a[keep] - o1) * (s2 / s1) + o2
        assert np.abs(b[keep] - expected).mean() < 1.5, seed
        seen_scale |= abs(s2 / s1 - 1) > 0.15
        seen_offset |= abs(o2 - o1) > 8
    assert seen_scale and seen_offset


def test_fragment_options_for_the_look_leave_the_labels_alone() -> None:
    base = make_fragment((48, 48, 48), seed=2)
    dim = make_fragment((48, 48, 48), seed=2, intensity_scale=0.5, intensity_offset=10.0)
    blurred = make_fragment((48, 48, 48), seed=2, psf_axis_factors=(2.0, 1.0, 0.8), white_noise_std=8.0)
    for other in (dim, blurred):
        np.testing.assert_array_equal(other.labels, base.labels)
    scan = base.scan_mask
    assert abs(dim.image[scan].mean() - (0.5 * base.image[scan].mean() + 10)) < 2
    assert (dim.image[~scan] == 0).all() and (dim.image[scan] >= 1).all()
    assert dim.metadata["intensity_scale"] == 0.5 and "psf_sigma_zyx" in blurred.metadata


def test_outer_air_leaves_a_sheet_free_region() -> None:
    flat = {"stack_axis": 1, "gap_range": (8.0, 10.0), "max_tilt_deg": 0.0}
    full = make_fragment(SIZE, seed=1, **flat)
    edge = make_fragment(SIZE, seed=1, **flat, outer_air=0.4)
    assert edge.n_sheets < full.n_sheets
    assert not edge.surface[:, -int(0.25 * SIZE[1]) :, :].any()


def test_bad_subranges_and_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown sub-range axis 'noise'.*packing: packed/separated"):
        randomised_fragment(SIZE, 0, subranges={"noise": "high"})
    with pytest.raises(ValueError, match=r"unknown packing sub-range 'dense'.*contrast: low/normal"):
        randomised_fragment(SIZE, 0, subranges={"packing": "dense"})
    with pytest.raises(ValueError, match="packed_gap"):
        randomised_fragment(SIZE, 0, ranges=DomainRanges(packed_gap=(0.5, 12.0)))
    with pytest.raises(ValueError, match="low_contrast"):
        randomised_fragment(SIZE, 0, ranges=DomainRanges(low_contrast=(80.0, 30.0)))
    with pytest.raises(ValueError, match=r"gap_range low must be >= 4.*packing='tight'"):
        make_fragment(SIZE, seed=0, gap_range=(2.0, 6.0))
    with pytest.raises(ValueError, match="packing must be"):
        make_fragment(SIZE, seed=0, packing="dense")
    with pytest.raises(ValueError, match="within 0–8"):
        make_fragment(SIZE, seed=0, packing="tight", gap_range=(2.0, 12.0))
    with pytest.raises(ValueError, match="intensity_scale"):
        make_fragment(SIZE, seed=0, intensity_scale=0.0)
