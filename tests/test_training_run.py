"""The training job and its run folder: exact counts, cancel + resume, errors, fine-tuning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_vesuvius.core.errors import CheckpointError  # noqa: E402
from napari_vesuvius.core.inference.engine import predict  # noqa: E402
from napari_vesuvius.core.inference.loading import load_model  # noqa: E402
from napari_vesuvius.core.progress import run_job  # noqa: E402
from napari_vesuvius.core.synthetic import make_fragment, write_training_folder  # noqa: E402
from napari_vesuvius.core.training import rundir  # noqa: E402
from napari_vesuvius.core.training.config import TrainConfig, TrainConfigError, load_config  # noqa: E402
from napari_vesuvius.core.training.monitor import RunSummary, read_metrics  # noqa: E402
from napari_vesuvius.core.training.runner import train  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(tmp_path_factory.mktemp("training") / "ds", (40, 40, 40))


def _config(dataset: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        epochs=2,
        iterations_per_epoch=2,
        patch_size=(16, 16, 16),
        batch_size=1,
        data=(str(dataset),),
        model_preset="tiny",
        val_patches=2,
        torch_threads=1,
    )
    return replace(base, **changes)


def _epoch_ends(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir) if r["event"] == "epoch_end"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_run_has_exact_counts_and_a_best_checkpoint_the_engine_loads(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_job(train(_config(dataset), run_dir))
    assert (result.epochs_done, result.iterations_done) == (2, 4)
    records = read_metrics(run_dir)
    assert [r["event"] for r in records if r["event"] != "progress"] == [
        "started",
        "validating",  # said before each epoch's validation, so a follower shows it
        "epoch_end",
        "validating",
        "epoch_end",
        "postprocess",  # choosing the clean-up on the held-out volume ...
        "postprocess",  # ... for checkpoint_best and checkpoint_last
        "postprocess",
        "finished",
    ]
    ends = _epoch_ends(run_dir)
    assert [(r["epoch"], r["iteration"], r["epochs"]) for r in ends] == [(1, 2, 2), (2, 4, 2)]
    assert all(np.isfinite(r["train_loss"]) and r["samples_per_s"] > 0 for r in ends)
    assert ends[0]["lr"] > ends[1]["lr"]  # poly schedule
    assert load_config(run_dir / rundir.CONFIG_JSON) == _config(dataset).resolved()
    summary = RunSummary.from_records(records)
    assert summary.state == "finished" and summary.epoch == 2 and summary.fraction == 1.0
    assert [epoch for epoch, _ in summary.curves["train_loss"]] == [1, 2]
    model = load_model(run_dir / rundir.CHECKPOINT_BEST)
    assert model.patch_size == (16, 16, 16)
    assert model.metadata["run_config"]["epochs"] == 2
    image = make_fragment((40, 40, 40), seed=5).image
    probability = np.asarray(predict(image, model, device="cpu").probability, dtype=np.float32)
    assert probability.shape == image.shape and probability.min() >= 0 and probability.max() <= 1


@pytest.mark.slow
def test_cancelled_run_resumes_to_the_same_weights_and_exact_epochs(dataset: Path, tmp_path: Path) -> None:
    config = _config(dataset, epochs=2, iterations_per_epoch=3)
    run_job(train(config, tmp_path / "full"))
    run_dir = tmp_path / "cut"
    job = train(config, run_dir)
    for report in job:
        if report.done == 4:  # mid-epoch 2
            job.close()
            break
    events = [r["event"] for r in read_metrics(run_dir)]
    assert events[-1] == "cancelled"
    state = rundir.load_train_state(run_dir / rundir.TRAIN_STATE)
    assert (state["epoch"], state["iteration"]) == (1, 4)
    result = run_job(train(None, run_dir, resume=True))
    assert (result.epochs_done, result.iterations_done) == (2, 6)
    ends = _epoch_ends(run_dir)
    assert [(r["epoch"], r["iteration"]) for r in ends] == [(1, 3), (2, 6)]
    full_ends = _epoch_ends(tmp_path / "full")
    assert ends[1]["train_loss"] == pytest.approx(full_ends[1]["train_loss"], rel=1e-4)
    resumed = _weights(run_dir / rundir.CHECKPOINT_LAST)
    uninterrupted = _weights(tmp_path / "full" / rundir.CHECKPOINT_LAST)
    for key, value in uninterrupted.items():
        assert torch.allclose(resumed[key], value, atol=1e-5), key


@pytest.mark.slow
def test_resume_refuses_changed_settings_unless_forced(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_job(train(_config(dataset, epochs=1), run_dir))
    with pytest.raises(TrainConfigError, match="already holds a training run"):
        run_job(train(_config(dataset, epochs=1), run_dir))
    with pytest.raises(TrainConfigError, match=r"epochs: 1 -> 2"):
        run_job(train(_config(dataset, epochs=2), run_dir, resume=True))
    result = run_job(train(_config(dataset, epochs=2), run_dir, resume=True, force=True))
    assert result.epochs_done == 2
    assert [r["epoch"] for r in _epoch_ends(run_dir)] == [1, 2]
    with pytest.raises(TrainConfigError, match="nothing to resume"):
        run_job(train(None, tmp_path / "empty", resume=True))


def test_corrupt_state_or_checkpoint_gives_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_job(train(_config(dataset, epochs=1), run_dir))
    state = run_dir / rundir.TRAIN_STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"train_state\.pt.*corrupt or truncated"):
        run_job(train(None, run_dir, resume=True))
    best = run_dir / rundir.CHECKPOINT_BEST
    best.write_bytes(best.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"checkpoint_best\.pt"):
        load_model(best)
    with pytest.raises(CheckpointError, match=r"checkpoint_best\.pt"):
        run_job(train(_config(dataset, init=str(best)), tmp_path / "tuned"))
    assert read_metrics(tmp_path / "tuned")[-1]["event"] == "error"


@pytest.mark.slow
def test_fine_tune_from_a_built_in_checkpoint(dataset: Path, tmp_path: Path) -> None:
    from napari_vesuvius.core.training.model import build_training_model

    base = tmp_path / "base"
    run_job(train(_config(dataset, epochs=1), base))
    config = _config(dataset, epochs=1, init=str(base / rundir.CHECKPOINT_BEST), model_preset="small")
    start = build_training_model(config, np.dtype(np.uint8))
    for key, value in _weights(base / rundir.CHECKPOINT_BEST).items():
        assert torch.equal(start.network.state_dict()[key], value)
    result = run_job(train(config, tmp_path / "tuned"))
    assert result.epochs_done == 1
    tuned = load_model(tmp_path / "tuned" / rundir.CHECKPOINT_LAST)
    assert tuned.metadata["init"]["init"] == str(base / rundir.CHECKPOINT_BEST)


@pytest.mark.slow
def test_early_stopping_ends_the_run_when_nothing_improves(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_job(train(_config(dataset, epochs=5, lr=1e-12, patience=1), run_dir))
    assert result.stopped_early and result.epochs_done == 2
    finished = read_metrics(run_dir)[-1]
    assert finished["event"] == "finished" and finished["reason"] == "early_stopping"


def test_metrics_follower_reads_only_complete_lines(tmp_path: Path) -> None:
    from napari_vesuvius.core.training.monitor import MetricsFollower

    path = tmp_path / "metrics.jsonl"
    follower = MetricsFollower(path)
    assert follower.poll() == []
    first = json.dumps({"event": "started", "epochs": 2, "iterations_per_epoch": 3})
    path.write_text(first + '\n{"event": ')
    assert [r["event"] for r in follower.poll()] == ["started"]
    with path.open("a") as handle:
        handle.write('"progress", "iteration": 1, "iterations": 6, "elapsed": 1.0}\nnot json\n')
    assert [r["event"] for r in follower.poll()] == ["progress"]
    rundir.atomic_write_text(path, json.dumps({"event": "started", "epochs": 2}) + "\n")
    assert [r["event"] for r in follower.poll()] == ["started"] and follower.was_reset


@pytest.mark.slow
def test_fine_tune_from_an_nnunet_folder_and_again_from_its_checkpoint(dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("dynamic_network_architectures")
    from nnunet_fixtures import make_nnunet_model_folder

    folder = make_nnunet_model_folder(
        tmp_path / "nnunet", patch_size=(16, 16, 16), folds=(0,), base_features=4
    )
    result = run_job(train(_config(dataset, epochs=1, init=str(folder)), tmp_path / "tuned"))
    assert result.epochs_done == 1
    tuned = load_model(tmp_path / "tuned" / rundir.CHECKPOINT_LAST)
    assert tuned.metadata["kind"] == "nnunet-fine-tuned" and tuned.normalization.kind == "ct"
    image = make_fragment((24, 24, 24), seed=3).image
    assert predict(image, tuned, device="cpu").probability.shape == image.shape
    again = _config(dataset, epochs=1, init=str(tmp_path / "tuned" / rundir.CHECKPOINT_LAST))
    assert run_job(train(again, tmp_path / "again")).epochs_done == 1


def test_score_every_adds_the_leaderboard_score_and_ranks_by_it(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_job(train(_config(dataset, epochs=1, score_every=1, score_max_volumes=1), run_dir))
    (end,) = _epoch_ends(run_dir)
    assert 0.0 <= end["score"] <= 1.0
    assert set(end["score_terms"]) >= {"score", "topo", "surface_dice", "voi_score"}
    assert result.best_key == "score" and result.best_metric == pytest.approx(end["score"])
