"""OME-Zarr and zarr v2 files in and out: files written by other tools (ome-zarr-py, zarr 2-format arrays)
read with the right values and placement; our own OME-Zarr outputs validate with ome-zarr-models and
round-trip values, per-level scale / translation / unit on both zarr formats and all downsample methods."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dask.array as da
import numcodecs
import numpy as np
import pytest
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # ome-zarr-py's deprecated Scaler default
    from ome_zarr.writer import write_image

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.volume import io as volume_io
from napari_vesuvius.core.volume.base import VolumeWarning
from napari_vesuvius.core.volume.io import central_sample, is_volume_zarr, open_volume
from napari_vesuvius.core.volume.ngff import SqueezedSource, validate_ome_zarr
from napari_vesuvius.core.volume.ome_zarr_write import (
    create_ome_zarr_base,
    iter_finish_ome_zarr,
    iter_write_ome_zarr,
    write_ome_zarr,
)
from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial
from napari_vesuvius.core.volume.write import write_volume

UM = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
SCROLL = Spatial((7.91, 7.91, 7.91), (0.0, 0.0, 0.0), "micrometer")


def volume(shape: tuple[int, int, int], dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape).astype(dtype)
    return rng.integers(0, 200, shape).astype(dtype)


def ome_zarr_py(path: Path, data: np.ndarray, axes: str, **kwargs: object) -> None:
    """Write ``data`` with ome-zarr-py as NGFF 0.4 on a zarr v2 group, 7.91 µm voxels."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ome-zarr-py warns about the default scale of t / c
        write_image(
            data,
            group,
            axes=axes,
            fmt=FormatV04(),
            scale={"z": 7.91, "y": 7.91, "x": 7.91},
            axes_units=UM,
            **kwargs,  # type: ignore[arg-type]
        )


# ------------------------------------------------------------------------------ files of other tools
def test_ome_zarr_py_04_read_with_scale(tmp_path: Path) -> None:
    data = volume((16, 40, 40))
    ome_zarr_py(tmp_path / "s.ome.zarr", data, "zyx", scale_factors=(2,))
    with open_volume(tmp_path / "s.ome.zarr") as vol:
        assert vol.kind == "ome-zarr" and len(vol.levels) == 2 and not vol.notes
        np.testing.assert_array_equal(vol.data.compute(), data)
        assert vol.spatial == SCROLL and vol.spatial.source == "ome-zarr"
        level1 = vol.level_spatial(1)  # ome-zarr-py downsamples y, x only
        assert level1.scale == pytest.approx((7.91, 15.82, 15.82))
        assert level1.translation == pytest.approx((0.0, 3.955, 3.955)) and level1.unit == "micrometer"


def test_ome_zarr_py_5d_singletons_squeezed(tmp_path: Path) -> None:
    data = volume((12, 24, 20))
    path = tmp_path / "t.ome.zarr"
    ome_zarr_py(path, data[None, None], "tczyx", scale_factors=(2,))
    assert is_volume_zarr(path)
    with pytest.warns(VolumeWarning, match=r"t\.ome\.zarr: squeezed the singleton axes t, c"):
        vol = open_volume(path)
    with vol:
        assert vol.shape == (12, 24, 20) and vol.levels[1].shape == (12, 12, 10)
        assert any("t, c" in note for note in vol.notes) and vol.spatial == SCROLL
        np.testing.assert_array_equal(vol.data.compute(), data)
        stored = zarr.open_group(str(path), mode="r")["s1"]  # ome-zarr-py interpolates its levels
        np.testing.assert_array_equal(vol.levels[1][3].compute(), stored[0, 0, 3])
        # the small-sample fast path reads the source directly, through the squeezing wrapper
        source = volume_io._SOURCES[vol.data.name]
        assert isinstance(source.source, SqueezedSource)
        np.testing.assert_array_equal(central_sample(vol.data), data[6])


