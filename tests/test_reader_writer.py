"""npe2 reader and writer contributions: layer types, lazy data, fixed label colours, round trips."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_vesuvius._reader import napari_get_reader
from napari_vesuvius._writer import write_labels_tif, write_labels_zarr
from napari_vesuvius.core.labels import LABEL_COLORS
from napari_vesuvius.core.volume.io import open_volume, write_ome_zarr


def ct_volume(shape: tuple[int, int, int] = (16, 40, 40)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(20, 230, size=shape, dtype=np.uint8)


def label_volume(shape: tuple[int, int, int] = (16, 40, 40)) -> np.ndarray:
    labels = np.full(shape, 2, np.uint8)
    labels[:, 10:30, 10:30] = 0
    labels[:, 18:21, 5:35] = 1
    return labels


def read(path: Path) -> list[tuple]:
    reader = napari_get_reader(str(path))
    assert reader is not None
    return reader(str(path))


def test_reader_declines_other_paths(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    assert napari_get_reader(str(tmp_path / "folder")) is None
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None


def test_image_tiff_layer(tmp_path: Path) -> None:
    data = ct_volume()
    tifffile.imwrite(tmp_path / "1234.tif", data, compression="lzw")
    [(layer_data, meta, layer_type)] = read(tmp_path / "1234.tif")
    assert layer_type == "image" and isinstance(layer_data, da.Array)
    assert meta["name"] == "1234" and meta["contrast_limits"] == (0.0, 255.0)
    assert meta["multiscale"] is False and meta["metadata"]["path"].endswith("1234.tif")
    np.testing.assert_array_equal(np.asarray(layer_data[3]), data[3])


@pytest.mark.parametrize("where", ["folder", "content"])
def test_label_tiff_layer_has_fixed_colours(tmp_path: Path, where: str) -> None:
    """Labels are recognised by their folder name or, in a neutral place, by a central sample."""
    folder = tmp_path / ("train_labels" if where == "folder" else "volumes")
    folder.mkdir()
    tifffile.imwrite(folder / "1234.tif", label_volume(), compression="lzw")
    [(layer_data, meta, layer_type)] = read(folder / "1234.tif")
    assert layer_type == "labels" and isinstance(layer_data, da.Array)
    assert meta["name"] == "1234 labels"
    assert meta["colormap"] == LABEL_COLORS and "contrast_limits" not in meta

    from napari.layers import Labels, Layer

    layer = Layer.create(layer_data, meta, layer_type)
    assert isinstance(layer, Labels)
    colours = layer.colormap.map(np.array([0, 1, 2], np.uint8))
    np.testing.assert_allclose(colours[1], LABEL_COLORS[1])
    np.testing.assert_allclose(colours[2], LABEL_COLORS[2])
    assert colours[0][3] == 0 and 0 < colours[2][3] < 1 and colours[1][3] == 1


def test_name_rule_for_masks(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "pred_mask.tif", np.zeros((4, 8, 8), np.uint8), photometric="minisblack")
    [(_, meta, layer_type)] = read(tmp_path / "pred_mask.tif")
    assert layer_type == "labels" and meta["name"].startswith("pred_mask labels")


def test_ome_zarr_layer_is_multiscale(tmp_path: Path) -> None:
    full = ct_volume((32, 64, 64))
    write_ome_zarr(tmp_path / "scroll.ome.zarr", [full, full[::2, ::2, ::2]], chunks=(16, 32, 32))
    [(levels, meta, layer_type)] = read(tmp_path / "scroll.ome.zarr")
    assert layer_type == "image" and meta["multiscale"] is True and meta["name"] == "scroll"
    assert [level.shape for level in levels] == [(32, 64, 64), (16, 32, 32)]
    assert all(isinstance(level, da.Array) for level in levels)

    from napari.components import ViewerModel

    viewer = ViewerModel()
    layer = viewer._add_layer_from_data(levels, meta, layer_type)[0]
    assert layer.multiscale and layer.contrast_limits == [0.0, 255.0]


def test_float_zarr_contrast_limits_from_sample(tmp_path: Path) -> None:
    data = np.linspace(-1.0, 3.0, 8 * 16 * 16, dtype=np.float32).reshape(8, 16, 16)
    zarr.create_array(str(tmp_path / "prob.zarr"), data=data, chunks=(4, 16, 16))
    [(_, meta, layer_type)] = read(tmp_path / "prob.zarr")
    assert layer_type == "image"
    assert meta["contrast_limits"] == (float(data[4].min()), float(data[4].max()))


def test_writer_round_trips_and_narrows_dtype(tmp_path: Path) -> None:
    labels = label_volume()
    [written] = write_labels_tif(str(tmp_path / "out.tif"), labels.astype(np.int32), {})
    with tifffile.TiffFile(written) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW and len(tif.pages) == labels.shape[0]
    back = tifffile.imread(written)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)

    lazy = da.from_array(labels.astype(np.int64), chunks=(4, 40, 40))
    [written] = write_labels_zarr(str(tmp_path / "out"), lazy, {"name": "x"})
    assert written.endswith("out.zarr")
    with open_volume(written) as volume:
        assert volume.dtype == np.uint8
        np.testing.assert_array_equal(volume.data.compute(), labels)


def test_writer_keeps_wide_labels_and_rejects_floats(tmp_path: Path) -> None:
    wide = np.zeros((4, 8, 8), np.uint16)
    wide[0, 0, 0] = 300
    [written] = write_labels_tif(str(tmp_path / "wide.tif"), wide, {})
    assert tifffile.imread(written).dtype == np.uint16
    with pytest.raises(ValueError, match=r"float\.tif: label data must be integers"):
        write_labels_tif(str(tmp_path / "float.tif"), wide.astype(np.float32), {})


def test_writer_writes_multiscale_level_zero(tmp_path: Path) -> None:
    labels = label_volume()
    [written] = write_labels_tif(str(tmp_path / "ms.tif"), [labels, labels[::2, ::2, ::2]], {})
    np.testing.assert_array_equal(tifffile.imread(written), labels)


def test_npe2_discovers_reader(tmp_path: Path) -> None:
    import npe2

    npe2.PluginManager.instance().discover()
    tifffile.imwrite(tmp_path / "7.tif", ct_volume((4, 8, 8)), photometric="minisblack")
    layers = npe2.read([str(tmp_path / "7.tif")], stack=False, plugin_name="napari-vesuvius")
    assert len(layers) == 1 and layers[0][2] == "image" and layers[0][1]["name"] == "7"
