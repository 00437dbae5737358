"""The end of a training run: each checkpoint's clean-up chosen on the held-out volumes and stored."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")

from napari_vesuvius.core.inference.checkpoint import read_checkpoint_info
from napari_vesuvius.core.inference.loading import load_model
from napari_vesuvius.core.postprocess import PostprocessConfig
from napari_vesuvius.core.postprocess.choice import METADATA_KEY, model_postprocess
from napari_vesuvius.core.progress import run_job
from napari_vesuvius.core.synthetic import write_training_folder
from napari_vesuvius.core.training import rundir
from napari_vesuvius.core.training.config import TrainConfig
from napari_vesuvius.core.training.monitor import RunSummary, read_metrics
from napari_vesuvius.core.training.postprocess_step import (
    POSTPROCESS_JSON,
    iter_choose_run_postprocess,
)
from napari_vesuvius.core.training.runner import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(tmp_path_factory.mktemp("training") / "ds", (40, 40, 40), seeds=(0, 1, 2))


def _config(dataset: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        epochs=2, iterations_per_epoch=2, patch_size=(16, 16, 16), batch_size=1, data=(str(dataset),),
        model_preset="tiny", val_patches=2, torch_threads=1, val_ids=("2",),
    )  # fmt: skip
    return replace(base, **changes)


def _stored(path: Path) -> dict | None:
    return read_checkpoint_info(path).metadata.get(METADATA_KEY)


def test_the_run_stores_its_clean_up_with_both_checkpoints(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_job(train(_config(dataset), run_dir))
    assert set(result.postprocess) == {rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST}
    choice = result.postprocess[rundir.CHECKPOINT_BEST]
    assert choice.volumes == ("2",) and choice.score >= choice.base_score
    assert PostprocessConfig.load(run_dir / POSTPROCESS_JSON) == choice.config
    model = load_model(run_dir / rundir.CHECKPOINT_BEST)
    assert model_postprocess([model])[0] == choice.config
    records = read_metrics(run_dir)
    events = [r for r in records if r["event"] == "postprocess"]
    assert events[0]["message"] == "choosing the clean-up on 1 validation volume(s)"
    assert [e["checkpoint"] for e in events[1:]] == [rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST]
    assert events[1]["config"] == choice.config.to_dict() and events[1]["seconds"] > 0
    # the Train widget's log shows what was chosen while the process finishes
    line = RunSummary.from_records(records[:-1]).message
    assert line.startswith("checkpoint_last.pt: clean-up T low") and "built-in defaults" in line


def test_no_choice_without_held_out_volumes_or_when_switched_off(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "off"
    result = run_job(train(_config(dataset, epochs=1, choose_postprocess=False), run_dir))
    assert result.postprocess == {} and not (run_dir / POSTPROCESS_JSON).exists()
    assert _stored(run_dir / rundir.CHECKPOINT_BEST) is None
    assert "postprocess" not in [r["event"] for r in read_metrics(run_dir)]
    said: list[str] = []
    job = iter_choose_run_postprocess(run_dir, [], device="cpu", batch_size=1, max_volumes=2, say=said.append)
    assert run_job(job) == {} and "no held-out validation volume" in said[0]
    assert _stored(run_dir / rundir.CHECKPOINT_BEST) is None


def test_cancel_while_choosing_keeps_checkpoints_and_resume_chooses(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    job = train(_config(dataset, epochs=1), run_dir)
    for report in job:
        if "choosing the clean-up" in report.message:
            job.close()
            break
    assert read_metrics(run_dir)[-1]["event"] == "cancelled"
    assert _stored(run_dir / rundir.CHECKPOINT_BEST) is None
    result = run_job(train(None, run_dir, resume=True))
    assert result.iterations_done == 2 and rundir.CHECKPOINT_BEST in result.postprocess
    assert _stored(run_dir / rundir.CHECKPOINT_BEST) is not None
    assert read_metrics(run_dir)[-1]["event"] == "finished"


@pytest.mark.slow
def test_cli_chooses_for_a_run_folder_or_any_model(dataset: Path, tmp_path: Path, capsys) -> None:
    from napari_vesuvius.cli.main import main

    run_dir = tmp_path / "run"
    run_job(train(_config(dataset, epochs=1, choose_postprocess=False), run_dir))
    assert main(["choose-postprocess", "--run-dir", str(run_dir), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "closing \\ T_low" in printed and "z0/xy0" in printed and "validation volume(s) (2)" in printed
    assert _stored(run_dir / rundir.CHECKPOINT_BEST) is not None and (run_dir / POSTPROCESS_JSON).exists()

    model = run_dir / rundir.CHECKPOINT_LAST
    out = tmp_path / "chosen.json"
    argv = ["choose-postprocess", "--model", str(model), "--data", str(dataset), "--quiet"]
    assert main([*argv, "--ids", "2", "--out", str(out), "--store", "--device", "cpu"]) == 0
    assert PostprocessConfig.load(out).to_dict() == _stored(model)["config"]
    assert main(argv) == 2 and "--model needs --data and --ids" in capsys.readouterr().err
    assert main([*argv, "--ids", "7"]) == 1 and "no labelled volume with id(s) 7" in capsys.readouterr().err
    assert main(["choose-postprocess", "--quiet"]) == 2
