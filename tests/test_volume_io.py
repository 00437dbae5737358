"""Lazy reading, validation and atomic writing of TIFF / zarr / OME-Zarr volumes (core.volume)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_vesuvius.core.errors import CancelledError, VolumeError
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.volume import io as volume_io
from napari_vesuvius.core.volume.io import (
    contrast_limits_for,
    label_counts,
    open_labels,
    open_volume,
    validate_label_values,
    write_ome_zarr,
    write_volume,
)
from napari_vesuvius.core.volume.tiff import TiffPageStack


def pattern(shape: tuple[int, int, int], dtype: type = np.uint8) -> np.ndarray:
    """A deterministic volume whose every slice differs (so reading the wrong slice is caught)."""
    y, x = np.ogrid[: shape[1], : shape[2]]
    plane = (((y // 8) * 3 + x // 8) % 251).astype(np.uint16)
    out = np.empty(shape, dtype)
    for z in range(shape[0]):  # slice by slice: fast and small even for the 320³ fixture
        out[z] = (plane + (z * 7) % 251) % 251
    return out


@pytest.fixture(scope="session")
def big_tiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 320³ LZW uint8 TIFF, one page per z-slice, like the challenge volumes."""
    data = pattern((320, 320, 320))
    path = tmp_path_factory.mktemp("tiff") / "1234.tif"
    tifffile.imwrite(path, data, compression="lzw")
    return path, data


@pytest.fixture
def read_spy(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every pixel read that goes through the guarded dask source."""
    calls: list[object] = []
    original = volume_io.GuardedSource.__getitem__

    def spy(self: volume_io.GuardedSource, key: object) -> np.ndarray:
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(volume_io.GuardedSource, "__getitem__", spy)
    return calls


def test_tiff_opens_lazily_with_multi_slice_chunks(big_tiff, read_spy) -> None:
    path, data = big_tiff
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW and len(tif.pages) == 320
    volume = open_volume(path)
    assert read_spy == []  # opening read no pixel data
    assert volume.kind == "tiff" and not volume.multiscale
    assert volume.shape == (320, 320, 320) and volume.dtype == np.uint8
    depth = volume.chunks[0][0]
    assert 1 < depth < 320 and volume.chunks[1] == (320,) and volume.chunks[2] == (320,)
    assert 2 * 1024**2 <= depth * 320 * 320 <= 8 * 1024**2
    np.testing.assert_array_equal(np.asarray(volume.data[200]), data[200])
    assert len(read_spy) == 1  # one chunk read for one slice
    np.testing.assert_array_equal(np.asarray(volume.data[5:7, 10:20, 300:]), data[5:7, 10:20, 300:])
    volume.close()


def test_tiff_page_stack_indexing_and_threaded_reads(big_tiff) -> None:
    """The uniform-page fast path: any basic index, and a full threaded dask read, match the data."""
    path, data = big_tiff
    with open_volume(path) as volume:
        stack = volume_io._SOURCES[volume.data.name].source
        assert isinstance(stack, TiffPageStack) and stack.shape == data.shape
        for key in (7, -1, (slice(300, None, 7), 5), (slice(10, 4), slice(None)), (3, slice(1, 9, 2), 300)):
            np.testing.assert_array_equal(stack[key], data[key])
        with pytest.raises(IndexError):
            stack[320]
        np.testing.assert_array_equal(volume.data.compute(scheduler="threads"), data)


def test_tiff_open_reads_few_headers_and_imports_no_zarr(big_tiff) -> None:
    """Opening parses only a handful of full page headers and leaves zarr unimported (a fresh process)."""
    path, _ = big_tiff
    code = (
        "import sys, tifffile\n"
        "from napari_vesuvius.core.volume.io import open_volume\n"
        "parsed = []\n"
        "for cls in (tifffile.TiffPage, tifffile.TiffFrame):\n"
        "    def counting(self, *a, _init=cls.__init__, **k):\n"
        "        parsed.append(1)\n"
        "        _init(self, *a, **k)\n"
        "    cls.__init__ = counting\n"
        f"volume = open_volume({str(path)!r})\n"
        "print(len(parsed), 'zarr' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, zarr_imported = result.stdout.split()
    assert int(loaded) <= 5 and zarr_imported == "False"  # the old series scan parsed all 320


def test_non_uniform_tiff_uses_the_first_series(tmp_path: Path) -> None:
    """Pages of two shapes: tifffile's series detection (slow path) gives the first series."""
    path = tmp_path / "mixed.tif"
    data = pattern((10, 64, 64))
    tifffile.imwrite(path, data, compression="lzw", metadata=None)
    tifffile.imwrite(path, np.zeros((2, 32, 32), np.uint8), append=True, metadata=None)
    with open_volume(path) as volume:
        assert volume.shape == (10, 64, 64)
        assert not isinstance(volume_io._SOURCES[volume.data.name].source, TiffPageStack)
        np.testing.assert_array_equal(volume.data.compute(), data)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_tiff_other_dtypes(tmp_path: Path, dtype: type) -> None:
    data = pattern((12, 40, 48), dtype) * dtype(3)
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, data, compression="lzw")
    with open_volume(path) as volume:
        assert volume.dtype == dtype and volume.shape == data.shape
        np.testing.assert_array_equal(volume.data.compute(), data)
        low, high = contrast_limits_for(volume.data)
    if dtype is np.uint16:
        assert (low, high) == (0, 65535)
    else:
        middle = data[6]
        assert middle.min() <= low < high <= middle.max()


