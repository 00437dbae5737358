"""Viewer tests for the Data widget: open a dataset folder, browse ids, label colours and counts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vesuvius.core.labels import IGNORE, LABEL_COLORS, SURFACE


@pytest.fixture
def dataset_folder(tmp_path):
    from napari_vesuvius.core.synthetic import write_challenge_dataset

    write_challenge_dataset(tmp_path / "dataset", n_train=2, n_test=1, shape=(32, 40, 40), seed=3)
    return tmp_path / "dataset"


def _widget(make_napari_viewer):
    from napari_vesuvius.widgets.data_widget import DataWidget

    viewer = make_napari_viewer()
    widget = DataWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Data")
    return viewer, widget


def test_open_dataset_shows_image_and_labels_with_fixed_colours(make_napari_viewer, dataset_folder):
    viewer, widget = _widget(make_napari_viewer)
    widget.path.value = dataset_folder
    widget.open_path(dataset_folder)

    ids = list(widget.volume_id.choices)
    assert len(ids) == 3
    assert widget.volume_id.value == ids[0]
    layer_types = sorted(type(layer).__name__ for layer in viewer.layers)
    assert layer_types == ["Image", "Labels"]
    labels = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    assert "label" in labels.name and ids[0] in labels.name
    np.testing.assert_allclose(labels.colormap.map(SURFACE), LABEL_COLORS[SURFACE], atol=1e-6)
    np.testing.assert_allclose(labels.colormap.map(IGNORE), LABEL_COLORS[IGNORE], atol=1e-6)
    assert LABEL_COLORS[IGNORE][3] < 1.0  # ignore is semi-transparent
    assert "shape (32, 40, 40)" in widget.info.value


@pytest.mark.slow
def test_browse_next_previous_and_test_ids_have_no_labels(make_napari_viewer, dataset_folder):
    viewer, widget = _widget(make_napari_viewer)
    widget.open_path(dataset_folder)
    ids = list(widget.volume_id.choices)
    widget.step(+1)
    assert widget.volume_id.value == ids[1]
    assert any(ids[1] in layer.name for layer in viewer.layers)
    assert not any(ids[0] in layer.name for layer in viewer.layers)  # previous volume's layers replaced
    widget.step(-2)  # wraps around to the last id
    assert widget.volume_id.value == ids[-1]
    test_id = str(widget.dataset.test_ids[0])
    widget.volume_id.value = test_id
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image"]


def test_toggle_ignore_hides_label_two_only(make_napari_viewer, dataset_folder):
    viewer, widget = _widget(make_napari_viewer)
    widget.open_path(dataset_folder)
    labels = next(layer for layer in viewer.layers if type(layer).__name__ == "Labels")
    widget.toggle_ignore()
    assert labels.colormap.map(IGNORE)[3] == 0
    assert labels.colormap.map(SURFACE)[3] == 1
    widget.toggle_ignore()
    assert labels.colormap.map(IGNORE)[3] == pytest.approx(LABEL_COLORS[IGNORE][3])


def test_count_label_values_runs_in_background(make_napari_viewer, dataset_folder, qtbot):
    import tifffile

    _, widget = _widget(make_napari_viewer)
    widget.open_path(dataset_folder)
    widget.count_label_values()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=20000)
    label = tifffile.imread(widget.dataset.label_path(widget.volume_id.value))
    values, counts = np.unique(label, return_counts=True)
    for value, count in zip(values, counts, strict=True):
        assert f"{value}: {count} " in widget.info.value


def test_bad_path_reports_clear_error(make_napari_viewer, tmp_path):
    viewer, widget = _widget(make_napari_viewer)
    bogus = tmp_path / "not_a_volume.txt"
    bogus.write_text("hello")
    widget.open_path(bogus)
    assert "not_a_volume.txt" in widget.message.value
    assert len(viewer.layers) == 0
