"""Physical placement in the GUI: reader layers get the volume's scale, translate and units; the Data step
updates them in place and describes them; layers made from another layer (probabilities, masks, previews)
lie exactly over it; outputs the docks write carry it, in the zarr format of the preference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial

PLACED = Spatial((2.0, 0.5, 0.5), (10.0, -4.0, 3.0), "micrometer")
UNITS = ("micrometer",) * 3


def _plain_zarr(path, data: np.ndarray, spatial: Spatial | None) -> None:
    """A zarr v2 array with this project's placement attribute (what other tools' plain zarrs lack)."""
    import zarr

    array = zarr.create_array(store=str(path), shape=data.shape, dtype=data.dtype, chunks=(8, 16, 16))
    array[:] = data
    if spatial is not None:
        array.attrs[SPATIAL_ATTR] = spatial.to_dict()


def _units(layer) -> tuple[str, ...]:
    return tuple(str(unit) for unit in layer.units)


def _assert_placed_like(layer, source, origin=(0, 0, 0)) -> None:
    np.testing.assert_allclose(layer.scale, source.scale)
    np.testing.assert_allclose(
        layer.translate, np.asarray(source.translate) + np.asarray(origin) * source.scale
    )
    assert _units(layer) == _units(source)


def test_reader_layers_are_placed_like_their_volume(tmp_path):
    from napari.layers import Layer

    from napari_vesuvius._reader import read_volumes

    path = tmp_path / "ct.zarr"
    _plain_zarr(path, np.arange(16 * 32 * 32, dtype=np.uint16).reshape(16, 32, 32), PLACED)
    [(data, meta, kind)] = read_volumes(str(path))
    assert kind == "image"
    layer = Layer.create(data, meta, kind)
    assert tuple(layer.scale) == PLACED.scale and tuple(layer.translate) == PLACED.translation
    assert _units(layer) == UNITS
    assert Spatial.from_layer(layer) == PLACED  # what the docks hand to their outputs
    assert layer.metadata["spatial"]["source"] == "zarr-attrs"


def test_reading_notes_are_shown_once_and_kept_in_the_layer(tmp_path, monkeypatch):
    """A note the reader also warned about while reading (a squeezed axis) is one warning, not two."""
    from napari_vesuvius import _reader
    from napari_vesuvius.core.volume.base import VolumeWarning

    path = tmp_path / "ct.zarr"
    _plain_zarr(path, np.zeros((16, 32, 32), np.uint8), None)
    note = "squeezed singleton axes t, c (shape (1, 1, 16, 32, 32))"
    real_open = _reader.open_volume

    def open_with_note(item, **kwargs):
        volume = real_open(item, **kwargs)
        warnings.warn(f"{item}: {note}", VolumeWarning, stacklevel=2)
        volume.notes.append(note)
        return volume

    monkeypatch.setattr(_reader, "open_volume", open_with_note)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [(_, meta, _)] = _reader.read_volumes(str(path))
    shown = [str(w.message) for w in caught if note in str(w.message)]
    assert shown == [f"{path}: {note}"]
    assert meta["metadata"]["notes"] == [note]


@pytest.fixture
def data_dock(make_napari_viewer):
    from napari_vesuvius.widgets.data_widget import DataWidget

    viewer = make_napari_viewer()
    widget = DataWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Data")
    return viewer, widget


def _open(qtbot, widget, location) -> None:
    widget.open_path(location)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60000)


def test_the_data_step_updates_placement_in_place_and_describes_it(data_dock, tmp_path, qtbot):
    from napari_vesuvius.core.volume.write import write_volume

    viewer, widget = data_dock
    first, second, plain = tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "c.tif"
    _plain_zarr(first, np.ones((16, 32, 32), np.uint8) * 3, PLACED)
    other = Spatial((7.91, 7.91, 7.91), (0.0, 0.0, 0.0), "nanometer")
    _plain_zarr(second, np.ones((16, 32, 32), np.uint8) * 4, other)
    write_volume(plain, np.full((16, 32, 32), 100, np.uint8))

    _open(qtbot, widget, first)
    [layer] = list(viewer.layers)
    assert tuple(layer.scale) == PLACED.scale and _units(layer) == UNITS
    assert "voxel 2 × 0.5 × 0.5 micrometer, origin 10, -4, 3 (from zarr-attrs)" in widget.info.value

    _open(qtbot, widget, second)
    assert list(viewer.layers) == [layer]  # the same layer, moved and rescaled in place
    assert Spatial.from_layer(layer) == other and "7.91 × 7.91 × 7.91 nanometer" in widget.info.value

    _open(qtbot, widget, plain)
    assert list(viewer.layers) == [layer]
    assert Spatial.from_layer(layer).is_default and set(_units(layer)) == {"pixel"}
    assert "no physical scale" in widget.info.value


def test_placement_of_a_crop_and_of_a_whole_layer():
    from napari.layers import Image

    from napari_vesuvius.widgets._layers import place_like, placement

    source = Image(np.zeros((4, 6, 8)), **PLACED.layer_kwargs())
    assert placement(source) == {"scale": PLACED.scale, "translate": PLACED.translation, "units": UNITS}
    crop = placement(source, origin=(1, 2, 4))
    assert crop["translate"] == (12.0, -3.0, 5.0) and crop["scale"] == PLACED.scale
    moved = Image(np.zeros((2, 2, 2)))
    place_like(moved, source, origin=(1, 2, 4))
    _assert_placed_like(moved, source, origin=(1, 2, 4))


@pytest.fixture
def placed_tune(make_napari_viewer, qtbot):
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    fragment = make_fragment((24, 32, 32), seed=5)
    viewer = make_napari_viewer()
    kwargs = PLACED.layer_kwargs()
    viewer.add_image(fragment.image, name="ct", **kwargs)
    viewer.add_image(fragment.surface.astype(np.float32) * 0.9, name="prob", **kwargs)
    widget = TuneWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Tune")
    widget.probability.value = viewer.layers["prob"]
    widget.ct.value = viewer.layers["ct"]
    return viewer, widget


def _settle(widget, qtbot) -> None:
    qtbot.waitUntil(lambda: widget.preview.idle and not widget.preview.scan_task.running, timeout=30000)


def test_tune_preview_and_mask_lie_over_the_probability_layer(placed_tune, qtbot):
    viewer, widget = placed_tune
    prob = viewer.layers["prob"]
    # a layer placed otherwise: the viewer's steps are no longer the probability layer's voxels
    viewer.add_image(np.zeros((8, 8, 8), np.float32), name="unplaced", visible=False)
    viewer.dims.set_point(0, PLACED.translation[0] + 5 * PLACED.scale[0])  # world units: slice 5
    _settle(widget, qtbot)
    preview = viewer.layers["prob preview"]
    assert preview.data.shape[0] == 1
    _assert_placed_like(preview, prob, origin=(5, 0, 0))
    viewer.dims.set_point(0, PLACED.translation[0] + 9 * PLACED.scale[0])
    _settle(widget, qtbot)
    assert viewer.layers["prob preview"] is preview
    _assert_placed_like(preview, prob, origin=(9, 0, 0))

    assert widget.apply() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=30000)
    _assert_placed_like(viewer.layers["prob mask"], prob)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset

    torch.manual_seed(0)
    config = preset("tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_unet(config), config, Normalization(), (32, 32, 32), {"note": "random"})
    return path


@pytest.fixture
def placed_inference(make_napari_viewer, tiny_checkpoint):
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    viewer = make_napari_viewer()
    viewer.add_image(make_fragment((32, 40, 40), seed=2).image, name="ct", **PLACED.layer_kwargs())
    widget = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Inference")
    widget.image.value = viewer.layers["ct"]
    widget.models.model.value = tiny_checkpoint
    widget.device.value = "cpu"
    widget.precision.value = "fp32"
    return viewer, widget


def _zarr_format_preference(monkeypatch, tmp_path, value: int) -> None:
    """Set Preferences › napari-vesuvius › zarr_format the way napari's dialog does (temporary folder)."""
    import napari.settings

    from napari_vesuvius.widgets import _preferences, _settings

    monkeypatch.setattr(napari.settings, "_PLUGIN_SETTINGS", {})
    monkeypatch.delenv(_settings.DISABLE_ENV, raising=False)
    settings = napari.settings.get_plugin_settings(_preferences.PLUGIN, path_dir=tmp_path / "settings")
    settings.volumes.zarr_format = value
    assert _preferences.zarr_format() == value


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_the_prediction_is_placed_like_its_image_in_the_layer_and_the_output(
    placed_inference, tmp_path, qtbot, monkeypatch, zarr_format
):
    import zarr

    from napari_vesuvius.core.volume.io import open_volume

    if zarr_format == 3:
        _zarr_format_preference(monkeypatch, tmp_path, 3)
    viewer, widget = placed_inference
    target = tmp_path / "pred.zarr"
    widget.output_zarr.value = target
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    _assert_placed_like(viewer.layers["ct probability"], viewer.layers["ct"])
    assert zarr.open_array(str(target), mode="r").metadata.zarr_format == zarr_format
    assert (target / (".zarray" if zarr_format == 2 else "zarr.json")).is_file()
    with open_volume(target) as written:  # the output file carries the placement too
        assert written.spatial == PLACED


