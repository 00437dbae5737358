"""A folder of 2D TIFF slices read lazily as one volume: order, header checks, gaps, scale, CLI and reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius._reader import can_read, napari_get_reader, read_volumes
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.base import VolumeWarning
from napari_vesuvius.core.volume.io import open_volume, write_volume
from napari_vesuvius.core.volume.spatial import Spatial
from napari_vesuvius.core.volume.tiff_folder import TiffSliceStack, _quick_header, is_slice_folder


def write_slices(folder: Path, data: np.ndarray, name: str = "{:05d}.tif", **kwargs: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, plane in enumerate(data):
        tifffile.imwrite(folder / name.format(index), plane, **{"compression": "lzw", **kwargs})
    return folder


def volume(shape: tuple[int, int, int] = (12, 10, 11), dtype: type = np.uint8) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 251).astype(dtype).reshape(shape)


def test_slices_open_lazily_in_natural_order(tmp_path: Path) -> None:
    data = volume()
    folder = write_slices(tmp_path / "vol", data, name="slice_{}.tiff")  # 2 before 10
    (folder / "meta.json").write_text("{}")
    (folder / "notes.txt").write_text("not a slice")
    tifffile.imwrite(folder / ".hidden.tif", np.zeros((3, 3), np.uint8))
    assert is_slice_folder(folder)
    with open_volume(folder) as opened:
        assert opened.kind == "tiff-folder" and opened.shape == data.shape and opened.dtype == np.uint8
        assert opened.spatial.is_default and opened.notes == []
        np.testing.assert_array_equal(opened.data.compute(), data)
        np.testing.assert_array_equal(opened.data[3:5, 2:4, 1].compute(), data[3:5, 2:4, 1])


def test_each_chunk_decodes_only_its_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.zeros((20, 512, 512), np.uint8)  # 256 KiB slices: 16 per 4 MiB chunk
    data[:, 0, 0] = np.arange(20)
    folder = write_slices(tmp_path / "vol", data)
    read: list[str] = []
    original = TiffSliceStack._read
    monkeypatch.setattr(
        TiffSliceStack, "_read", lambda self, file: read.append(file.name) or original(self, file)
    )
    with open_volume(folder) as opened:
        assert opened.chunks[0] == (16, 4) and read == []  # opening reads headers only
        assert int(opened.data[17, 0, 0].compute()) == 17
        assert read == [f"{i:05d}.tif" for i in range(16, 20)]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((10, 9), np.uint8), r"slice 00005\.tif: shape \(10, 9\), expected \(10, 11\)"),
        (np.zeros((10, 11), np.uint16), r"slice 00005\.tif: dtype uint16, expected uint8"),
        (np.zeros((2, 10, 11), np.uint8), r"slice 00005\.tif: holds 2 pages"),
        (np.zeros((10, 11, 3), np.uint8), r"slice 00005\.tif: shape \(10, 11, 3\) is not one 2D grayscale"),
    ],
)
def test_the_first_bad_slice_is_named(tmp_path: Path, bad: np.ndarray, match: str) -> None:
    folder = write_slices(tmp_path / "vol", volume())
    tifffile.imwrite(folder / "00005.tif", bad)
    tifffile.imwrite(folder / "00007.tif", np.zeros((3, 3), np.uint8))  # a later bad slice is not named
    with pytest.raises(VolumeError, match=match):
        open_volume(folder)


def test_a_gap_or_a_repeat_in_the_numbering_is_refused(tmp_path: Path) -> None:
    folder = write_slices(tmp_path / "vol", volume())
    (folder / "00004.tif").unlink()
    with pytest.raises(
        VolumeError, match=r"slice number 00004 is missing: 00003\.tif is followed by 00005\.tif"
    ):
        open_volume(folder)
    tifffile.imwrite(folder / "00004.tif", volume()[4])
    tifffile.imwrite(folder / "4.tif", volume()[4])  # two slices numbered 4
    with pytest.raises(VolumeError, match=r"slices (00004|4)\.tif and (4|00004)\.tif have the same number"):
        open_volume(folder)


def test_unreadable_slices_are_named_at_open_and_at_read(tmp_path: Path) -> None:
    folder = write_slices(tmp_path / "vol", volume())
    (folder / "00003.tif").write_bytes(b"not a tiff")
    with pytest.raises(VolumeError, match=r"00003\.tif: not a readable TIFF"):
        open_volume(folder)
    write_slices(folder, volume())
    with open_volume(folder) as opened:
        (folder / "00003.tif").write_bytes(b"not a tiff")  # broken after opening
        with pytest.raises(VolumeError, match=r"00003\.tif: cannot read slice"):
            opened.data.compute()


def test_meta_json_voxel_size_then_first_slice_tags(tmp_path: Path) -> None:
    folder = write_slices(tmp_path / "vol", volume(), imagej=True, resolution=(1 / 3.5, 1 / 3.5),
                          metadata={"unit": "micron"})  # fmt: skip
    with open_volume(folder) as opened:
        assert (
            opened.spatial == Spatial((3.5, 3.5, 3.5), unit="micrometer")
            and opened.spatial.source == "imagej"
        )
        assert opened.notes == ["z voxel size not in the TIFF; taken equal to x"]
    (folder / "meta.json").write_text(json.dumps({"voxelsize": 7.91, "slices": 12, "type": "vol"}))
    with open_volume(folder) as opened:
        assert (
            opened.spatial == Spatial((7.91,) * 3, unit="micrometer") and opened.spatial.source == "meta.json"
        )
        assert opened.notes == []
    (folder / "meta.json").write_text(json.dumps({"voxelsize": 7.91, "slices": 14}))
    with pytest.warns(VolumeWarning, match="meta.json declares 14 slices but the folder holds 12"):
        open_volume(folder).close()
    (folder / "meta.json").write_text(json.dumps({"voxelsize": -1}))
    with pytest.warns(VolumeWarning, match="meta.json ignored"), open_volume(folder) as opened:
        assert opened.spatial.source == "imagej"


def test_what_is_not_a_slice_folder(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"  # a folder of 3D TIFF volumes: batch input, not slices
    volumes.mkdir()
    for name in ("1.tif", "2.tif"):
        tifffile.imwrite(volumes / name, volume((3, 4, 5)), photometric="minisblack")
    single = write_slices(tmp_path / "single", volume()[:1])
    dataset = write_slices(tmp_path / "dataset", volume())
    (dataset / "test_images").mkdir()
    write_volume(tmp_path / "v.zarr", volume())
    for path in (volumes, single, dataset, tmp_path / "v.zarr", tmp_path / "missing", volumes / "1.tif"):
        assert not is_slice_folder(path), path
    with pytest.raises(
        VolumeError, match="not a zarr array, an OME-Zarr group or a folder of 2D TIFF slices"
    ):
        open_volume(single)


def test_info_describes_a_slice_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_slices(tmp_path / "vol", volume())
    (folder / "meta.json").write_text(json.dumps({"voxelsize": 7.91}))
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "tiff-folder" and info["shape"] == [12, 10, 11] and info["dtype"] == "uint8"
    assert info["spatial"]["scale"] == [7.91] * 3 and info["spatial"]["source"] == "meta.json"
    assert main(["info", str(folder)]) == 0
    assert "kind:   tiff-folder" in capsys.readouterr().out


def test_the_napari_reader_opens_a_slice_folder_as_one_layer(tmp_path: Path) -> None:
    data = volume()
    folder = write_slices(tmp_path / "vol", data)
    (folder / "meta.json").write_text(json.dumps({"voxelsize": 2.0}))
    assert can_read(folder) and napari_get_reader(str(folder)) is not None
    [(layer, meta, kind)] = read_volumes(str(folder))
    assert kind == "image" and meta["name"] == "vol" and meta["metadata"]["kind"] == "tiff-folder"
    assert tuple(meta["scale"]) == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(np.asarray(layer), data)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    argv = ["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", str(path)]
    assert main(argv) == 0
    return path


@pytest.mark.slow
def test_predict_reads_a_slice_folder_as_one_volume(tmp_path: Path, model_path: Path) -> None:
    data = volume((16, 16, 16))
    folder = write_slices(tmp_path / "vol", data)
    (folder / "meta.json").write_text(json.dumps({"voxelsize": 7.91}))
    common = ["predict", "--model", str(model_path), "--quiet", "--device", "cpu", "--dtype", "uint8"]
    assert main([*common, "--input", str(folder), "--output", str(tmp_path / "p.tif")]) == 0
    with open_volume(tmp_path / "p.tif") as predicted:
        assert predicted.shape == data.shape and predicted.spatial == Spatial((7.91,) * 3, unit="micrometer")

    batch = tmp_path / "batch"  # a folder of 3D volumes stays a batch: one output per volume
    batch.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(batch / f"{name}.tif", data)
    assert main([*common, "--input", str(batch), "--output", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif"]


@pytest.mark.parametrize(
    ("dtype", "kwargs"),
    [
        (np.uint16, {"byteorder": ">", "bigtiff": True, "tile": (16, 16)}),
        (np.float32, {"compression": "zlib"}),
        (np.int8, {"byteorder": ">"}),
        (np.float64, {"bigtiff": True}),
    ],
)
def test_the_quick_header_agrees_with_tifffile(tmp_path: Path, dtype: type, kwargs: dict) -> None:
    """Slice headers come from the first IFD alone; big-endian, BigTIFF and tiled slices read the same."""
    data = volume((3, 40, 33)).astype(dtype)
    folder = write_slices(tmp_path / "vol", data, **kwargs)
    assert _quick_header(folder / "00000.tif") == ((40, 33), np.dtype(dtype))
    with open_volume(folder) as opened:
        assert opened.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(opened.data.compute(), data)
    tifffile.imwrite(folder / "rgb.tif", np.zeros((8, 9, 3), np.uint8))
    assert _quick_header(folder / "rgb.tif") is None  # anything but one grayscale page: tifffile decides
