"""The reader claims only what it opens: napari never offers napari-vesuvius for a .png, .csv or .txt,
and ``napari_get_reader`` says nothing (None, no exception) about paths it does not read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_vesuvius._reader import napari_get_reader
from napari_vesuvius.core.volume.io import write_ome_zarr

PLUGIN = "napari-vesuvius"


def _volume(shape: tuple[int, int, int] = (8, 16, 16)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)


@pytest.fixture
def others(tmp_path: Path) -> dict[str, Path]:
    """Paths this plugin does not read."""
    import imageio.v2 as imageio

    paths = {
        "png": tmp_path / "picture.png",
        "csv": tmp_path / "table.csv",
        "txt": tmp_path / "notes.txt",
        "folder": tmp_path / "photos",
        "missing": tmp_path / "missing.tif",
        "missing_folder": tmp_path / "missing.zarr",
        "zarr_2d": tmp_path / "plane.zarr",
        "zarr_group_of_two": tmp_path / "two.zarr",
        "dir_named_tif": tmp_path / "folder.tif",
    }
    imageio.imwrite(paths["png"], np.zeros((8, 8), np.uint8))
    paths["csv"].write_text("id,scroll_id\n1,2\n")
    paths["txt"].write_text("hello")
    paths["folder"].mkdir()
    (paths["folder"] / "a.png").write_bytes(paths["png"].read_bytes())
    zarr.create_array(str(paths["zarr_2d"]), data=np.zeros((8, 8), np.uint8))
    group = zarr.open_group(str(paths["zarr_group_of_two"]), mode="w")
    group.create_array("a", data=np.zeros((2, 4, 4), np.uint8))
    group.create_array("b", data=np.zeros((2, 4, 4), np.uint8))
    paths["dir_named_tif"].mkdir()
    return paths


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    """One path of every form this plugin reads."""
    from napari_vesuvius.core.synthetic import write_challenge_dataset

    paths = {
        "tif": tmp_path / "1234.tif",
        "tiff_upper": tmp_path / "5678.TIFF",
        "zarr_v3": tmp_path / "v3.zarr",
        "zarr_v2": tmp_path / "v2.zarr",
        "zarr_no_suffix": tmp_path / "plain_store",
        "zarr_group_of_one": tmp_path / "group.zarr",
        "ome_zarr": tmp_path / "scroll.ome.zarr",
        "dataset": tmp_path / "dataset",
    }
    data = _volume()
    tifffile.imwrite(paths["tif"], data)
    tifffile.imwrite(paths["tiff_upper"], data)
    zarr.create_array(str(paths["zarr_v3"]), data=data)
    zarr.create_array(str(paths["zarr_v2"]), data=data, zarr_format=2)
    zarr.create_array(str(paths["zarr_no_suffix"]), data=data)
    zarr.open_group(str(paths["zarr_group_of_one"]), mode="w").create_array("0", data=data)
    write_ome_zarr(paths["ome_zarr"], [data, data[::2, ::2, ::2]], chunks=(4, 8, 8))
    write_challenge_dataset(paths["dataset"], n_train=1, n_test=1, shape=(8, 16, 16), seed=1)
    return paths


def test_reader_says_nothing_about_other_paths(others: dict[str, Path]) -> None:
    for kind, path in others.items():
        assert napari_get_reader(str(path)) is None, kind


def test_reader_says_nothing_about_a_list_it_cannot_read_in_full(
    others: dict[str, Path], volumes: dict[str, Path]
) -> None:
    assert napari_get_reader([str(volumes["tif"]), str(others["txt"])]) is None
    assert napari_get_reader([str(volumes["tif"]), str(others["missing"])]) is None
    assert napari_get_reader([]) is None
    assert napari_get_reader([str(volumes["tif"]), str(volumes["zarr_v3"])]) is not None


@pytest.mark.parametrize(
    "kind", ["tif", "tiff_upper", "zarr_v3", "zarr_v2", "zarr_no_suffix", "zarr_group_of_one", "ome_zarr"]
)
def test_reader_opens_every_volume_form(volumes: dict[str, Path], kind: str) -> None:
    reader = napari_get_reader(str(volumes[kind]))
    assert reader is not None
    [(data, meta, layer_type)] = reader(str(volumes[kind]))
    level = data[0] if meta["multiscale"] else data
    assert layer_type == "image" and level.shape == (8, 16, 16)
    np.testing.assert_array_equal(np.asarray(level[3]), _volume()[3])


def test_reader_opens_a_dataset_folder_at_its_first_volume(volumes: dict[str, Path]) -> None:
    from napari_vesuvius.core.dataset import ChallengeDataset
    from napari_vesuvius.widgets._layers import LABELS_OPACITY

    root = volumes["dataset"]
    reader = napari_get_reader(str(root))
    assert reader is not None
    layers = reader(str(root))
    first = ChallengeDataset.open(root).ids[0]
    assert [layer_type for _, _, layer_type in layers] == ["image", "labels"]
    (_, image_meta, _), (_, label_meta, _) = layers
    assert image_meta["name"] == first and image_meta["colormap"] == "gray"
    assert label_meta["name"].startswith(f"{first} labels") and label_meta["opacity"] == LABELS_OPACITY
    assert image_meta["metadata"]["dataset"] == str(root) and label_meta["metadata"]["vesuvius_id"] == first


def _npe2_readers(path: Path) -> set[str]:
    import npe2

    manager = npe2.PluginManager.instance()
    manager.discover()
    return {reader.plugin_name for reader in manager.iter_compatible_readers([str(path)])}


def test_napari_offers_this_plugin_only_for_what_it_reads(
    others: dict[str, Path], volumes: dict[str, Path]
) -> None:
    for kind in ("png", "csv", "txt"):
        assert PLUGIN not in _npe2_readers(others[kind]), kind
    for kind in ("tif", "tiff_upper", "zarr_v3", "ome_zarr", "dataset"):
        assert PLUGIN in _npe2_readers(volumes[kind]), kind


def test_manifest_has_no_catch_all_pattern() -> None:
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN)
    [reader] = manifest.contributions.readers
    assert "*" not in reader.filename_patterns
    assert {"*.tif", "*.tiff", "*.zarr"} <= set(reader.filename_patterns) and reader.accepts_directories


def test_a_folder_npe2_offers_is_declined_without_error(others: dict[str, Path]) -> None:
    """npe2 offers every folder to readers that accept directories; ours then declines (no exception)."""
    import npe2

    assert PLUGIN in _npe2_readers(others["folder"])
    with pytest.raises(ValueError, match="refused the file"):
        npe2.read([str(others["folder"])], stack=False, plugin_name=PLUGIN)


def test_napari_opens_a_png_without_asking_or_blaming_this_plugin(others: dict[str, Path]) -> None:
    from napari.components import ViewerModel

    viewer = ViewerModel()
    layers = viewer.open(str(others["png"]))  # one reader left: no MultipleReaderError
    assert len(layers) == 1 and layers[0].source.reader_plugin != PLUGIN


def test_napari_opens_a_dataset_folder_and_an_ome_zarr_with_this_plugin(volumes: dict[str, Path]) -> None:
    from napari.components import ViewerModel

    viewer = ViewerModel()
    layers = viewer.open(str(volumes["dataset"]), plugin=PLUGIN)
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    [pyramid] = viewer.open(str(volumes["ome_zarr"]), plugin=PLUGIN)
    assert pyramid.multiscale and pyramid.source.reader_plugin == PLUGIN


def test_a_zarr_url_is_claimed_by_name_and_opens_placed(tmp_path):
    """``viewer.open(url)``: a URL ending in .zarr is ours (no request to decide); others are not."""
    from http_server import FaultServer
    from napari_vesuvius.core.volume.spatial import Spatial

    data = np.arange(16 * 32 * 32, dtype=np.uint32).reshape(16, 32, 32).astype(np.uint8)
    write_ome_zarr(tmp_path / "scan.ome.zarr", data, spatial=Spatial((7.91,) * 3, unit="micrometer"))
    assert napari_get_reader("https://example.org/data/x.png") is None
    assert napari_get_reader("https://example.org/data/x.tif") is None
    with FaultServer(tmp_path) as server:
        reader = napari_get_reader(f"{server.url}/scan.ome.zarr/")
        assert reader is not None and server.count() == 0  # claimed by name only
        [(layer_data, meta, kind)] = reader(f"{server.url}/scan.ome.zarr")
        level0 = layer_data[0] if meta["multiscale"] else layer_data
        np.testing.assert_array_equal(np.asarray(level0), data)  # lazy: read while the server runs
    assert kind == "image" and tuple(meta["scale"]) == (7.91,) * 3