def test_an_ome_zarr_prediction_is_a_placed_pyramid(placed_inference, tmp_path, qtbot):
    from napari_vesuvius.core.volume.io import open_volume

    viewer, widget = placed_inference
    target = tmp_path / "pred.ome.zarr"
    widget.output_zarr.value = target
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert "failed" not in widget.message.value, widget.message.value
    with open_volume(target) as written:
        assert written.kind == "ome-zarr" and written.spatial == PLACED
    layer = viewer.layers["ct probability"]
    _assert_placed_like(layer, viewer.layers["ct"])
    assert layer.data.shape == viewer.layers["ct"].data.shape


def test_proofreading_a_box_is_placed_over_the_image_and_saved_with_its_placement(
    make_napari_viewer, tmp_path, qtbot, monkeypatch
):
    import zarr

    from napari_vesuvius.core.proofread.naming import version_path
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.core.volume.io import open_volume
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget

    _zarr_format_preference(monkeypatch, tmp_path, 3)
    fragment = make_fragment((32, 32, 32), seed=2)
    viewer = make_napari_viewer()
    image = viewer.add_image(fragment.image, name="0", **PLACED.layer_kwargs())
    probability = viewer.add_image(fragment.surface.astype(np.float32), name="0 probability")
    widget = ProofreadWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Proofread")
    widget.reset_choices()
    widget.image.value, widget.prediction.value = image, probability
    widget.autosave_minutes.value = 0.0
    target = tmp_path / "0_labels.zarr"
    widget.target.value = target
    widget.region.value = "box"
    widget.box.value = "4:20,8:24,0:32"
    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    _assert_placed_like(viewer.layers["0 proofread"], image, origin=(4, 8, 0))

    widget.save()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    saved = version_path(target, 1)
    with open_volume(saved) as volume:  # the whole volume's placement, in the preferred zarr format
        assert volume.shape == (32, 32, 32) and volume.spatial == PLACED
    assert zarr.open(str(saved), mode="r").metadata.zarr_format == 3
