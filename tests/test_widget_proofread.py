"""Viewer tests for the Proofread dock: accept → paint with the 1/0/2 keys → changes → save a version
(original untouched) → autosave → retrain a tiny model → the fine-tuned probability layer appears;
a box (crop) session restored from its autosave; nothing lost when the dock is closed or hidden or
napari closes, and a slow older autosave never replaces a newer one; the compact layout."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.labels import IGNORE, SURFACE
from napari_vesuvius.core.proofread.autosave import read_autosave
from napari_vesuvius.core.proofread.naming import autosave_path, version_path
from napari_vesuvius.core.synthetic import make_fragment
from napari_vesuvius.core.volume.io import open_volume, write_volume
from napari_vesuvius.widgets._proofread_layers import viewer_grid

#: generous: the machine is shared and the training subprocess has to import torch
TIMEOUT_MS = 240_000
SHAPE = (32, 32, 32)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def scene(make_napari_viewer, tmp_path):
    """A viewer with CT, probability and labels layers (labels read from train_labels/0.tif) + the dock."""
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget

    fragment = make_fragment(SHAPE, seed=2)
    for folder in ("train_images", "train_labels"):
        (tmp_path / folder).mkdir()
    image_path, label_path = tmp_path / "train_images" / "0.tif", tmp_path / "train_labels" / "0.tif"
    write_volume(image_path, fragment.image)
    write_volume(label_path, fragment.labels)
    rng = np.random.default_rng(0)
    prob = np.clip(0.9 * fragment.surface + rng.normal(0.05, 0.02, SHAPE), 0, 1).astype(np.float32)
    viewer = make_napari_viewer()
    image = viewer.add_image(fragment.image, name="0", metadata={"path": str(image_path)})
    probability = viewer.add_image(prob, name="0 probability")
    labels = viewer.add_labels(fragment.labels.copy(), name="0 labels", metadata={"path": str(label_path)})
    widget = ProofreadWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Proofread")
    widget.reset_choices()
    widget.image.value, widget.prediction.value, widget.existing.value = image, probability, labels
    widget.autosave_minutes.value = 0.0
    yield viewer, widget, fragment, label_path
    process = widget.retrain.process
    if process is not None and process.running:  # never leave a training behind
        process.kill()
        process.wait(30)
    with contextlib.suppress(RuntimeError):  # a test that closed the viewer deleted the timer
        widget.retrain.timer.stop()


def _press(viewer, key: str) -> None:
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals for the training process")
def test_accept_paint_save_autosave_and_retrain(scene, tmp_path, qtbot):
    from napari_vesuvius.cli.main import main

    viewer, widget, fragment, label_path = scene
    assert Path(widget.target.value) == label_path  # suggested from the labels layer's file
    original = _digest(label_path)

    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    layer = viewer.layers["0 proofread"]
    assert widget.session is not None and widget.session.whole
    np.testing.assert_array_equal(layer.data == IGNORE, fragment.labels == IGNORE)  # ignore kept
    assert np.count_nonzero(layer.data == SURFACE) > 0 and not widget.dirty
    assert viewer.layers.selection.active is layer

    for key, value in (("2", IGNORE), ("0", 0), ("1", SURFACE)):
        _press(viewer, key)
        assert layer.selected_label == value and layer.mode == "paint"
    background = np.argwhere(layer.data == 0)[0]
    layer.brush_size = 1
    layer.paint(tuple(background), layer.selected_label)
    assert layer.data[tuple(background)] == SURFACE and widget.dirty

    widget.show_diff.value = True  # computed in the background
    qtbot.waitUntil(lambda: "added 1" in widget.diff_summary.value, timeout=30_000)
    changes = viewer.layers["0 proofread changes"]
    assert changes.data[tuple(background)] == 1 and "added 1" in widget.diff_summary.value
    assert viewer.layers.selection.active is layer  # painting goes on on the proofread layer

    widget.save()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    first = version_path(label_path, 1)
    assert first.is_file() and _digest(label_path) == original
    with open_volume(first) as saved:
        np.testing.assert_array_equal(saved.data.compute(), layer.data)
    assert not widget.dirty and "v001" in widget.status.value

    _press(viewer, "2")
    layer.paint(tuple(np.argwhere(layer.data == 0)[0]), layer.selected_label)
    widget.autosave_minutes.value = 0.005  # 0.3 s
    qtbot.waitUntil(lambda: autosave_path(label_path).is_file(), timeout=30_000)
    qtbot.waitUntil(lambda: not widget.autosave_task.running, timeout=30_000)
    np.testing.assert_array_equal(read_autosave(autosave_path(label_path)).data, layer.data)
    widget.autosave_minutes.value = 0.0

    model = tmp_path / "tiny.pt"
    args = ["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", str(model)]
    assert main(args) == 0
    retrain = widget.retrain
    retrain.model.value = model
    retrain.runs_folder.value = tmp_path / "runs"
    retrain.epochs.value, retrain.iterations.value, retrain.batch_size.value = 1, 2, 1
    retrain.device.value, retrain.threads.value = "cpu", 1
    retrain.retrain()  # unsaved edits: saves v002 first, then trains on it
    qtbot.waitUntil(lambda: "0 probability fine-tuned" in viewer.layers, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not retrain.task.running, timeout=60_000)
    assert version_path(label_path, 2).is_file() and _digest(label_path) == original
    assert not autosave_path(label_path).exists()  # its contents are in v002
    new = viewer.layers["0 probability fine-tuned"]
    assert new.data.shape == SHAPE and 0.0 <= float(new.data.min()) <= float(new.data.max()) <= 1.0
    assert viewer.layers.index(new) == viewer.layers.index("0 probability") + 1
    # one labelled volume, trained on: no fair comparison, so no winner is shown (test_widget_retrain)
    assert retrain.scores.value["data"] == [] and "no fair comparison possible" in retrain.status.value
    assert Path(retrain.model.value).name == "checkpoint_best.pt"  # the next round starts from it
    retrain.side_by_side.value = True
    visible = [x.name for x in viewer.layers if x.visible]
    assert viewer_grid(viewer).enabled and visible == ["0 probability", "0 probability fine-tuned"]
    retrain.side_by_side.value = False
    assert not viewer_grid(viewer).enabled and layer.visible


def test_visible_region_and_component_tools(scene, qtbot):
    viewer, widget, _, _ = scene
    viewer.dims.set_current_step(0, 10)
    widget.region.value, widget.depth.value = "visible region", 6
    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    layer = viewer.layers["0 proofread"]
    assert widget.box.value == "7:13,0:32,0:32" and layer.data.shape == (6, 32, 32)
    layer.data[:, :16, :16] = 0
    layer.data[2, 4:8, 4:8] = SURFACE  # two 6-connected blobs touching only at a corner
    layer.data[3, 8:12, 8:12] = SURFACE
    widget.tools.min_sheet.value = 4
    widget.tools.remove_bridges()
    qtbot.waitUntil(lambda: not widget.tools.task.running, timeout=60_000)
    message = widget.tools.message.value
    assert "voxels removed" in message and not message.startswith("0 ") and widget.tools.undo_button.enabled
    assert widget.dirty
    widget.tools.undo()
    assert layer.data[2, 4:8, 4:8].all() and not widget.tools.undo_button.enabled

    panel = widget.tools.components  # delete a component (a background edit), then undo it
    panel.show_components()
    qtbot.waitUntil(lambda: panel.components is not None and not panel.task.running, timeout=60_000)
    before = np.array(layer.data, copy=True)
    panel.selected.value = 1
    widget.tools.delete_or_keep(keep=False)
    qtbot.waitUntil(lambda: widget.tools.undo_button.enabled, timeout=60_000)
    assert np.count_nonzero(layer.data == SURFACE) < np.count_nonzero(before == SURFACE)
    qtbot.waitUntil(lambda: not panel.task.running, timeout=60_000)  # relabelled
    widget.tools.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_box_session_restored_from_autosave(scene, qtbot):
    viewer, widget, _, label_path = scene
    widget.region.value = "box"
    widget.box.value = "4:20,8:24,0:32"
    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    layer = viewer.layers["0 proofread"]
    assert layer.data.shape == (16, 16, 32) and tuple(layer.translate) == (4.0, 8.0, 0.0)
    layer.data[0, 0, 0] = IGNORE
    layer.events.data()  # an edit the session notices (as a tool would make)
    edited = np.array(layer.data, copy=True)
    widget.final_autosave()  # what closing napari does
    saved = read_autosave(autosave_path(label_path))
    assert saved.box == (slice(4, 20), slice(8, 24), slice(0, 32))

    viewer.layers.remove(layer)
    widget.session = widget.layer = None
    widget.own_autosaves.clear()  # as if napari had crashed and been started again
    widget._target_changed()
    assert widget.restore_button.enabled
    assert widget.accept() is None and "holds unsaved work" in widget.status.value  # not replaced silently
    widget.restore_autosave()  # read in the background
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    restored = viewer.layers["0 proofread"]
    np.testing.assert_array_equal(restored.data, edited)
    assert tuple(restored.translate) == (4.0, 8.0, 0.0) and widget.dirty
    assert widget.session.probability is not None  # the split tool has the probability again


def _accept_and_paint(viewer, widget, qtbot):
    """Accept the whole volume, then paint one background voxel as surface (an unsaved stroke)."""
    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    layer = viewer.layers["0 proofread"]
    _paint_one(layer)
    assert widget.dirty
    return layer


def _paint_one(layer, value: int = SURFACE) -> tuple[int, ...]:
    voxel = tuple(int(i) for i in np.argwhere(layer.data == 0)[0])
    layer.brush_size = 1
    layer.paint(voxel, value)
    return voxel


def _dock_of(widget):
    from qtpy.QtWidgets import QDockWidget

    parent = widget.native.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


@pytest.mark.parametrize("how", ["close button", "hide", "workbench tab"])
def test_closing_or_hiding_the_dock_autosaves_the_last_stroke(scene, qtbot, how):
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget
    from napari_vesuvius.widgets.workbench import Workbench

    viewer, widget, _, label_path = scene
    workbench = None
    if how == "workbench tab":  # the Proofread tab of a docked workbench
        workbench = Workbench(viewer, persist=False)
        viewer.window.add_dock_widget(workbench, name="Vesuvius")
        qtbot.waitUntil(lambda: workbench.ready, timeout=60_000)
        workbench.show_step(ProofreadWidget)
        previous = widget
        widget = workbench.step(ProofreadWidget)
        widget.image.value, widget.prediction.value = previous.image.value, previous.prediction.value
        widget.existing.value = previous.existing.value
        widget.autosave_minutes.value = 0.0
    viewer.window.show()
    qtbot.waitUntil(widget.native.isVisible)
    layer = _accept_and_paint(viewer, widget, qtbot)
    assert not autosave_path(label_path).exists()
    dock = _dock_of(widget)
    if how == "close button":
        dock.destroyOnClose()  # what napari's × does: the dock goes, the widget is only hidden
    elif how == "hide":
        dock.hide()  # the Window menu's toggle
    else:
        workbench.tabs.setCurrentIndex(workbench.tabs.count() - 1)  # the user goes on to Export
    qtbot.waitUntil(lambda: autosave_path(label_path).is_file(), timeout=30_000)
    qtbot.waitUntil(lambda: not widget.autosave_task.running, timeout=30_000)
    np.testing.assert_array_equal(read_autosave(autosave_path(label_path)).data, layer.data)
    assert widget.dirty  # in the autosave, not in a version yet
    written = autosave_path(label_path).stat().st_mtime_ns
    widget.native.show()
    widget.native.hide()  # nothing new: no second write
    assert not widget.autosave_task.running and autosave_path(label_path).stat().st_mtime_ns == written


def test_closing_napari_autosaves_synchronously(scene, qtbot):
    viewer, widget, _, label_path = scene
    layer = _accept_and_paint(viewer, widget, qtbot)
    expected = np.array(layer.data, copy=True)
    viewer.close()
    saved = read_autosave(autosave_path(label_path))  # complete as soon as the window has closed
    np.testing.assert_array_equal(saved.data, expected)


def test_a_slow_older_autosave_never_replaces_the_one_written_at_close(scene, qtbot, monkeypatch):
    from napari_vesuvius.core.proofread import autosave as autosave_module

    viewer, widget, _, label_path = scene
    layer = _accept_and_paint(viewer, widget, qtbot)
    encode, release, blocked, results = autosave_module._encode, threading.Event(), threading.Event(), []
    first: list[int] = []

    def slow_encode(pages, meta):
        if not first:
            first.append(meta["generation"])
            blocked.set()
            assert release.wait(60)  # the disk is slow for the first (older) autosave only
        return encode(pages, meta)

    write = autosave_module.write_autosave

    def recording_write(*args, **kwargs):
        path = write(*args, **kwargs)
        results.append((kwargs["generation"], path))
        return path

    monkeypatch.setattr(autosave_module, "_encode", slow_encode)
    monkeypatch.setattr("napari_vesuvius.core.proofread.session.write_autosave", recording_write)
    widget.autosave()  # background: the older snapshot (one stroke)
    qtbot.waitUntil(blocked.is_set, timeout=30_000)
    second = _paint_one(layer, IGNORE)  # a newer stroke, then napari closes
    expected = np.array(layer.data, copy=True)
    viewer.close()
    assert read_autosave(autosave_path(label_path)).data[second] == IGNORE
    release.set()  # now the older write finishes ...
    qtbot.waitUntil(lambda: len(results) == 2, timeout=30_000)
    assert results[1] == (first[0], None)  # ... and is skipped
    saved = read_autosave(autosave_path(label_path))
    np.testing.assert_array_equal(saved.data, expected)
    assert saved.generation == results[0][0] > first[0]


def test_layout_primary_controls_models_and_preferences(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import QPoint

    from napari_vesuvius.widgets._layers import LABELS_OPACITY, MODELS
    from napari_vesuvius.widgets._preferences import preference
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget
    from napari_vesuvius.widgets.workbench import StepScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    fragment = make_fragment((16, 16, 16), seed=1)
    image = viewer.add_image(fragment.image, name="0")
    models = [{"path": "/models/a.pt", "name": "a"}]
    mask = viewer.add_labels(fragment.surface.astype(np.uint8), name="0 mask", metadata={MODELS: models})
    widget = ProofreadWidget(viewer, persist=False)
    area = StepScrollArea(widget)
    viewer.window.add_dock_widget(area, name="Proofread", area="right")
    qtbot.waitUntil(lambda: widget.native.isVisible())
    assert widget.autosave_minutes.value == preference("autosave_minutes")
    assert all(not section.expanded for section in widget.sections)
    assert widget.native.minimumSizeHint().width() <= 370
    viewport = area.viewport()
    for control in widget.primary_controls():
        assert control.native.isVisible(), control
        bottom = control.native.mapTo(viewport, QPoint(0, control.native.height())).y()
        assert 0 < bottom <= min(680, viewport.height()), (control, bottom)

    assert widget.region_section.title == "Region: whole volume"
    widget.region.value = "box"
    assert widget.region_section.header.text.endswith("Region: box") and widget.box.enabled
    widget.region.value = "whole volume"

    widget.reset_choices()
    widget.image.value, widget.prediction.value = image, mask
    widget.target.value = tmp_path / "0.tif"
    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    layer = viewer.layers["0 proofread"]
    assert layer.metadata[MODELS] == models and layer.opacity == LABELS_OPACITY  # Retrain's model
    np.testing.assert_array_equal(layer.data, fragment.surface.astype(np.uint8))
