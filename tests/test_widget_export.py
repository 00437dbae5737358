"""Viewer tests for the Export widget: config from a docked Tune widget, summary table, cancel, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHAPE = (32, 36, 36)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset
    from napari_vesuvius.core.synthetic import write_challenge_dataset

    root = tmp_path_factory.mktemp("export_widget")
    layout = write_challenge_dataset(root / "data", n_train=0, n_test=2, shape=SHAPE, seed=9)
    torch.manual_seed(0)
    config = preset("tiny", features_base=4, features_max=16)
    model = save_checkpoint(root / "tiny.pt", build_unet(config), config, Normalization(), (32, 32, 32))
    return layout, model


@pytest.fixture
def widgets(make_napari_viewer, setup, tmp_path):
    from napari_vesuvius.widgets.export_widget import ExportWidget
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    layout, model = setup
    viewer = make_napari_viewer()
    tune = TuneWidget(viewer, persist=False)
    viewer.window.add_dock_widget(tune, name="Tune")
    tune.t_low.value, tune.t_high.value, tune.dust_size.value = 0.45, 0.6, 5
    widget = ExportWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Export")
    widget.data.value = layout.root
    widget.models.model.value = model
    widget.output.value = tmp_path / "submission.zip"
    widget.device.value, widget.precision.value, widget.batch_size.value = "cpu", "fp32", 4
    return layout, tune, widget, tmp_path


def test_run_uses_the_tune_config_and_fills_the_summary_table(widgets, qtbot):
    from napari_vesuvius.core.export import read_submission

    layout, tune, widget, folder = widgets
    assert widget.config_source.value == "Tune widget"  # a docked Tune widget is found
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=180000)
    ids = sorted(str(vid) for vid in layout.test_ids)  # test.csv order: numeric
    table = widget.summary.to_dict("list")
    assert table["id"] == ids and table["shape"] == ["32x36x36"] * 2
    assert all(value.endswith("%") for value in table["positive"])
    assert all(float(value) >= 0 for value in table["seconds"])
    assert widget.message.value.startswith(f"wrote {folder / 'submission.zip'}: 2 volume(s)")
    assert widget.last_summary.settings["postprocess"] == tune.config().to_dict()
    assert widget.last_summary.settings["postprocess"]["t_low"] == 0.45
    assert sorted(read_submission(folder / "submission.zip")) == sorted(ids)


def test_cancel_leaves_no_zip(widgets, qtbot):
    _, _, widget, folder = widgets
    widget.step.value, widget.batch_size.value = 0.25, 1  # many small batches: still running at cancel
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.task.reports > 0, timeout=120000)
    widget.task.cancel()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert widget.message.value.startswith("cancelled;")
    assert widget.summary.to_dict("list")["id"] == []
    assert list(folder.iterdir()) == []  # no zip, no temporary file


def test_validation_problem_is_shown_in_plain_words(widgets, qtbot, tmp_path_factory):
    layout, _, widget, folder = widgets
    broken = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(layout.root, broken)
    gone = layout.test_ids[1]
    (broken / "test_images" / f"{gone}.tif").unlink()
    widget.data.value = broken
    (folder / "submission.zip").write_bytes(b"earlier")
    from napari_vesuvius.core.export import SubmissionError

    # TaskRunner reports a job's error once (its errored handler), without re-raising it on the GUI thread
    with qtbot.capture_exceptions() as raised:
        assert widget.run() is not None
        qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert raised == []
    assert isinstance(widget.task.last_error, SubmissionError)
    assert widget.message.value.startswith("Submission not written — id ")
    assert f"id {gone}: test image" in widget.message.value and "is missing" in widget.message.value
    assert (folder / "submission.zip").read_bytes() == b"earlier"


def test_bad_inputs_are_reported_without_starting(make_napari_viewer, setup, tmp_path):
    from napari_vesuvius.widgets.export_widget import ExportWidget

    layout, model = setup
    viewer = make_napari_viewer()
    widget = ExportWidget(viewer, persist=False)  # no Tune widget docked
    assert widget.config_source.value == "model's own or defaults"
    widget.config_source.value = "Tune widget"
    widget.data.value, widget.models.model.value = layout.root, model
    assert widget.run() is None and "no Tune widget is docked" in widget.message.value
    widget.config_source.value = "JSON file"
    widget.config_file.value = Path(tmp_path / "nope.json")
    assert widget.run() is None and "config file not found" in widget.message.value
    widget.models.model.value = tmp_path / "missing.pt"
    assert widget.run() is None and "model not found" in widget.message.value
    widget.add_member()
    assert widget.models.members == []
