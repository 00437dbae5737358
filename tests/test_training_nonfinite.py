"""A run whose loss, gradients or weights become NaN/Inf stops with an error and never replaces a good
checkpoint; bad training data is refused before anything is trained, every bad file listed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_vesuvius.cli.main import main  # noqa: E402
from napari_vesuvius.core.dataset_check import DatasetCheckError  # noqa: E402
from napari_vesuvius.core.errors import VesuviusError  # noqa: E402
from napari_vesuvius.core.progress import run_job  # noqa: E402
from napari_vesuvius.core.synthetic import make_fragment, write_training_folder  # noqa: E402
from napari_vesuvius.core.training import rundir  # noqa: E402
from napari_vesuvius.core.training._trainer import Trainer  # noqa: E402
from napari_vesuvius.core.training.config import TrainConfig  # noqa: E402
from napari_vesuvius.core.training.data import collect_sources  # noqa: E402
from napari_vesuvius.core.training.guard import NonFiniteError  # noqa: E402
from napari_vesuvius.core.training.monitor import RunSummary, read_metrics  # noqa: E402
from napari_vesuvius.core.training.runner import train  # noqa: E402
from napari_vesuvius.core.volume.io import write_volume  # noqa: E402

SAVED = (rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST, rundir.TRAIN_STATE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(tmp_path_factory.mktemp("nonfinite") / "ds", (32, 32, 32))


def _config(dataset: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        epochs=2, iterations_per_epoch=2, patch_size=(16, 16, 16), batch_size=1, data=(str(dataset),),
        model_preset="tiny", val_patches=1, torch_threads=1, loader_threads=0, choose_postprocess=False,
    )  # fmt: skip
    return replace(base, **changes)


def _nan_batches(monkeypatch: pytest.MonkeyPatch, first_bad: int, on_first_bad=None) -> None:  # type: ignore[no-untyped-def]
    """From iteration ``first_bad`` on, one voxel of every batch is NaN (as a NaN CT value would be)."""
    original = Trainer.make_batch

    def make_batch(self: Trainer, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = original(self, iteration)
        if iteration >= first_bad:
            if iteration == first_bad and on_first_bad is not None:
                on_first_bad()
            images = images.copy()
            images[0, 0, 0, 0, 0] = np.nan
        return images, labels

    monkeypatch.setattr(Trainer, "make_batch", make_batch)


@pytest.mark.slow
def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_good_files(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    good: dict[str, bytes] = {}
    _nan_batches(monkeypatch, 2, lambda: good.update({n: (run_dir / n).read_bytes() for n in SAVED}))
    with pytest.raises(NonFiniteError) as info:
        run_job(train(_config(dataset), run_dir))
    error = info.value
    assert isinstance(error, VesuviusError) and error.run_dir == run_dir and error.iteration == 3
    assert str(error).startswith(f"{run_dir}: iteration 3: the loss is nan")
    assert "the checkpoints and state of epoch 1 (iteration 2) are kept" in str(error)
    assert set(good) == set(SAVED)
    for name, data in good.items():  # nothing was replaced after the good epoch
        assert (run_dir / name).read_bytes() == data, name
    for name in (rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST):
        weights = torch.load(run_dir / name, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values() if torch.is_floating_point(w))
    records = read_metrics(run_dir)
    assert records[-1]["event"] == "error" and records[-1]["reason"] == "non_finite"
    assert records[-1]["iteration"] == 3 and records[-1]["epoch"] == 1
    summary = RunSummary.from_records(records)
    assert summary.state == "error" and summary.reason == "non_finite"
    assert "NonFiniteError" in summary.message and "iteration 3" in summary.message
    monkeypatch.undo()  # the cause is gone: resuming continues from the last good epoch
    result = run_job(train(None, run_dir, resume=True))
    assert (result.epochs_done, result.iterations_done) == (2, 4)
    checked = json.loads((run_dir / rundir.DATA_CHECK).read_text())["files"]  # not read again on resume
    assert sorted(Path(path).name for path in checked) == ["0.tif", "1.tif"]


def test_weights_are_checked_before_every_save(dataset: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "t"
    run_dir.mkdir()
    config = _config(dataset).resolved()
    trainer = Trainer(config, run_dir, collect_sources([str(dataset)], []), [], None)
    try:
        trainer.save_last_checkpoint()
        trainer.save_state()
        good = {n: (run_dir / n).read_bytes() for n in (rundir.CHECKPOINT_LAST, rundir.TRAIN_STATE)}
        name, parameter = next(iter(trainer.network.named_parameters()))
        with torch.no_grad():
            parameter.view(-1)[0] = float("inf")
        with pytest.raises(
            NonFiniteError, match=rf"weights are non-finite \({name}\), checkpoint_last\.pt not"
        ):
            trainer.save_last_checkpoint()
        with pytest.raises(NonFiniteError, match=r"train_state\.pt not written"):
            trainer.save_state()
        with pytest.raises(NonFiniteError, match=r"checkpoint_best\.pt not written"):
            trainer._save_checkpoint(rundir.CHECKPOINT_BEST, None)
        assert {n: (run_dir / n).read_bytes() for n in good} == good
        assert not (run_dir / rundir.CHECKPOINT_BEST).exists()
    finally:
        trainer.close()


def test_non_finite_gradients_stop_before_the_weights_change(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(dataset).resolved()
    trainer = Trainer(config, tmp_path / "t", collect_sources([str(dataset)], []), [], None)
    try:
        batch = trainer.make_batch(0)
        trainer.step(batch)
        before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: torch.tensor(float("nan")))
        with pytest.raises(NonFiniteError, match=r"iteration 2: the gradients are non-finite \(norm nan\)"):
            trainer.step(trainer.make_batch(1))
        assert trainer.iteration == 1
        after = trainer.network.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        trainer.close()


def _bad_copy(dataset: Path, root: Path) -> Path:
    """The dataset plus a volume with a NaN CT voxel and one whose label holds a 7 (ids 90 and 91)."""
    shutil.copytree(dataset, root)
    fragment = make_fragment((32, 32, 32), seed=5)
    ct = fragment.image.astype(np.float32)
    ct[3, 4, 5] = np.nan
    write_volume(root / "train_images" / "90.tif", ct)
    write_volume(root / "train_labels" / "90.tif", fragment.labels)
    bad = fragment.labels.copy()
    bad[0, 0, 0] = 7
    write_volume(root / "train_images" / "91.tif", fragment.image)
    write_volume(root / "train_labels" / "91.tif", bad)
    return root


def test_train_refuses_bad_data_up_front_listing_every_file(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _bad_copy(dataset, tmp_path / "bad")
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(root), "--run-dir", str(run_dir), "--epochs", "1"]
    code = main(
        [*args, "--iterations-per-epoch", "1", "--model-preset", "tiny", "--patch-size", "16", "16", "16"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "error: training data: 2 problem(s):" in err
    assert f"{root / 'train_images' / '90.tif'}: image holds 1 NaN voxel(s)" in err
    assert f"{root / 'train_labels' / '91.tif'}: label values must be 0, 1 or 2; found 7 in 1 voxel(s)" in err
    assert "Traceback" not in err
    assert not any((run_dir / name).exists() for name in SAVED)
    (record,) = [r for r in read_metrics(run_dir) if r["event"] != "progress"]
    assert record["event"] == "error" and "91.tif" in record["message"]
    with pytest.raises(DatasetCheckError) as info:  # the same through the core job, explicit pairs
        pairs = ((str(root / "train_images" / "91.tif"), str(root / "train_labels" / "91.tif")),)
        run_job(train(_config(dataset, data=(), pairs=pairs), tmp_path / "run2"))
    assert str(info.value).startswith(str(root / "train_labels" / "91.tif"))


def test_cli_exits_1_when_the_loss_becomes_nan_and_says_why(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    (root / "train.csv").write_text("id,scroll_id\n0,1\n1,1\n99,1\n")  # 99: listed, no volume
    _nan_batches(monkeypatch, 0)
    run_dir = tmp_path / "run"
    args = ["train", "--data", str(root), "--run-dir", str(run_dir), "--epochs", "1", "--val-patches", "1"]
    args += ["--iterations-per-epoch", "2", "--model-preset", "tiny", "--patch-size", "16", "16", "16"]
    code = main([*args, "--threads", "1", "--no-choose-postprocess"])
    err = capsys.readouterr().err
    assert code == 1
    assert (
        f"error: {run_dir}: iteration 1: the loss is nan" in err
        and "no checkpoint had been written yet" in err
    )
    assert "warning: " in err and "train.csv: 1 listed id(s) have no volume in train_images/: 99" in err
    assert not any((run_dir / name).exists() for name in SAVED)
    records = read_metrics(run_dir)
    started = next(r for r in records if r["event"] == "started")
    assert any("listed id(s) have no volume in train_images/: 99" in note for note in started["notes"])
    assert records[-1]["event"] == "error" and records[-1]["reason"] == "non_finite"
    summary = RunSummary.from_records(records)  # what the Train widget shows
    assert summary.state == "error" and summary.reason == "non_finite" and "iteration 1" in summary.message
