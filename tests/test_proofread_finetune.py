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
    (row,) = summary["compare"]
    assert row["id"] == "0" and all(0.0 <= row[k]["score"] <= 1.0 for k in ("old", "new"))
    assert "old" in captured.err and "-> new" in captured.err


def test_finetune_cli_names_bad_input(dataset: Path, tmp_path: Path, capsys) -> None:
    common = ["finetune", "--model", str(dataset.parent / "m.pt"), "--run-dir", str(tmp_path / "run")]
    common += ["--epochs", "1", "--iterations-per-epoch", "1"]
    assert main([*common, "--images", "a.tif", "b.tif", "--labels", "a.tif"]) == 1
    assert "--images lists 2 volume(s) but --labels 1" in capsys.readouterr().err
    assert main([*common, "--pair", "missing.tif", "missing_labels.tif"]) == 1
    assert "missing.tif: file not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