def test_ome_zarr_py_multichannel_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.ome.zarr"
    ome_zarr_py(path, np.zeros((3, 8, 16, 16), np.uint8), "czyx", scale_factors=())
    with pytest.raises(VolumeError, match=r"rgb\.ome\.zarr: OME-Zarr axis 'c' \(channel\) has 3 channels"):
        open_volume(path)
    assert not is_volume_zarr(path)


def test_zarr_2_format_arrays_with_codecs(tmp_path: Path) -> None:
    data = np.arange(10 * 20 * 30, dtype=np.uint16).reshape(10, 20, 30)
    codecs = {
        "zlib_delta.zarr": {"compressors": numcodecs.Zlib(level=3), "filters": [numcodecs.Delta("<u2")]},
        "blosc.zarr": {"compressors": numcodecs.Blosc(cname="zstd", shuffle=numcodecs.Blosc.BITSHUFFLE)},
        "raw.zarr": {"compressors": None},
    }
    for name, kwargs in codecs.items():
        array = zarr.create_array(
            str(tmp_path / name),
            shape=data.shape,
            chunks=(5, 10, 7),
            dtype=data.dtype,
            zarr_format=2,
            **kwargs,
        )
        array[:] = data
        with open_volume(tmp_path / name) as vol:
            assert vol.kind == "zarr" and vol.spatial.is_default
            np.testing.assert_array_equal(vol.data.compute(), data)


def test_plain_zarr_spatial_attribute(tmp_path: Path) -> None:
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 5, 6), dtype="f4", zarr_format=2)
    array.attrs[SPATIAL_ATTR] = SCROLL.to_dict()
    with open_volume(tmp_path / "a.zarr") as vol:
        assert vol.spatial == SCROLL and vol.spatial.source == "zarr-attrs"
    array.attrs[SPATIAL_ATTR] = {"scale": [1, -2, 1]}
    with pytest.warns(VolumeWarning, match=r"a\.zarr: ignored a malformed 'vesuvius_spatial'"):
        vol = open_volume(tmp_path / "a.zarr")
    assert vol.spatial.is_default and vol.notes and "malformed" in vol.notes[0]


# ------------------------------------------------------------------------------------- our outputs
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("method", ["mean", "max", "nearest"])
def test_write_round_trip_levels_and_placement(tmp_path: Path, zarr_format: int, method: str) -> None:
    data = volume((40, 70, 33), np.float32)
    origin = Spatial((7.91, 7.91, 7.91), (1.0, 2.0, 3.0), "um")
    path = write_ome_zarr(
        tmp_path / "p.ome.zarr",
        data,
        chunks=(16, 16, 16),
        zarr_format=zarr_format,
        spatial=origin,
        downsample=method,
    )
    validate_ome_zarr(path)
    if zarr_format == 2:
        group = zarr.open_group(str(path), mode="r", zarr_format=2)  # zarr's v2 API opens it
        assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
        assert group.attrs["multiscales"][0]["version"] == "0.4"
    else:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        assert group.attrs["ome"]["version"] == "0.5" and group["0"].metadata.dimension_names == (
            "z",
            "y",
            "x",
        )
    with open_volume(path) as vol:
        assert [lv.shape for lv in vol.levels] == [(40, 70, 33), (20, 35, 17), (10, 18, 9), (5, 9, 5)]
        assert all(lv.dtype == np.float32 for lv in vol.levels)
        np.testing.assert_array_equal(vol.data.compute(), data)
        level1 = vol.levels[1].compute()
        if method == "nearest":
            np.testing.assert_array_equal(level1, data[::2, ::2, ::2])
        elif method == "max":
            assert level1[3, 4, 5] == data[6:8, 8:10, 10:12].max()
        else:
            assert level1[3, 4, 5] == pytest.approx(data[6:8, 8:10, 10:12].mean(), rel=1e-6)
            assert level1[19, 34, 16] == pytest.approx(data[38:40, 68:70, 32].mean(), rel=1e-6)  # x edge
        for index in range(4):
            expected = origin.downsampled([2.0**index] * 3, method)
            got = vol.level_spatial(index)
            assert got.scale == pytest.approx(expected.scale) and got.unit == "micrometer"
            assert got.translation == pytest.approx(expected.translation)


