"""Viewer tests for the Train widget: a tiny training subprocess followed live, cancelled, resumed and
killed; training on open layers; re-attaching; a failing run; and the Qt-free helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.errors import DatasetError
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.training import rundir
from napari_vesuvius.core.training.monitor import read_metrics
from napari_vesuvius.widgets._train_run import pair_paths, save_pairs_job

#: generous: the machine is shared and the subprocess has to import torch
TIMEOUT_MS = 240_000


@pytest.fixture
def train(make_napari_viewer):
    from napari_vesuvius.widgets.train_widget import TrainWidget

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.form.model_preset.value = "tiny"
    widget.form.patch_z.value = widget.form.patch_y.value = widget.form.patch_x.value = 16
    widget.form.batch_size.value = 1
    widget.form.device.value = "cpu"
    widget.form.threads.value = 1
    yield viewer, widget
    process = widget.process
    if process is not None and process.running:  # never leave a training behind
        process.kill()
        if hasattr(process, "wait"):
            process.wait(30)
    widget.timer.stop()


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_start_follow_cancel_and_use_the_model(train, tmp_path, qtbot):
    from napari_vesuvius.core.synthetic import write_challenge_dataset
    from napari_vesuvius.widgets.inference_widget import InferenceWidget

    viewer, widget = train
    write_challenge_dataset(tmp_path / "ds", n_train=2, n_test=0, shape=(32, 32, 32), seed=3)
    inference = InferenceWidget(viewer, persist=False)
    viewer.window.add_dock_widget(inference, name="Inference")
    run_dir = tmp_path / "run"
    widget.form.data_folder.value = tmp_path / "ds"
    widget.form.epochs.value = 2000  # far more than the test waits for: still running when cancelled
    widget.form.iterations_per_epoch.value = 3
    assert widget.form.total_label.value.startswith("6,000 iterations")
    widget.form.run_dir.value = run_dir
    assert not widget.use_model_button.enabled
    widget.start()
    assert widget.running and widget.timer.isActive()
    assert not widget.start_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(
        lambda: widget.plot.point_count("train_loss") >= 2 or not widget.running, timeout=TIMEOUT_MS
    )
    assert widget.running, widget.log.value + widget.process.log_tail()
    assert widget.progress_bar.value > 0
    status = widget.status.value  # training (with an ETA) or validating an epoch
    assert status.startswith("epoch ") and ("ETA" in status or "validating…" in status), status
    assert widget.plot.point_count("val_loss") >= 2 and widget.plot.point_count("pseudo_dice") >= 2
    assert widget.use_model_button.enabled  # a best checkpoint exists after the first epoch
    if os.environ.get("TRAIN_WIDGET_SCREENSHOT"):
        viewer.window.screenshot(os.environ["TRAIN_WIDGET_SCREENSHOT"], canvas_only=False)

    widget.cancel()
    assert widget.cancelling and widget.status.value.startswith("cancelling")
    assert widget.cancel_button.text == "Kill now"
    qtbot.waitUntil(lambda: widget.process is None, timeout=TIMEOUT_MS)
    events = [record["event"] for record in read_metrics(run_dir)]
    assert events[0] == "started" and events[-1] == "cancelled"
    assert "epoch_end" in events and "progress" in events
    assert (run_dir / rundir.CHECKPOINT_LAST).is_file() and (run_dir / rundir.TRAIN_STATE).is_file()
    assert "cancelled" in widget.status.value and widget.outcome == "cancelled"
    assert widget.resume_button.enabled and widget.start_button.enabled and not widget.cancel_button.enabled

    assert widget.use_model() is inference
    assert Path(inference.models.model.value) == run_dir / rundir.CHECKPOINT_BEST

    widget.start()  # the folder holds a run: Start refuses, Resume is the way on
    assert widget.process is None and "Resume" in widget.status.value

    widget.resume()
    assert widget.running
    qtbot.waitUntil(
        lambda: widget.watcher.summary.state == "running" or not widget.running, timeout=TIMEOUT_MS
    )
    started = [r for r in read_metrics(run_dir) if r["event"] == "started"]
    assert len(started) == 2 and started[1]["resumed"] is True and started[1]["epoch"] >= 2
    widget.cancel()
    widget.cancel()  # "Kill now": the run keeps its last saved state
    qtbot.waitUntil(lambda: widget.process is None, timeout=TIMEOUT_MS)
    assert widget.outcome in ("killed", "cancelled")
    assert widget.resume_button.enabled


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_reattaches_to_a_run_started_by_an_earlier_session(train, tmp_path, qtbot):
    import subprocess
    import sys

    _, widget = train
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.CONFIG_JSON).write_text("{}")
    # stands in for a training process left running when napari was closed: it records itself in
    # train.pid as the train CLI does (pid, start time, command line)
    code = (
        "import sys, time; from napari_vesuvius.core.training.process import write_pid_file; "
        "write_pid_file(sys.argv[1]); time.sleep(120)"
    )
    sleeper = subprocess.Popen([sys.executable, "-c", code, str(run_dir)])
    try:
        qtbot.waitUntil(lambda: (run_dir / rundir.PID_FILE).exists(), timeout=60_000)
        widget.form.run_dir.value = run_dir
        assert widget.running and widget.process.pid == sleeper.pid
        assert "already running" in widget.status.value and widget.cancel_button.enabled
        widget.cancel()  # SIGTERM to a process this session did not start
        qtbot.waitUntil(lambda: sleeper.poll() is not None, timeout=30_000)
        (run_dir / rundir.PID_FILE).unlink()  # as the CLI does on exit
        qtbot.waitUntil(lambda: widget.process is None, timeout=30_000)
        assert sleeper.returncode == -15 and widget.outcome == "stopped"
        assert widget.start_button.enabled and not widget.cancel_button.enabled
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
@pytest.mark.parametrize("stale", ["reused_pid", "old_format"])
def test_never_signals_an_unrelated_process_named_by_a_stale_pid_file(train, tmp_path, qtbot, stale):
    import subprocess
    import sys

    from napari_vesuvius.core.training.process import process_identity

    _, widget = train
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rundir.CONFIG_JSON).write_text("{}")
    # an unrelated process that got the pid of a training killed with SIGKILL (its train.pid stayed)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        if stale == "reused_pid":
            identity = process_identity(sleeper.pid)
            assert identity is not None
            # same pid and command line, another start time: the recorded process is gone
            record = {"pid": sleeper.pid, "start": "0", "command": identity["command"]}
            (run_dir / rundir.PID_FILE).write_text(json.dumps(record))
        else:  # a bare pid, as written before start times were recorded: cannot be verified
            (run_dir / rundir.PID_FILE).write_text(f"{sleeper.pid}\n")
        widget.form.run_dir.value = run_dir
        assert not widget.running and widget.process is None
        assert "already running" not in widget.status.value and not widget.cancel_button.enabled
        assert not (run_dir / rundir.PID_FILE).exists()  # the stale file is removed
        widget.cancel()
        assert sleeper.poll() is None  # not signalled
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_train_on_open_layers_saves_them_into_the_run_folder(train, tmp_path, qtbot):
    import tifffile

    from napari_vesuvius.core.synthetic import make_fragment

    viewer, widget = train
    fragment = make_fragment((24, 32, 32), seed=5)
    viewer.add_image(fragment.image, name="ct fragment")
    viewer.add_labels(fragment.labels.astype(np.int32), name="ct labels")
    widget.form.data_source.value = "open layers"
    assert not widget.form.image.native.isHidden() and widget.form.data_folder.native.isHidden()
    widget.form.image.value = viewer.layers["ct fragment"]
    widget.form.labels_layer.value = viewer.layers["ct labels"]
    widget.form.epochs.value = 1
    widget.form.iterations_per_epoch.value = 2
    run_dir = tmp_path / "layers run"
    widget.form.run_dir.value = run_dir
    widget.start()
    qtbot.waitUntil(lambda: widget.running or "failed" in widget.log.value, timeout=60_000)
    qtbot.waitUntil(lambda: widget.process is None, timeout=TIMEOUT_MS)
    assert widget.outcome == "finished" and widget.watcher.summary.state == "finished", widget.log.value
    image_path = run_dir / "data" / "train_images" / "ct_fragment.tif"
    label_path = run_dir / "data" / "train_labels" / "ct_fragment.tif"
    np.testing.assert_array_equal(tifffile.imread(image_path), fragment.image)
    np.testing.assert_array_equal(tifffile.imread(label_path), fragment.labels)
    config = json.loads((run_dir / rundir.CONFIG_JSON).read_text())
    assert config["pairs"] == [[str(image_path), str(label_path)]] and config["data"] == []
    assert config["epochs"] == 1 and config["iterations_per_epoch"] == 2
    assert widget.plot.point_count("train_loss") == 1
    from napari_vesuvius.core.postprocess import PostprocessConfig

    assert widget._clean_up_note() == ""  # one volume: nothing held out, so no clean-up was chosen
    PostprocessConfig(t_low=0.6, closing_z=0, closing_xy=0).save(run_dir / "postprocess.json")
    assert widget._clean_up_note() == "; its clean-up: T low 0.6, closing z0/xy0"
    assert widget.progress_bar.value == 1000 and widget.status.value.startswith("finished")
    assert not widget.resume_button.enabled  # a finished run has nothing to resume


def test_bad_settings_are_reported_without_starting(train, tmp_path):
    _, widget = train
    widget.start()  # an empty run folder means a new one in the runs folder: the data is checked first
    assert "choose a dataset folder" in widget.status.value
    assert widget.form.run_folder() is None  # no folder was made for a run that could not start
    widget.resume()
    assert "choose the run folder to resume" in widget.status.value
    widget.form.run_dir.value = tmp_path / "run"
    widget.start()
    assert "choose a dataset folder" in widget.status.value
    widget.form.data_folder.value = tmp_path
    widget.form.lr.value = "fast"
    widget.start()
    assert "learning rate must be a number" in widget.status.value
    widget.form.data_source.value = "open layers"
    widget.start()
    assert "choose an image and a labels layer" in widget.status.value
    assert widget.process is None and not (tmp_path / "run" / "data").exists()


def test_save_pairs_rejects_bad_labels_and_shapes(tmp_path):
    image = np.zeros((8, 8, 8), np.uint8)
    targets = pair_paths(tmp_path, ["a"])
    bad = np.zeros((8, 8, 8), np.int32)
    bad[0, 0, 0] = 5
    with pytest.raises(DatasetError, match=r"'lab'.*found values from 0 to 5"):
        run_job(save_pairs_job([("a", image, "lab", bad)], targets))
    with pytest.raises(DatasetError, match="'lab': shape"):
        run_job(save_pairs_job([("a", image, "lab", np.zeros((8, 8, 4), np.uint8))], targets))
    assert not targets[0][0].exists()


def test_pair_paths_are_safe_and_unique(tmp_path):
    paths = pair_paths(tmp_path, ["my scan/1", "my scan/1", ".."])
    names = [image.name for image, _ in paths]
    assert names == ["my_scan_1.tif", "my_scan_1_2.tif", "volume.tif"]
    assert all(label.parent.name == "train_labels" and label.name == image.name for image, label in paths)


@pytest.mark.slow
def test_a_failing_run_shows_the_error_and_its_log(train, tmp_path, qtbot):
    _, widget = train
    (tmp_path / "empty").mkdir()
    widget.form.data_folder.value = tmp_path / "empty"  # not training data: the process fails at setup
    widget.form.epochs.value = widget.form.iterations_per_epoch.value = 1
    widget.form.run_dir.value = tmp_path / "run"
    widget.start()
    qtbot.waitUntil(lambda: widget.process is None, timeout=TIMEOUT_MS)
    assert widget.outcome == "error"
    assert (
        "training failed (exit code 1)" in widget.status.value and "not training data" in widget.status.value
    )
    assert "error: " in widget.log.value  # the tail of train.log
