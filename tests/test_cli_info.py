"""``napari-vesuvius info``: volume description, label counts, OME-Zarr levels, dataset summary, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.volume.io import write_ome_zarr


def run_info(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["info", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_info_json_label_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = np.zeros((6, 20, 30), np.uint8)
    labels[:2] = 2
    labels[3, 5, :10] = 1
    folder = tmp_path / "train_labels"
    folder.mkdir()
    tifffile.imwrite(folder / "42.tif", labels, compression="lzw")
    code, out, _ = run_info(capsys, str(folder / "42.tif"), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "tiff" and info["shape"] == [6, 20, 30] and info["dtype"] == "uint8"
    assert info["chunks"] == [6, 20, 30] and info["labels"] is True and info["multiscale"] is False
    assert info["counts"] == {"0": 2390, "1": 10, "2": 1200} and info["valid_labels"] is True


def test_info_text_image_and_forced_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    code, out, _ = run_info(capsys, str(tmp_path / "img.tif"))
    assert code == 0 and "shape:  (4, 16, 16)  dtype: uint16" in out and "value" not in out
    code, out, _ = run_info(capsys, str(tmp_path / "img.tif"), "--json", "--counts")
    info = json.loads(out)
    assert len(info["counts"]) == image.size and info["valid_labels"] is False


def test_info_ome_zarr_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = np.full((32, 32, 32), 100, np.uint8)
    write_ome_zarr(tmp_path / "s.zarr", [full, full[::2, ::2, ::2]], chunks=(16, 16, 16))
    code, out, _ = run_info(capsys, str(tmp_path / "s.zarr"), "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "ome-zarr" and info["multiscale"] is True and "counts" not in info
    assert [(level["shape"], level["chunks"], level["scale"]) for level in info["levels"]] == [
        ([32, 32, 32], [16, 16, 16], [1.0, 1.0, 1.0]),
        ([16, 16, 16], [16, 16, 16], [2.0, 2.0, 2.0]),
    ]
    code, out, _ = run_info(capsys, str(tmp_path / "s.zarr"))
    assert code == 0
    assert "level 1: shape (16, 16, 16)" in out


def test_info_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("train_images", "train_labels", "test_images"):
        (tmp_path / folder).mkdir()
    volume = np.zeros((4, 4, 4), np.uint8)
    for volume_id in ("1", "2"):
        tifffile.imwrite(tmp_path / "train_images" / f"{volume_id}.tif", volume, photometric="minisblack")
        tifffile.imwrite(tmp_path / "train_labels" / f"{volume_id}.tif", volume, photometric="minisblack")
    (tmp_path / "train.csv").write_text("id,scroll_id\n1,34117\n2,35360\n")
    code, out, err = run_info(capsys, str(tmp_path), "--json")
    info = json.loads(out)
    assert code == 0 and err == "" and info["kind"] == "dataset" and info["train"] == 2 and info["test"] == 0
    assert info["scrolls"] == {"34117": 1, "35360": 1} and info["problems"] == [] and info["warnings"] == []
    (tmp_path / "train.csv").write_text("id,scroll_id\n1,34117\n2,35360\n3,35360\n")
    code, out, err = run_info(capsys, str(tmp_path), "--json")
    info = json.loads(out)
    assert code == 1 and info["train"] == 3 and info["scrolls"] == {"34117": 1, "35360": 2}
    assert any("train_images/3.tif: missing image" in p for p in info["problems"])
    assert any("train.csv: 1 listed id(s) have no volume in train_images/: 3" in w for w in info["warnings"])
    assert "error: " in err and "train_images/3.tif: missing image for id '3'" in err
    code, out, err = run_info(capsys, str(tmp_path))
    assert code == 1 and "train ids: 3 (2 with labels)" in out and "scrolls: 2" in out
    assert "2 bad or missing file(s)" in out  # id 3: no image, no label


def test_info_dataset_checks_every_volume_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in ("train_images", "train_labels"):
        (tmp_path / folder).mkdir()
    volume = np.zeros((4, 6, 6), np.uint8)
    bad = volume.copy()
    bad[1, 1, 1] = 5
    for volume_id, label in (("1", volume), ("2", bad), ("3", volume[:, :5])):
        tifffile.imwrite(tmp_path / "train_images" / f"{volume_id}.tif", volume, photometric="minisblack")
        tifffile.imwrite(tmp_path / "train_labels" / f"{volume_id}.tif", label, photometric="minisblack")
    code, out, err = run_info(capsys, str(tmp_path))
    assert code == 1 and "2 bad or missing file(s)" in out
    lines = err.splitlines()
    assert lines[0] == f"error: {tmp_path}: 2 problem(s):"
    assert "train_labels/2.tif: label values must be 0, 1 or 2; found 5 in 1 voxel(s)" in lines[1]
    assert "train_labels/3.tif: label shape (4, 5, 6) does not match" in lines[2]
    code, out, err = run_info(capsys, str(tmp_path), "--no-counts", "--json")  # headers only
    info = json.loads(out)
    assert code == 1 and info["checked"] == "headers" and len(info["problems"]) == 1
    assert err.startswith("error: ") and "train_labels/3.tif: label shape" in err and err.count("\n") == 1


def test_info_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.tif").write_bytes(b"GIF89a" + b"\0" * 100)
    code, out, err = run_info(capsys, str(tmp_path / "junk.tif"))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "junk.tif: not a readable TIFF" in err
