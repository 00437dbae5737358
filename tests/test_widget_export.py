"""Viewer tests for the Export widget: config from a docked Tune widget, summary table, cancel, errors,
the test-set check and the question before replacing a submission.zip that holds other ids."""

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
    qtbot.waitUntil(lambda: widget.phase == "export" and widget.task.reports > 0, timeout=120000)
    widget.task.cancel()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert widget.message.value.startswith("cancelled;")
    assert widget.summary.to_dict("list")["id"] == []
    assert list(folder.iterdir()) == []  # no zip, no temporary file


def _earlier_zip(path: Path, ids) -> bytes:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for vid in ids:
            archive.writestr(f"{vid}.tif", b"an earlier submission")
    return path.read_bytes()


def _run(widget, qtbot) -> None:
    assert widget.run() is not None, widget.message.value
    qtbot.waitUntil(lambda: not widget.task.running, timeout=180000)


def _never_asked(text: str) -> bool:
    raise AssertionError(f"asked: {text}")


def test_a_folder_of_outputs_is_refused_and_the_old_zip_kept(widgets, qtbot, tmp_path_factory):
    import numpy as np

    from napari_vesuvius.core.synthetic import write_volume_tif

    _, _, widget, folder = widgets
    outputs = tmp_path_factory.mktemp("outputs")
    write_volume_tif(outputs / "frag160_prob.tif", np.zeros(SHAPE, np.float32))
    before = _earlier_zip(folder / "submission.zip", ["1", "2"])
    widget.data.value, widget.confirm = outputs, _never_asked
    _run(widget, qtbot)
    message = widget.message.value
    assert message.startswith(f"Submission not written — {outputs}: holds files that are not test CT images")
    assert "frag160_prob.tif" in message and "expected a challenge dataset folder (test.csv" in message
    assert widget.last_summary is None and widget.phase is None
    assert (folder / "submission.zip").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["submission.zip"]


def test_a_zip_with_other_ids_is_replaced_only_when_the_user_says_yes(widgets, qtbot):
    from napari_vesuvius.core.export import read_submission

    layout, _, widget, folder = widgets
    out = folder / "submission.zip"
    before = _earlier_zip(out, ["old_1", "old_2"])
    questions: list[str] = []
    widget.confirm = lambda text: questions.append(text) or False  # answer no
    _run(widget, qtbot)
    assert len(questions) == 1 and f"{out} holds 2 id(s), this run writes 2" in questions[0]
    assert "not in this test set (old_1, old_2)" in questions[0]
    assert widget.message.value == f"not exported: {out} was kept as it was"
    assert widget.last_summary is None and out.read_bytes() == before
    widget.confirm = lambda text: questions.append(text) or True  # answer yes
    _run(widget, qtbot)
    assert len(questions) == 2 and widget.last_summary is not None
    assert sorted(read_submission(out)) == sorted(str(vid) for vid in layout.test_ids)


def test_a_zip_with_the_same_ids_is_replaced_without_asking(widgets, qtbot):
    from napari_vesuvius.core.export import read_submission

    layout, _, widget, folder = widgets
    out = folder / "submission.zip"
    _earlier_zip(out, layout.test_ids)
    inode = out.stat().st_ino
    widget.confirm = _never_asked
    _run(widget, qtbot)
    assert widget.last_summary is not None, widget.message.value
    assert out.stat().st_ino != inode  # a new file renamed into place (atomic), not written over
    assert sorted(read_submission(out)) == sorted(str(vid) for vid in layout.test_ids)


def test_cancel_after_saying_yes_keeps_the_old_zip(widgets, qtbot):
    _, _, widget, folder = widgets
    out = folder / "submission.zip"
    before = _earlier_zip(out, ["old"])
    widget.confirm = lambda text: True
    widget.step.value, widget.batch_size.value = 0.25, 1
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.phase == "export" and widget.task.reports > 0, timeout=120000)
    widget.task.cancel()
    qtbot.waitUntil(lambda: not widget.task.running, timeout=120000)
    assert widget.message.value == f"cancelled; {out} was not changed"
    assert out.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["submission.zip"]  # no temporary file left


def test_output_onto_an_input_is_refused_before_any_work(widgets, tmp_path):
    _, _, widget, _ = widgets
    widget.output.value = widget.models.model.value  # the model file itself
    assert widget.run() is None
    assert "must end in .zip" in widget.message.value
    zipped_model = tmp_path / "model.zip"
    zipped_model.write_bytes(b"a model")
    widget.models.model.value = zipped_model
    widget.output.value = zipped_model
    assert widget.run() is None and "refusing to write over it" in widget.message.value
    assert zipped_model.read_bytes() == b"a model" and not widget.task.running


def test_primary_controls_come_first_and_options_collapse(widgets, qtbot):
    _, _, widget, _ = widgets
    controls = widget.primary_controls()
    assert [c.label for c in controls[:3]] == ["test data", "model", "output"]
    assert controls[3] is widget.run_button and widget.task in controls and widget.message in controls
    assert all(control.native.isVisibleTo(widget.native) for control in controls)  # none hidden or collapsed
    sections = (widget.ensemble_section, widget.window_section, widget.postprocess_section)
    assert not any(section.expanded for section in sections)
    assert widget.postprocess_section.header.text.endswith("Post-processing: Tune widget")
    widget.config_source.value = "JSON file"
    assert widget.postprocess_section.header.text.endswith("Post-processing: JSON file")


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
