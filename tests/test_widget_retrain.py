"""Proofread's Retrain panel: it fine-tunes the model that made the prediction (and says so), an explicit
choice wins, the model field is never restored from an earlier session, it asks when no model is known;
Train and Retrain follow their runs with one shared class; and (slow) a retrain end to end with the
old-vs-new comparison scored on a held-out labelled volume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.synthetic import make_fragment
from napari_vesuvius.core.volume.io import write_volume

SHAPE = (32, 32, 32)
TIMEOUT_MS = 240_000


@pytest.fixture
def scene(make_napari_viewer, tmp_path):
    """CT + a probability layer made by ``made_it.pt`` (Inference metadata) + the Proofread dock."""
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget

    fragment = make_fragment(SHAPE, seed=2)
    for folder in ("train_images", "train_labels"):
        (tmp_path / folder).mkdir()
    for name, seed in (("0", 2), ("1", 4)):  # "1" is labelled and never trained on: the fair comparison
        other = fragment if seed == 2 else make_fragment(SHAPE, seed=seed)
        write_volume(tmp_path / "train_images" / f"{name}.tif", other.image)
        write_volume(tmp_path / "train_labels" / f"{name}.tif", other.labels)
    made_it, other = tmp_path / "made_it.pt", tmp_path / "other.pt"
    made_it.touch()
    other.touch()
    prob = np.clip(0.9 * fragment.surface + 0.05, 0, 1).astype(np.float32)
    viewer = make_napari_viewer()
    image = viewer.add_image(
        fragment.image, name="0", metadata={"path": str(tmp_path / "train_images" / "0.tif")}
    )
    probability = viewer.add_image(
        prob, name="0 probability", metadata={"models": [{"path": str(made_it), "weight": 1.0}]}
    )
    labels = viewer.add_labels(
        fragment.labels.copy(), name="0 labels", metadata={"path": str(tmp_path / "train_labels" / "0.tif")}
    )
    widget = ProofreadWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Proofread")
    widget.reset_choices()
    widget.image.value, widget.existing.value = image, labels
    widget.prediction.value = probability
    widget.autosave_minutes.value = 0.0
    yield viewer, widget, made_it, other
    process = widget.retrain.process
    if process is not None and process.running:  # never leave a training behind
        process.kill()
        process.wait(30)
    widget.retrain.follower.stop()


def test_retrain_fine_tunes_the_model_that_made_the_prediction(scene):
    viewer, widget, made_it, other = scene
    retrain = widget.retrain
    assert Path(retrain.model.value) == made_it and retrain.model_path() == made_it
    assert retrain.model_note.value == "fine-tunes made_it.pt, the model that made '0 probability'"

    ensemble = viewer.add_image(
        np.zeros(SHAPE, np.float32), name="ensemble probability",
        metadata={"models": [{"path": str(other), "weight": 0.5}, {"path": str(made_it), "weight": 2.0}]},
    )  # fmt: skip
    widget.reset_choices()
    widget.prediction.value = ensemble
    assert (
        retrain.model_path() == made_it
        and "highest-weighted of its 2 ensemble models" in retrain.model_note.value
    )

    unknown = viewer.add_image(np.zeros(SHAPE, np.float32), name="loaded from disk")
    widget.reset_choices()
    widget.prediction.value = unknown  # no model known: ask, never keep the previous one
    assert retrain.model_path() is None and str(retrain.model.value) in ("", ".")
    assert "does not say which model made it: choose the model to fine-tune" in retrain.model_note.value
    retrain.retrain()
    assert "choose the model to fine-tune" in retrain.status.value and retrain.process is None

    retrain.model.value = other  # an explicit choice in this session wins over the prediction's model
    widget.prediction.value = viewer.layers["0 probability"]
    assert retrain.model_path() == other and "chosen here" in retrain.model_note.value
    retrain.model.line_edit.value = ""  # emptied: back to the prediction's model
    assert retrain.model_path() == made_it and Path(retrain.model.value) == made_it


def test_the_model_field_is_not_restored_in_a_new_session(make_napari_viewer, tmp_path, monkeypatch):
    from qtpy.QtCore import QSettings, QStandardPaths

    from napari_vesuvius.widgets import _proofread_retrain, _settings
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget

    assert "model" not in _proofread_retrain.SETTING_NAMES
    monkeypatch.delenv(_settings.DISABLE_ENV, raising=False)
    fmt = QSettings.Format.IniFormat
    QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path))
    QSettings.setDefaultFormat(fmt)
    try:
        stale = tmp_path / "old_finetune.pt"
        stale.touch()
        store = _settings.WidgetSettings("proofread_retrain", enabled=True)
        store.set("model", str(stale))  # what an earlier version persisted
        store.set("epochs", 7)
        widget = ProofreadWidget(make_napari_viewer(), persist=True)
        assert widget.retrain.epochs.value == 7  # the other settings are restored
        assert str(widget.retrain.model.value) in ("", ".") and widget.retrain.model_path() is None
    finally:
        QSettings.setDefaultFormat(QSettings.Format.NativeFormat)
        home = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
        QSettings.setPath(fmt, QSettings.Scope.UserScope, home)


def test_train_and_retrain_share_one_follower_and_keep_details_collapsed(scene):
    from napari_vesuvius.widgets._training_follower import TrainingFollower
    from napari_vesuvius.widgets.train_widget import TrainWidget

    viewer, widget, _, _ = scene
    train = TrainWidget(viewer, persist=False)
    assert type(train.follower) is TrainingFollower and type(widget.retrain.follower) is TrainingFollower
    assert not hasattr(widget.retrain, "poll_interval") and train.timer is train.follower.timer
    assert not train.form.schedule_section.expanded and not train.form.run_section.expanded
    assert not train.log_section.expanded and not widget.retrain.details.expanded
    assert train.start_button in train.primary_controls() and train.status in train.primary_controls()
    assert widget.retrain.retrain_button in widget.retrain.primary_controls()


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals for the training process")
def test_retrain_compares_old_and_new_on_a_held_out_labelled_volume(scene, tmp_path, qtbot):
    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.training.monitor import RunSummary, read_metrics, status_line

    viewer, widget, made_it, _ = scene
    args = ["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", str(made_it)]
    args.append("--overwrite")
    assert main(args) == 0  # the model that made the prediction, now a real one
    widget.accept()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    layer = viewer.layers["0 proofread"]
    layer.paint(tuple(np.argwhere(layer.data == 0)[0]), 1)
    retrain = widget.retrain
    retrain.refresh_model()
    assert retrain.model_path() == made_it
    retrain.runs_folder.value = tmp_path / "runs"
    retrain.epochs.value, retrain.iterations.value, retrain.batch_size.value = 2, 2, 1
    retrain.device.value, retrain.threads.value = "cpu", 1
    retrain.retrain()  # saves the edit first, then fine-tunes made_it.pt
    qtbot.waitUntil(lambda: "0 probability fine-tuned" in viewer.layers, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not retrain.task.running, timeout=TIMEOUT_MS)
    summary, lines = RunSummary(), []  # what the status showed (or would have, between two polls)
    for record in read_metrics(retrain.run_dir):
        lines.append(status_line(summary.update([record])))
    epochs = {line.split(" · ")[0] for line in lines if line.startswith("epoch ")}
    assert epochs == {"epoch 1/2", "epoch 2/2"}  # counted from 1, as in the Train dock
    assert "epoch 2/2 · validating… (iteration 4/4)" in lines
    config = json.loads((retrain.run_dir / "config.json").read_text())
    assert config["init"] == str(made_it.resolve())
    comparison = retrain.comparison
    assert comparison.fair and [v.id for v in comparison.volumes] == ["1"]  # never the trained-on "0"
    assert len(retrain.scores.value["data"]) == 2 and retrain.status.value.startswith("held-out score: old")
    assert retrain.comparison_section.expanded
    assert Path(retrain.model.value).name == "checkpoint_best.pt"  # the next round starts from it
    assert "fine-tuned in this session" in retrain.model_note.value
    new = viewer.layers["0 probability fine-tuned"]
    assert new.metadata["models"][0]["path"].endswith("checkpoint_best.pt")