def test_float_contrast_limits_read_only_a_central_sample(tmp_path: Path, read_spy) -> None:
    data = pattern((40, 64, 64), np.float32)
    data[20, 30, 30] = 1000.0
    data[0] = -5000.0  # outside the central slice: must not influence the limits
    tifffile.imwrite(tmp_path / "f.tif", data)
    with open_volume(tmp_path / "f.tif") as volume:
        assert contrast_limits_for(volume.data) == (float(data[20].min()), 1000.0)
    assert len(read_spy) == 1


def test_ome_zarr_multiscale(tmp_path: Path) -> None:
    full = pattern((64, 96, 80))
    levels = [full, full[::2, ::2, ::2], full[::4, ::4, ::4]]
    path = write_ome_zarr(tmp_path / "scroll.ome.zarr", levels, chunks=(32, 32, 32))
    volume = open_volume(path)
    assert volume.kind == "ome-zarr" and volume.multiscale
    assert [level.shape for level in volume.levels] == [(64, 96, 80), (32, 48, 40), (16, 24, 20)]
    assert volume.chunks[0][0] == 32
    for level, expected in zip(volume.levels, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(level[5]), expected[5])
    attrs = zarr.open_group(str(path), mode="r").attrs["multiscales"][0]
    assert attrs["version"] == "0.4" and [a["name"] for a in attrs["axes"]] == ["z", "y", "x"]
    assert attrs["datasets"][2]["coordinateTransformations"][0]["scale"] == [4.0, 4.0, 4.0]


def test_ome_zarr_ngff_05_zarr_v3(tmp_path: Path) -> None:
    """NGFF 0.5 keeps the metadata under attrs["ome"] in a zarr v3 group."""
    full = pattern((32, 32, 32))
    group = zarr.open_group(str(tmp_path / "v5.zarr"), mode="w", zarr_format=3)
    for index, level in enumerate([full, full[::2, ::2, ::2]]):
        group.create_array(str(index), data=level, chunks=(16, 16, 16))
    datasets = [
        {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [2.0**i] * 3}]}
        for i in range(2)
    ]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [], "datasets": datasets}]}
    with open_volume(tmp_path / "v5.zarr") as volume:
        assert volume.kind == "ome-zarr" and [lv.shape for lv in volume.levels] == [(32,) * 3, (16,) * 3]
        np.testing.assert_array_equal(volume.levels[1].compute(), full[::2, ::2, ::2])


def test_plain_zarr_array_and_single_array_group(tmp_path: Path) -> None:
    data = pattern((20, 30, 40))
    zarr.create_array(str(tmp_path / "a.zarr"), data=data, chunks=(10, 30, 40))
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("volume", data=data, chunks=(20, 15, 20))
    for name, chunk in (("a.zarr", (10, 30, 40)), ("g.zarr", (20, 15, 20))):
        with open_volume(tmp_path / name) as volume:
            assert (
                volume.kind == "zarr" and volume.chunks[0][0] == chunk[0] and volume.chunks[1][0] == chunk[1]
            )
            np.testing.assert_array_equal(volume.data.compute(), data)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_write_round_trip(tmp_path: Path, suffix: str) -> None:
    data = pattern((30, 50, 40))
    path = write_volume(tmp_path / f"out{suffix}", da.from_array(data, chunks=(7, 50, 40)))
    with open_volume(path) as volume:
        np.testing.assert_array_equal(volume.data.compute(), data)
    if suffix == ".tif":
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # normal permissions, not a temp file's 0600
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == 30 and tif.pages[0].compression == tifffile.COMPRESSION.LZW
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{suffix}"]


def test_write_zarr_v2_with_cubic_chunks(tmp_path: Path) -> None:
    data = pattern((200, 200, 200))
    write_volume(tmp_path / "v2.zarr", data, zarr_format=2)
    array = zarr.open_array(str(tmp_path / "v2.zarr"), mode="r")
    assert array.metadata.zarr_format == 2 and array.chunks == (128, 128, 128)
    np.testing.assert_array_equal(array[150], data[150])


