"""``napari-vesuvius score``: files and folders, JSON and table output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main
from napari_vesuvius.cli.score import find_pairs

KEYS = {"score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge", "topo_counts"}


def _needs_topo() -> None:
    pytest.importorskip("napari_vesuvius.core.metric.topo")


def _label(seed: int, shape: tuple[int, int, int] = (10, 12, 12)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[3 + seed % 3 : 5 + seed % 3, 1:-1, 1:-1] = 1
    label[:, :, -2:] = 2
    return label


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, compression="zlib")
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    preds, labels = tmp_path / "preds", tmp_path / "labels"
    for seed, name in enumerate(("aaa", "bbb")):
        label = _label(seed)
        pred = (label == 1).astype(np.uint8)
        if seed:
            pred = np.roll(pred, 1, axis=0)
        _write(labels / f"{name}.tif", label)
        _write(preds / f"{name}.tif", pred)
    _write(labels / "ccc.tif", _label(2))  # a label without prediction is skipped
    return preds, labels


def test_find_pairs_by_name(folders: tuple[Path, Path]) -> None:
    preds, labels = folders
    pairs = find_pairs(preds, labels)
    assert [p[0] for p in pairs] == ["aaa", "bbb"]
    assert pairs[0][2] == labels / "aaa.tif"
    single = find_pairs(preds / "aaa.tif", labels / "bbb.tif")
    assert single == [("aaa", preds / "aaa.tif", labels / "bbb.tif")]


def test_find_pairs_dataset_folder(tmp_path: Path) -> None:
    _write(tmp_path / "ds" / "train_labels" / "17.tif", _label(0))
    _write(tmp_path / "p" / "17.tif", _label(0))
    assert find_pairs(tmp_path / "p", tmp_path / "ds")[0][2] == tmp_path / "ds" / "train_labels" / "17.tif"


def test_json_single_volume(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _needs_topo()
    preds, labels = folders
    assert main(["score", str(preds / "aaa.tif"), str(labels / "aaa.tif"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert set(lines[0]) == KEYS | {"id"} and lines[0]["id"] == "aaa"
    assert lines[0]["score"] == pytest.approx(1.0)
    assert lines[1]["id"] == "mean" and lines[1]["n_volumes"] == 1
    assert set(lines[0]["topo_counts"]) == {"0", "1", "2"}


def test_json_folders_and_mean(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _needs_topo()
    preds, labels = folders
    assert main(["score", str(preds), str(labels), "--json", "--topo-backend", "native"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == ["aaa", "bbb", "mean"]
    assert lines[1]["score"] < 1.0
    assert lines[2]["score"] == pytest.approx((lines[0]["score"] + lines[1]["score"]) / 2)


def test_table_output(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _needs_topo()
    preds, labels = folders
    assert main(["score", str(preds), str(labels)]) == 0
    out = capsys.readouterr().out
    assert "score" in out.splitlines()[0] and "VOI" in out.splitlines()[0]
    assert any(line.startswith("mean") for line in out.splitlines())
    assert "dim 0: m=" in out


def test_missing_pair_is_named(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    preds, labels = folders
    _write(preds / "zzz.tif", _label(0))
    assert main(["score", str(preds), str(labels)]) == 1
    err = capsys.readouterr().err
    assert "zzz.tif" in err and "no label" in err


def test_shape_mismatch_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = _write(tmp_path / "p.tif", np.zeros((6, 5, 7), np.uint8))
    label = _write(tmp_path / "l.tif", np.zeros((6, 5, 8), np.uint8))
    assert main(["score", str(pred), str(label)]) == 1
    err = capsys.readouterr().err
    assert "p.tif" in err and "does not match" in err


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "labels" / "a.tif", _label(0))
    assert main(["score", str(tmp_path / "empty"), str(tmp_path / "labels")]) == 1
    assert "no prediction volumes" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "labels" / "a.tif"), str(tmp_path / "labels")]) == 1
    assert "label volume" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "nope.tif"), str(tmp_path / "labels")]) == 1
    assert "nope.tif" in capsys.readouterr().err
    flat = _write(tmp_path / "flat.tif", np.zeros((5, 6), np.uint8))
    assert main(["score", str(flat), str(flat)]) == 1
    assert "flat.tif" in capsys.readouterr().err


def test_memory_limit_refuses_with_the_estimate(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    preds, labels = folders
    pair = [str(preds / "aaa.tif"), str(labels / "aaa.tif")]
    assert main(["score", *pair, "--memory-limit", "1M"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "aaa.tif: scoring needs about" in err and "bytes per voxel" in err and "--memory-limit" in err
    assert main(["score", *pair, "--memory-limit", "4G", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["score"] == pytest.approx(1.0)


def test_float_prediction_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = _label(0)
    pred = _write(tmp_path / "prob.tif", (label == 1).astype(np.float32) * 0.8)
    assert main(["score", str(pred), str(_write(tmp_path / "l.tif", label))]) == 1
    err = capsys.readouterr().err
    assert "prob.tif: mask dtype is float32" in err and "napari-vesuvius postprocess" in err
