"""The wall-clock limit of a run (``max_minutes``): stop, save, schedule, resume, CLI and monitor.

The run's clock is replaced by one that advances 10 s per iteration, so the tests are exact and fast.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from napari_vesuvius.cli.main import main  # noqa: E402
from napari_vesuvius.core.inference.loading import load_model  # noqa: E402
from napari_vesuvius.core.progress import run_job  # noqa: E402
from napari_vesuvius.core.synthetic import write_training_folder  # noqa: E402
from napari_vesuvius.core.training import rundir  # noqa: E402
from napari_vesuvius.core.training._trainer import Trainer  # noqa: E402
from napari_vesuvius.core.training.config import TrainConfig, TrainConfigError, load_config  # noqa: E402
from napari_vesuvius.core.training.monitor import RunSummary, read_metrics  # noqa: E402
from napari_vesuvius.core.training.runner import train  # noqa: E402

SECONDS_PER_ITERATION = 10.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(tmp_path_factory.mktemp("time_limit") / "ds", (32, 32, 32))


@pytest.fixture
def iteration_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's elapsed time is 10 s per iteration done (deterministic, no real waiting)."""
    monkeypatch.setattr(Trainer, "elapsed", lambda self: SECONDS_PER_ITERATION * self.iteration)


def _config(dataset: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        epochs=2, iterations_per_epoch=2, patch_size=(16, 16, 16), batch_size=1, data=(str(dataset),),
        model_preset="tiny", val_patches=1, torch_threads=1,
    )  # fmt: skip
    return replace(base, **changes)


def test_max_minutes_is_validated_and_off_by_default(dataset: Path) -> None:
    assert _config(dataset).max_minutes == 0.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(TrainConfigError, match="max_minutes"):
            _config(dataset, max_minutes=bad)


@pytest.mark.slow
def test_run_stops_at_the_limit_saves_and_resumes_with_a_higher_limit(
    dataset: Path, tmp_path: Path, iteration_clock: None
) -> None:
    run_dir = tmp_path / "run"
    config = _config(dataset, max_minutes=0.5)  # 30 s = 3 iterations of the fake clock, of 4 configured
    result = run_job(train(config, run_dir))
    assert result.stopped_by_time and not result.stopped_early
    assert (result.iterations_done, result.epochs_done) == (3, 1)
    records = read_metrics(run_dir)
    finished = records[-1]
    assert finished["event"] == "finished" and finished["reason"] == "time_limit"
    assert finished["stopped"] == "time limit" and finished["iteration"] == 3
    assert RunSummary.from_records(records).message.startswith("stopped: time limit")
    last = load_model(run_dir / rundir.CHECKPOINT_LAST)
    assert last.metadata["iteration"] == 3  # the weights at the stop, not those of the last epoch end
    assert rundir.load_train_state(run_dir / rundir.TRAIN_STATE)["iteration"] == 3

    with pytest.raises(TrainConfigError, match="time limit"):
        run_job(train(config, run_dir, resume=True))
    resumed = run_job(train(replace(config, max_minutes=0.0), run_dir, resume=True))  # no force needed
    assert not resumed.stopped_by_time
    assert (resumed.iterations_done, resumed.epochs_done) == (4, 2)  # the epoch count stays exact
    assert load_config(run_dir / rundir.CONFIG_JSON).max_minutes == 0.0


@pytest.mark.slow
def test_learning_rate_decays_to_the_time_limit(dataset: Path, tmp_path: Path, iteration_clock: None) -> None:
    config = _config(dataset, epochs=10, max_minutes=1.0)  # 60 s = 6 iterations of 20
    result = run_job(train(config, tmp_path / "run"))
    assert result.iterations_done == 6 and result.stopped_by_time
    ends = [r for r in read_metrics(tmp_path / "run") if r["event"] == "epoch_end"]
    lr0 = config.resolved().lr
    for record in ends:  # the lr logged at an epoch end is that of its last step (iteration i - 1)
        step = record["iteration"] - 1
        progress = max(step / 20, step * SECONDS_PER_ITERATION / 60)
        assert record["lr"] == pytest.approx(lr0 * (1 - progress) ** config.poly_exponent)
    without_limit = _config(dataset, epochs=10)
    run_job(train(without_limit, tmp_path / "plain"))
    plain = [r for r in read_metrics(tmp_path / "plain") if r["event"] == "epoch_end"]
    assert plain[0]["lr"] == pytest.approx(lr0 * (1 - 1 / 20) ** config.poly_exponent)


def test_monitor_caps_the_eta_at_the_time_left() -> None:
    records = [
        {"event": "started", "epochs": 100, "iterations_per_epoch": 10, "epoch": 0, "iteration": 0,
         "max_minutes": 1.0},
        {"event": "progress", "iteration": 10, "iterations": 1000, "elapsed": 10.0},
        {"event": "progress", "iteration": 20, "iterations": 1000, "elapsed": 20.0},
    ]  # fmt: skip
    summary = RunSummary.from_records(records)
    assert summary.time_limit_s == 60.0 and summary.eta_s == pytest.approx(40.0)
    records[0] = {**records[0], "max_minutes": 0.0}
    assert RunSummary.from_records(records).eta_s == pytest.approx(980.0)


def test_cli_max_minutes_reaches_the_config_and_stops_the_run(
    dataset: Path, tmp_path: Path, iteration_clock: None, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(dataset), "--run-dir", str(run_dir), "--epochs", "50"]
    args += ["--iterations-per-epoch", "2", "--patch-size", "16", "16", "16", "--batch-size", "1"]
    args += ["--model-preset", "tiny", "--val-patches", "1", "--threads", "1", "--max-minutes", "0.25"]
    assert main(args) == 0
    assert "stopped: time limit" in capsys.readouterr().err
    assert load_config(run_dir / rundir.CONFIG_JSON).max_minutes == 0.25
    finished = read_metrics(run_dir)[-1]
    assert finished["reason"] == "time_limit" and finished["iteration"] == 2  # 15 s at 10 s per iteration


def test_train_form_time_limit_reaches_the_config(make_napari_viewer, dataset: Path) -> None:
    from napari_vesuvius.widgets._train_form import SETTING_NAMES, TrainForm

    form = TrainForm(make_napari_viewer())
    assert "max_minutes" in SETTING_NAMES  # remembered between sessions like the other settings
    form.data_folder.value = dataset
    assert form.build_config().max_minutes == 0.0
    form.max_minutes.value = 12.5
    assert form.build_config().max_minutes == 12.5
