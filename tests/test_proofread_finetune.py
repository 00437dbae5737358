"""Fine-tuning on corrected volumes: the training set, the settings, and ``napari-vesuvius finetune``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import DatasetError
from napari_vesuvius.core.proofread.finetune import FINETUNE_LR, finetune_config, training_pairs
from napari_vesuvius.core.proofread.save import save_version
from napari_vesuvius.core.synthetic import make_fragment
from napari_vesuvius.core.training import rundir
from napari_vesuvius.core.training.config import load_config
from napari_vesuvius.core.volume.io import write_volume

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A challenge folder with 3 volumes, one corrected (``0.v001.tif``), and a tiny model."""
    root = tmp_path_factory.mktemp("finetune") / "ds"
    for folder in ("train_images", "train_labels"):
        (root / folder).mkdir(parents=True)
    for seed in range(3):
        fragment = make_fragment(SHAPE, seed=seed)
        write_volume(root / "train_images" / f"{seed}.tif", fragment.image)
        write_volume(root / "train_labels" / f"{seed}.tif", fragment.labels)
        if seed == 0:
            corrected = fragment.labels.copy()
            corrected[:4] = 2  # the proofreader marked a slab as ignore
            save_version(root / "train_labels" / "0.tif", corrected)
    model = str(root.parent / "m.pt")
    assert main(["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", model]) == 0
    return root


def test_corrected_volumes_replace_their_folder_copy_and_are_never_held_out(dataset: Path) -> None:
    image, version = dataset / "train_images" / "0.tif", dataset / "train_labels" / "0.v001.tif"
    pairs, val_ids, note = training_pairs([(image, version)], [dataset], val_fraction=0.5, seed=0)
    assert pairs[0] == (str(image), str(version))
    assert sorted(Path(i).name for i, _ in pairs) == ["0.tif", "1.tif", "2.tif"]  # 0.tif once, corrected
    assert len(val_ids) == 1 and val_ids[0] in ("1", "2")
    assert "1 replaced" in note
    alone, no_val, note = training_pairs([(image, version)])
    assert alone == [(str(image), str(version))] and no_val == [] and "validating on the training" in note
    with pytest.raises(DatasetError, match="no corrected volumes"):
        training_pairs([])


def test_finetune_settings_start_from_the_model_with_a_small_learning_rate(dataset: Path) -> None:
    image, version = dataset / "train_images" / "0.tif", dataset / "train_labels" / "0.v001.tif"
    config = finetune_config(dataset.parent / "m.pt", [(image, version)], epochs=1, iterations_per_epoch=2)
    assert config.init == str((dataset.parent / "m.pt").resolve())
    assert config.patch_size == (16, 16, 16) and config.lr == FINETUNE_LR["sgd"]
    assert config.val_fraction == 0.0 and config.val_ids == ()  # nothing to hold out: the run validates on it
    assert config.pairs == ((str(image.resolve()), str(version.resolve())),)


def test_a_corrected_crop_is_written_as_a_training_pair(dataset: Path, tmp_path: Path) -> None:
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.proofread.finetune import iter_write_training_pair
    from napari_vesuvius.core.proofread.region import parse_box
    from napari_vesuvius.core.volume.io import open_volume

    box = parse_box("4:20,0:16,8:32", SHAPE)
    with open_volume(dataset / "train_images" / "1.tif") as image:
        crop = np.full((16, 16, 24), 2, np.uint8)
        crop[5] = 1
        paths = run_job(iter_write_training_pair(image.data, crop, tmp_path, "1_crop", box))
        expected_image = image.data[box].compute()
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["images/1_crop.tif", "labels/1_crop.tif"]
    with open_volume(paths[0]) as written_image, open_volume(paths[1]) as written_labels:
        np.testing.assert_array_equal(written_image.data.compute(), expected_image)
        np.testing.assert_array_equal(written_labels.data.compute(), crop)