def test_integer_levels_keep_dtype_and_thin_sheets(tmp_path: Path) -> None:
    sheet = np.zeros((32, 32, 32), np.uint8)
    sheet[:, 13, :] = 1  # a one-voxel sheet at an odd y: max keeps it, every 2nd voxel loses it
    labels = write_ome_zarr(tmp_path / "labels.ome.zarr", sheet, chunks=(8, 8, 8))  # integers: nearest
    mask = write_ome_zarr(tmp_path / "mask.ome.zarr", sheet, chunks=(8, 8, 8), downsample="max")
    mean = write_ome_zarr(tmp_path / "u8.ome.zarr", sheet * 200, chunks=(8, 8, 8), downsample="mean")
    for path in (labels, mask, mean):
        validate_ome_zarr(path)
    with open_volume(labels) as a, open_volume(mask) as b, open_volume(mean) as c:
        assert a.levels[1].dtype == b.levels[1].dtype == c.levels[1].dtype == np.uint8
        assert a.levels[1].compute().max() == 0 and b.levels[1].compute()[:, 6, :].min() == 1
        assert b.levels[2].compute()[:, 3, :].min() == 1
        assert c.levels[1].compute()[0, 6, 0] == 100  # mean of 200 and 0, rounded back to uint8
    group = zarr.open_group(str(labels), mode="r")
    assert group.attrs["multiscales"][0]["type"] == "nearest"


def test_list_of_levels_float16_and_progress(tmp_path: Path) -> None:
    full = volume((32, 32, 32), np.float16)
    reports = []
    job = iter_write_ome_zarr(
        tmp_path / "l.ome.zarr", [full, full[::2, ::2, ::2]], chunks=(16, 16, 16), spatial=SCROLL
    )
    path = run_job(job, on_progress=reports.append)
    validate_ome_zarr(path)
    assert reports and "level 2/2" in reports[-1].message
    with open_volume(path) as vol:
        assert [lv.dtype for lv in vol.levels] == [np.float16, np.float16]
        np.testing.assert_array_equal(vol.levels[1].compute(), full[::2, ::2, ::2])
        assert vol.level_spatial(1).scale == pytest.approx((15.82,) * 3)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_create_base_then_finish(tmp_path: Path, zarr_format: int) -> None:
    """The sliding window's path: fill level 0 tile by tile, then add the pyramid and the metadata."""
    data = volume((24, 40, 40))
    location = tmp_path / "out.ome.zarr"
    group, level0 = create_ome_zarr_base(
        location, data.shape, np.uint8, chunks=(16, 16, 16), zarr_format=zarr_format
    )
    assert not volume_io.ngff_multiscales(dict(group.attrs)) and level0.shape == data.shape
    level0[:12] = data[:12]
    level0[12:] = data[12:]
    shapes = run_job(iter_finish_ome_zarr(group, spatial=SCROLL, downsample="max", name="out"))
    assert shapes == [(24, 40, 40), (12, 20, 20), (6, 10, 10)]
    validate_ome_zarr(location)
    with open_volume(location) as vol:
        np.testing.assert_array_equal(
            vol.levels[1].compute(), data.reshape(12, 2, 20, 2, 20, 2).max(axis=(1, 3, 5))
        )
        assert vol.level_spatial(1) == SCROLL.downsampled((2, 2, 2), "max")


