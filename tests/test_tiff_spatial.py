"""Physical scale in TIFF files: read from ImageJ / OME / resolution tags / our JSON; written, read back."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.core.volume.base import VolumeWarning
from napari_vesuvius.core.volume.io import _SOURCES, open_volume, write_volume
from napari_vesuvius.core.volume.spatial import Spatial
from napari_vesuvius.core.volume.tiff import TiffPageStack
from napari_vesuvius.core.volume.tiff_spatial import Z_ASSUMED_NOTE

DATA = np.arange(4 * 8 * 9, dtype=np.uint16).reshape(4, 8, 9)
GRAY = {"photometric": "minisblack"}


def read_spatial(path: Path) -> tuple[Spatial, list[str]]:
    with open_volume(path) as volume:
        np.testing.assert_array_equal(volume.data.compute(), DATA.astype(volume.dtype))
        return volume.spatial, volume.notes


@pytest.mark.parametrize("unit", ["micron", "\\u00B5m", "um"])
def test_imagej_hyperstack_spacing_unit_and_resolution(tmp_path: Path, unit: str) -> None:
    path = tmp_path / "ij.tif"
    metadata = {"axes": "ZYX", "spacing": 7.91, "unit": unit}
    tifffile.imwrite(path, DATA, imagej=True, resolution=(1 / 3.5, 1 / 3.25), metadata=metadata)
    spatial, notes = read_spatial(path)
    assert spatial == Spatial((7.91, 3.25, 3.5), unit="micrometer") and spatial.source == "imagej"
    assert notes == []


def test_imagej_origin_in_pixels_and_missing_spacing(tmp_path: Path) -> None:
    path = tmp_path / "ij.tif"
    metadata = {"axes": "ZYX", "unit": "nm", "xorigin": 2, "yorigin": -1.5, "zorigin": 0}
    tifffile.imwrite(path, DATA, imagej=True, resolution=(0.5, 0.5), metadata=metadata)
    spatial, notes = read_spatial(path)
    assert spatial == Spatial((2.0, 2.0, 2.0), (0.0, 3.0, -4.0), "nanometer")
    assert notes == [Z_ASSUMED_NOTE]


def test_uncalibrated_imagej_and_placeholder_resolutions_give_the_default(tmp_path: Path) -> None:
    cases = {
        "ij.tif": {"imagej": True, "metadata": {"axes": "ZYX", "unit": "pixel"}},
        "dpi1.tif": {"resolution": (1.0, 1.0), "resolutionunit": "INCH", **GRAY},
        "dpi72.tif": {"resolution": (72.0, 72.0), "resolutionunit": "INCH", **GRAY},
        "none.tif": {"resolution": (3.0, 3.0), "resolutionunit": "NONE", **GRAY},
        "plain.tif": GRAY,
    }
    for name, kwargs in cases.items():
        tifffile.imwrite(tmp_path / name, DATA, **kwargs)
        spatial, notes = read_spatial(tmp_path / name)
        assert spatial.is_default and spatial.source == "none" and notes == [], name


@pytest.mark.parametrize(
    ("unit", "per_unit", "size"), [("CENTIMETER", 1250.0, 8.0), ("INCH", 25400 / 2, 2.0)]
)
def test_plain_resolution_converts_to_micrometers(
    tmp_path: Path, unit: str, per_unit: float, size: float
) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, DATA, resolution=(per_unit, per_unit / 2), resolutionunit=unit, **GRAY)
    spatial, notes = read_spatial(path)
    assert spatial == Spatial((size, 2 * size, size), unit="micrometer")
    assert spatial.source == "tiff-resolution" and notes == [Z_ASSUMED_NOTE]


def test_ome_tiff_physical_sizes_with_mixed_units(tmp_path: Path) -> None:
    path = tmp_path / "vol.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.5,
                "PhysicalSizeZ": 2.0, "PhysicalSizeZUnit": "µm"}  # fmt: skip
    tifffile.imwrite(path, DATA, metadata=metadata)
    spatial, _ = read_spatial(path)
    assert spatial == Spatial((2.0, 0.5, 0.5), unit="micrometer") and spatial.source == "ome-tiff"


def test_tifffile_json_record_and_malformed_metadata(tmp_path: Path) -> None:
    record = {"scale": [2.0, 1.5, 1.5], "translation": [1.0, 0.0, -3.0], "unit": "millimeter"}
    tifffile.imwrite(tmp_path / "ok.tif", DATA, metadata={"vesuvius_spatial": record}, **GRAY)
    spatial, _ = read_spatial(tmp_path / "ok.tif")
    assert spatial == Spatial((2.0, 1.5, 1.5), (1.0, 0.0, -3.0), "mm") and spatial.source == "tifffile-json"

    bad = {"scale": [-1, 1, 1]}
    tifffile.imwrite(tmp_path / "bad.tif", DATA, metadata={"vesuvius_spatial": bad}, **GRAY)
    with pytest.warns(VolumeWarning, match=r"bad\.tif: physical scale metadata ignored .*positive"):
        spatial, notes = read_spatial(tmp_path / "bad.tif")
    assert spatial.is_default and len(notes) == 1

    tifffile.imwrite(
        tmp_path / "ij.tif", DATA, imagej=True, metadata={"axes": "ZYX", "spacing": "x", "unit": "mm"}
    )
    spatial, _ = read_spatial(tmp_path / "ij.tif")  # a spacing that is not a number is left out
    assert spatial == Spatial(unit="millimeter")


SPATIAL = Spatial((7.91, 3.5, 3.25), (1.5, -2.0, 0.0), "micrometer")


@pytest.mark.parametrize(
    ("dtype", "imagej"),
    [(np.uint8, True), (np.uint16, True), (np.float32, True), (np.float16, False), (np.int16, False)],
)
def test_write_round_trip_keeps_the_placement_and_the_fast_layout(
    tmp_path: Path, dtype: type, imagej: bool
) -> None:
    path = tmp_path / "out.tif"
    data = np.concatenate([DATA] * 3).astype(dtype)  # tifffile's uniformity test needs 8+ pages
    write_volume(path, data, spatial=SPATIAL)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej is imagej and len(tif.pages) == data.shape[0]
        assert all(page.compression == tifffile.COMPRESSION.LZW for page in tif.pages)
    with open_volume(path) as volume:
        assert isinstance(_SOURCES[volume.data.name].source, TiffPageStack)  # the fast reader
        np.testing.assert_array_equal(volume.data.compute(), data)
        assert volume.spatial == SPATIAL and volume.notes == []
        assert volume.spatial.source == ("imagej" if imagej else "tifffile-json")


def test_single_slice_and_scale_without_unit_round_trip(tmp_path: Path) -> None:
    one = Spatial((4.0, 2.0, 2.0))
    write_volume(tmp_path / "one.tif", DATA[:1].astype(np.uint8), spatial=one)  # ImageJ needs 2+ slices
    with open_volume(tmp_path / "one.tif") as volume:
        assert volume.shape == (1, 8, 9) and volume.spatial == one
    write_volume(tmp_path / "two.tif", DATA[:2].astype(np.uint8), spatial=one)
    with open_volume(tmp_path / "two.tif") as volume:
        assert volume.shape == (2, 8, 9) and volume.spatial == one and volume.spatial.unit is None


def test_default_placement_writes_the_same_file_as_before(tmp_path: Path) -> None:
    write_volume(tmp_path / "a.tif", DATA)
    write_volume(tmp_path / "b.tif", DATA, spatial=Spatial())
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        page = tif.pages.first
        assert page.description == '{"shape": [4, 8, 9]}'  # tifffile's own tags, as before
        assert page.tags["XResolution"].value == (1, 1) and page.tags["ResolutionUnit"].value == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spatial, notes = read_spatial(tmp_path / "a.tif")
    assert spatial.is_default and notes == []