def test_finetune_cli_trains_and_compares_old_and_new(dataset: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    image, labels = dataset / "train_images" / "0.tif", dataset / "train_labels" / "0.tif"
    code = main([
        "finetune", "--model", str(dataset.parent / "m.pt"), "--images", str(image), "--labels", str(labels),
        "--latest", "--data", str(dataset), "--val-fraction", "0.5", "--run-dir", str(run_dir),
        "--epochs", "1", "--iterations-per-epoch", "2", "--batch-size", "1", "--device", "cpu",
        "--threads", "1", "--val-patches", "2", "--compare", "--json",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["checkpoint"] == str(run_dir / rundir.CHECKPOINT_BEST) and summary["iterations"] == 2
    stored = load_config(run_dir / rundir.CONFIG_JSON)
    assert Path(stored.pairs[0][1]).name == "0.v001.tif" and len(stored.pairs) == 3
    assert stored.init.endswith("m.pt") and stored.lr == 1e-3
    (row,) = summary["compare"]  # the run's held-out validation volume, never the corrected "0"
    assert row["id"] == stored.val_ids[0] and row["why"] == "a validation volume of the run"
    assert all(0.0 <= row[k]["score"] <= 1.0 for k in ("old", "new"))
    assert "-> new" in captured.err and "held-out score: old" in captured.err


def test_finetune_cli_names_bad_input(dataset: Path, tmp_path: Path, capsys) -> None:
    common = ["finetune", "--model", str(dataset.parent / "m.pt"), "--run-dir", str(tmp_path / "run")]
    common += ["--epochs", "1", "--iterations-per-epoch", "1"]
    assert main([*common, "--images", "a.tif", "b.tif", "--labels", "a.tif"]) == 1
    assert "--images lists 2 volume(s) but --labels 1" in capsys.readouterr().err
    assert main([*common, "--pair", "missing.tif", "missing_labels.tif"]) == 1
    assert "missing.tif: file not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_held_out_volumes_are_never_ones_the_fine_tuning_trained_on(dataset: Path, tmp_path: Path) -> None:
    from napari_vesuvius.core.proofread.compare import held_out_volumes

    model = dataset.parent / "m.pt"
    image, version = dataset / "train_images" / "0.tif", dataset / "train_labels" / "0.v001.tif"
    alone = finetune_config(model, [(image, version)], epochs=1, iterations_per_epoch=1)
    found = held_out_volumes(alone)  # the dataset's other labelled volumes, with their real labels
    assert [(v.id, v.label.name) for v in found] == [("1", "1.tif"), ("2", "2.tif")]
    assert all("not trained on" in v.why for v in found)
    held = finetune_config(model, [(image, version)], data=[dataset], val_fraction=0.5, epochs=1,
                           iterations_per_epoch=1)  # fmt: skip
    (val,) = held.val_ids
    assert [(v.id, v.why) for v in held_out_volumes(held)] == [(val, "a validation volume of the run")]
    everything = finetune_config(model, [(image, version)], data=[dataset], val_fraction=0.0, epochs=1,
                                 iterations_per_epoch=1)  # fmt: skip
    assert held_out_volumes(everything) == []  # all trained on: nothing fair to score on
    single = tmp_path / "single"
    single.mkdir()
    fragment = make_fragment(SHAPE, seed=9)
    write_volume(single / "ct.tif", fragment.image)
    write_volume(single / "ct_labels.tif", fragment.labels)
    lonely = finetune_config(model, [(single / "ct.tif", single / "ct_labels.tif")], epochs=1,
                             iterations_per_epoch=1)  # fmt: skip
    assert held_out_volumes(lonely) == []


def test_fair_comparison_scores_both_models_on_held_out_labels_or_says_none(dataset: Path) -> None:
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.proofread.compare import NO_FAIR_COMPARISON, held_out_volumes, iter_fair_compare

    model = dataset.parent / "m.pt"
    image, version = dataset / "train_images" / "0.tif", dataset / "train_labels" / "0.v001.tif"
    config = finetune_config(model, [(image, version)], epochs=1, iterations_per_epoch=1)
    volumes = held_out_volumes(config, max_volumes=1)
    comparison = run_job(iter_fair_compare(model, model, volumes, device="cpu", max_edge=24))
    assert comparison.fair and [v.id for v in comparison.volumes] == ["1"]
    old, new = comparison.mean("old")["score"], comparison.mean("new")["score"]
    assert 0.0 <= old <= 1.0 and new == pytest.approx(old)  # the same model twice: the same score
    assert comparison.verdict().startswith(f"held-out score: old {old:.4f} → fine-tuned {new:.4f} (a tie")
    assert "1 (not trained on" in comparison.note and "central 24³ crop" in comparison.note
    none = run_job(iter_fair_compare(model, model, [], device="cpu"))
    assert (
        not none.fair and none.verdict() == NO_FAIR_COMPARISON and "no fair comparison" in NO_FAIR_COMPARISON
    )


def test_the_model_to_fine_tune_is_the_one_that_made_the_prediction(tmp_path: Path) -> None:
    from napari_vesuvius.core.proofread.finetune import model_to_finetune

    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    first.touch()
    second.touch()
    path, why = model_to_finetune([{"path": str(first), "weight": 1.0}], "0 probability")
    assert path == first and why == "fine-tunes first.pt, the model that made '0 probability'"
    ensemble = [{"path": str(first), "weight": 1.0}, {"path": str(second), "weight": 2.0}]
    path, why = model_to_finetune(ensemble, "0 probability")
    assert path == second and "highest-weighted of its 2 ensemble models" in why
    path, why = model_to_finetune([], "0 probability")
    assert (
        path is None
        and why == "'0 probability' does not say which model made it: choose the model to fine-tune"
    )
    path, why = model_to_finetune([{"path": str(tmp_path / "gone.pt")}], "p")
    assert path is None and "is not found: choose the model to fine-tune" in why