def test_write_volume_ome_zarr_dispatch(tmp_path: Path) -> None:
    data = volume((20, 20, 20), np.float32)
    path = write_volume(tmp_path / "pred.ome.zarr", data, chunks=(8, 8, 8), spatial=SCROLL)
    validate_ome_zarr(path)
    group = zarr.open_group(str(path), mode="r", zarr_format=2)
    assert group.attrs["multiscales"][0]["name"] == "pred" and len(list(group.array_keys())) == 3
    with open_volume(path) as vol:
        assert vol.kind == "ome-zarr" and vol.spatial == SCROLL
    write_volume(tmp_path / "pred.ome.zarr", data[:10], zarr_format=3)  # replaces the old one
    with open_volume(path) as vol:
        assert vol.shape == (10, 20, 20) and not vol.multiscale
    validate_ome_zarr(path)


def test_failed_write_keeps_target_and_leaves_no_temp(tmp_path: Path) -> None:
    path = write_ome_zarr(tmp_path / "keep.ome.zarr", volume((8, 8, 8)))

    def explode(block: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    broken = da.zeros((8, 8, 8), dtype=np.uint8, chunks=4).map_blocks(explode, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="boom"):
        write_ome_zarr(path, broken)
    validate_ome_zarr(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ome.zarr"]


def test_validate_refuses_broken_groups(tmp_path: Path) -> None:
    path = write_ome_zarr(tmp_path / "b.ome.zarr", volume((40, 40, 40)), chunks=(16, 16, 16))
    validate_ome_zarr(path)
    zarr.open_group(str(path), mode="r+").attrs["multiscales"] = [
        {"version": "0.4", "axes": [], "datasets": []}
    ]
    with pytest.raises(VolumeError, match=r"b\.ome\.zarr: not a valid OME-Zarr 0\.4 image"):
        validate_ome_zarr(path)
    path = write_ome_zarr(tmp_path / "c.ome.zarr", volume((40, 40, 40)), chunks=(16, 16, 16), zarr_format=3)
    zarr.open_group(str(path), mode="r+").attrs["ome"] = {"version": "0.5"}
    with pytest.raises(VolumeError, match=r"c\.ome\.zarr: not a valid OME-Zarr 0\.5 image"):
        validate_ome_zarr(path)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(VolumeError, match="not a valid OME-Zarr"):
        validate_ome_zarr(tmp_path / "plain.zarr")
    with pytest.raises(VolumeError, match="not a readable zarr group"):
        validate_ome_zarr(tmp_path / "missing.zarr")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_py_reads_our_outputs(tmp_path: Path, zarr_format: int) -> None:
    data = volume((20, 36, 36), np.float32)
    path = write_ome_zarr(
        tmp_path / "o.ome.zarr", data, chunks=(16, 16, 16), zarr_format=zarr_format, spatial=SCROLL
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "version mismatch" notices of ome-zarr-py's format guess
        node = next(iter(Reader(parse_url(str(path)))()))
    assert [tuple(level.shape) for level in node.data] == [(20, 36, 36), (10, 18, 18), (5, 9, 9)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), data)
    transforms = node.metadata["coordinateTransformations"][1]
    assert transforms[0]["scale"] == pytest.approx([15.82] * 3)
    assert [axis.get("unit") for axis in node.metadata["axes"]] == ["micrometer"] * 3


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_finish_sparse_output_writes_only_covered_chunks(tmp_path: Path, zarr_format: int) -> None:
    """A mostly empty level 0 (air skipped, a proofread crop) gives mostly empty levels: only regions
    above stored chunks are computed and written."""
    location = tmp_path / "sparse.ome.zarr"
    group, level0 = create_ome_zarr_base(
        location, (128, 512, 512), np.uint8, chunks=(32, 32, 32), zarr_format=zarr_format
    )
    level0[40:50, 300:310, 100:120] = 7
    run_job(iter_finish_ome_zarr(group, downsample="max"))
    validate_ome_zarr(location)
    stored = [p for p in (location / "1").rglob("*") if p.is_file() and not p.name.startswith((".", "zarr"))]
    assert len(stored) == 1  # the one level-1 chunk above the crop
    with open_volume(location) as vol:
        level1 = vol.levels[1].compute()
        assert level1[20:25, 150:155, 50:60].min() == 7 and int(level1.sum()) == 7 * 5 * 5 * 10