def _failing(shape: tuple[int, int, int], fail_after: int) -> da.Array:
    """A dask volume whose blocks past ``fail_after`` raise during compute (a failure midway)."""

    def block(b: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info[None]["chunk-location"][0] >= fail_after:
            raise RuntimeError("disk went away")
        return b

    return da.zeros(shape, dtype=np.uint8, chunks=(4, shape[1], shape[2])).map_blocks(block, dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_atomic_write_keeps_existing_target_on_failure(tmp_path: Path, suffix: str) -> None:
    original = pattern((16, 20, 24))
    target = write_volume(tmp_path / f"keep{suffix}", original)
    with pytest.raises(RuntimeError, match="disk went away"):
        write_volume(target, _failing((16, 20, 24), fail_after=2))
    with open_volume(target) as volume:
        np.testing.assert_array_equal(volume.data.compute(), original)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_cancelled_write_leaves_no_file(tmp_path: Path) -> None:
    job = volume_io.iter_write_volume(tmp_path / "c.tif", da.zeros((40, 64, 64), dtype=np.uint8, chunks=4))
    with pytest.raises(CancelledError):
        run_job(job, should_cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_label_counts_chunkwise() -> None:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:3] = 2
    labels[5, 5, :4] = 1
    counts = label_counts(da.from_array(labels, chunks=(3, 5, 5)))
    assert counts == {0: 696, 1: 4, 2: 300}
    assert validate_label_values(labels, "x.tif") == counts
    assert label_counts(labels.astype(bool)) == {0: 696, 1: 304}


# --------------------------------------------------------------------------------------- validation
def test_not_3d(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((32, 32), np.uint8))
    zarr.create_array(str(tmp_path / "4d.zarr"), data=np.zeros((2, 3, 4, 5), np.uint8))
    for name in ("flat.tif", "4d.zarr"):
        with pytest.raises(VolumeError, match=rf"{name}.*3D"):
            open_volume(tmp_path / name)


def test_label_shape_mismatch(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "lab.tif", np.zeros((8, 9, 10), np.uint8))
    with pytest.raises(VolumeError, match=r"lab\.tif: label shape \(8, 9, 10\) does not match image shape"):
        open_labels(tmp_path / "lab.tif", image_shape=(8, 9, 11))
    open_labels(tmp_path / "lab.tif", image_shape=(8, 9, 10), check_values=True).close()


def test_label_values_outside_range(tmp_path: Path) -> None:
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[7, 7, 7] = 255
    labels[0, 0, :2] = 3
    tifffile.imwrite(tmp_path / "bad.tif", labels)
    with pytest.raises(
        VolumeError, match=r"bad\.tif: label values must be 0, 1 or 2; found 3, 255 in 3 voxel"
    ):
        open_labels(tmp_path / "bad.tif", check_values=True)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.999])
def test_truncated_tiff(tmp_path: Path, fraction: float) -> None:
    """Cut anywhere, with or without tifffile's shape description: caught when opening, from headers."""
    for name, metadata in (("cut.tif", {}), ("cut_plain.tif", None)):
        whole = tmp_path / f"whole_{name}"
        tifffile.imwrite(whole, pattern((40, 64, 64)), compression="lzw", metadata=metadata)
        payload = whole.read_bytes()
        (tmp_path / name).write_bytes(payload[: int(len(payload) * fraction)])
        with pytest.raises(VolumeError, match=rf"{name}: truncated TIFF"):
            open_volume(tmp_path / name)


def test_unreadable_chunk_names_the_file(tmp_path: Path) -> None:
    """Damage found only at read time (a corrupt strip) still raises VolumeError naming the file."""
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, pattern((10, 64, 64)), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[5].dataoffsets[0]
    payload = bytearray(path.read_bytes())
    payload[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(payload))
    with (
        open_volume(path) as volume,
        pytest.raises(VolumeError, match=r"corrupt\.tif: cannot read voxel data"),
    ):
        volume.data.compute()


def test_not_a_tiff_and_other_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "text.tif").write_text("this is not an image\n" * 20)
    with pytest.raises(VolumeError, match=r"text\.tif: not a readable TIFF"):
        open_volume(tmp_path / "text.tif")
    with pytest.raises(VolumeError, match=r"missing\.tif: file not found"):
        open_volume(tmp_path / "missing.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(VolumeError, match="folder: directory is not a zarr"):
        open_volume(tmp_path / "folder")
    (tmp_path / "vol.nii").write_bytes(b"\0" * 10)
    with pytest.raises(VolumeError, match=r"vol\.nii: unsupported file type"):
        open_volume(tmp_path / "vol.nii")
    with pytest.raises(VolumeError, match="3D"):
        write_volume(tmp_path / "x.tif", np.zeros((4, 4), np.uint8))
