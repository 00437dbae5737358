"""``napari-vesuvius train`` as the widget runs it: a subprocess, SIGTERM to cancel, then resume."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.synthetic import write_training_folder
from napari_vesuvius.core.training import rundir
from napari_vesuvius.core.training.config import TrainConfig, load_config
from napari_vesuvius.core.training.monitor import RunWatcher, read_metrics
from napari_vesuvius.core.training.process import EXIT_CANCELLED, TrainingProcess, running_pid


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(tmp_path_factory.mktemp("training_cli") / "ds", (32, 32, 32))


def test_a_new_run_needs_epochs_and_iterations(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["train", "--data", str(dataset), "--run-dir", str(tmp_path / "run"), "--epochs", "2"])
    assert code == 1
    assert "--iterations-per-epoch" in capsys.readouterr().err
    assert not (tmp_path / "run" / rundir.CONFIG_JSON).exists()


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigterm_saves_and_resume_finishes_with_the_exact_epoch_count(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = TrainConfig(
        epochs=10_000,  # cannot end on its own while the test waits: it runs until cancelled
        iterations_per_epoch=10,
        patch_size=(16, 16, 16),
        batch_size=1,
        data=(str(dataset),),
        model_preset="tiny",
        val_patches=2,
        torch_threads=1,
    )
    process = TrainingProcess.start(config, run_dir)
    watcher = RunWatcher(run_dir)
    deadline = time.monotonic() + 240
    while watcher.summary.iteration < 1 and process.running and time.monotonic() < deadline:
        time.sleep(0.1)
        watcher.poll()
    assert process.running, process.log_tail()
    assert running_pid(run_dir) == process.pid
    process.cancel()
    assert process.wait(240) == EXIT_CANCELLED, process.log_tail()
    assert process.outcome() == "cancelled"
    watcher.poll()
    assert watcher.summary.state == "cancelled"
    stopped_at = watcher.summary.iteration
    assert stopped_at >= 1
    assert running_pid(run_dir) is None and not (run_dir / rundir.PID_FILE).exists()
    # finish after the epoch following the cancel (a shorter run: accepted with force)
    epochs = stopped_at // 10 + 2
    shorter = TrainConfig.from_dict({**load_config(run_dir / rundir.CONFIG_JSON).to_dict(), "epochs": epochs})
    resumed = TrainingProcess.start(shorter, run_dir, resume=True, force=True)
    assert resumed.wait(400) == 0, resumed.log_tail()
    ends = [r for r in read_metrics(run_dir) if r["event"] == "epoch_end"]
    assert [(r["epoch"], r["iteration"]) for r in ends] == [(e, 10 * e) for e in range(1, epochs + 1)]
    started = [r for r in read_metrics(run_dir) if r["event"] == "started"]
    assert [r["resumed"] for r in started] == [False, True] and started[1]["iteration"] == stopped_at
    assert (run_dir / rundir.CHECKPOINT_BEST).is_file()
    assert f"done: {epochs} epoch(s), {10 * epochs} iterations" in resumed.log_tail()
