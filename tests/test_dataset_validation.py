"""Checking every volume of a dataset up front (core.dataset_check): headers, values, every bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.core import dataset_check
from napari_vesuvius.core.dataset_check import (
    CheckItem,
    DatasetCheckError,
    iter_check_volumes,
    iter_validate_dataset,
    validate_dataset,
)
from napari_vesuvius.core.errors import DatasetError
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.volume.io import write_volume

SHAPE = (8, 12, 12)


def _image(seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, SHAPE).astype(dtype)


def _label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[3:5] = 1
    label[:1] = 2
    return label


def _write_pair(root: Path, volume_id: str, image: np.ndarray, label: np.ndarray | None) -> None:
    for folder in ("train_images", "train_labels", "test_images"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "train_images" / f"{volume_id}.tif", image, photometric="minisblack")
    if label is not None:
        tifffile.imwrite(root / "train_labels" / f"{volume_id}.tif", label, photometric="minisblack")


@pytest.fixture
def bad_dataset(tmp_path: Path) -> Path:
    """One good pair and one bad file of every kind, plus a float test image with Inf."""
    root = tmp_path / "ds"
    _write_pair(root, "1", _image(), _label())  # good
    bad_values = _label()
    bad_values[7, 0, :3] = (3, 255, 3)
    _write_pair(root, "2", _image(), bad_values)
    _write_pair(root, "3", _image(), _label().astype(np.float32))  # float labels
    _write_pair(root, "4", _image(), _label()[:, :10])  # shape mismatch
    nan_image = _image(dtype=np.float32)
    nan_image[2, 3, 4] = np.nan
    _write_pair(root, "5", nan_image, _label())
    _write_pair(root, "6", _image(), np.full(SHAPE, 2, np.uint8))  # only ignore
    _write_pair(root, "7", _image(), None)
    (root / "train_labels" / "7.tif").write_bytes(b"GIF89a" + b"\0" * 64)  # not a TIFF at all
    test = _image(dtype=np.float32)
    test[0, 0, 0] = np.inf
    tifffile.imwrite(root / "test_images" / "9.tif", test, photometric="minisblack")
    tifffile.imwrite(root / "test_images" / "10.tif", _image(), photometric="minisblack")
    return root


def test_every_bad_file_is_listed_at_once_with_its_problem(bad_dataset: Path) -> None:
    reports: list[Progress] = []
    with pytest.raises(DatasetCheckError) as info:
        run_job(iter_validate_dataset(bad_dataset), reports.append)
    error = info.value
    assert isinstance(error, DatasetError)
    labels, images = bad_dataset / "train_labels", bad_dataset / "train_images"
    expected = {
        labels / "2.tif": "label values must be 0, 1 or 2; found 3, 255 in 3 voxel(s)",
        labels / "3.tif": "label dtype float32",
        labels / "4.tif": "label shape (8, 10, 12) does not match the shape (8, 12, 12)",
        images / "5.tif": "image holds 1 NaN voxel(s)",
        labels / "6.tif": "every voxel is ignore (2)",
        labels / "7.tif": "7.tif",
        bad_dataset / "test_images" / "9.tif": "image holds 1 ±Inf voxel(s)",
    }
    assert len(error.problems) == len(expected)
    for path, problem in expected.items():
        (line,) = [p for p in error.problems if p.startswith(f"{path}: ")]
        assert problem in line
        assert f"  {line}" in str(error)  # the message lists each of them
    assert str(error).startswith(f"{bad_dataset}: 7 problem(s):")
    assert not any(
        p.startswith(str(images / "1.tif")) or "1.tif:" in p.split(": ")[0] for p in error.problems
    )
    assert reports and reports[-1].done == reports[-1].total  # progress for the GUI/CLI
    assert any("checking values" in r.message for r in reports)


def test_headers_only_reads_no_values(bad_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_values(*args: object) -> None:
        raise AssertionError("values read in a headers-only check")

    monkeypatch.setattr(dataset_check, "_iter_label_values", no_values)
    monkeypatch.setattr(dataset_check, "_iter_image_values", no_values)
    with pytest.raises(DatasetCheckError) as info:
        validate_dataset(bad_dataset, values=False)
    problems = " ".join(info.value.problems)
    assert "3.tif: label dtype float32" in problems and "4.tif: label shape" in problems
    assert "7.tif" in problems and "NaN" not in problems and "found 3" not in problems


def test_a_good_dataset_passes_and_missing_files_are_problems(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write_pair(root, "1", _image(), _label())
    _write_pair(root, "2", _image(1, np.float32), _label())  # a finite float image is fine
    assert validate_dataset(root).train_ids == ["1", "2"]
    (root / "train.csv").write_text("id,scroll_id\n1,a\n2,a\n3,a\n")
    with pytest.raises(DatasetError, match=r"train_images/3\.tif: missing image for id '3'"):
        validate_dataset(root)


def test_label_values_are_streamed_chunk_by_chunk(tmp_path: Path) -> None:
    """A zarr label with 8 chunks: the value pass reads them one at a time and finds a bad one in any."""
    image, label = _image(), _label()
    label[7, 11, 11] = 9
    write_volume(tmp_path / "image.zarr", image, chunks=(4, 6, 6))
    write_volume(tmp_path / "label.zarr", label, chunks=(4, 6, 6))
    reports: list[Progress] = []
    problems = run_job(
        iter_check_volumes([CheckItem(tmp_path / "image.zarr", tmp_path / "label.zarr")]), reports.append
    )
    assert problems == [f"{tmp_path / 'label.zarr'}: label values must be 0, 1 or 2; found 9 in 1 voxel(s)"]
    assert len([r for r in reports if "counting values" in r.message]) == 8


def test_the_cache_skips_unchanged_files_and_rechecks_changed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    _write_pair(root, "1", _image(), _label())
    items = [CheckItem(root / "train_images" / "1.tif", root / "train_labels" / "1.tif")]
    cache = tmp_path / "check.json"
    assert run_job(iter_check_volumes(items, cache=cache)) == []
    stored = json.loads(cache.read_text())
    assert list(stored["files"]) == [str((root / "train_labels" / "1.tif").resolve())]
    scanned: list[Path] = []
    original = dataset_check._iter_label_values

    def spy(path: Path):  # type: ignore[no-untyped-def]
        scanned.append(path)
        return (yield from original(path))

    monkeypatch.setattr(dataset_check, "_iter_label_values", spy)
    assert run_job(iter_check_volumes(items, cache=cache)) == [] and scanned == []
    bad = _label()
    bad[0, 0, 0] = 7
    tifffile.imwrite(root / "train_labels" / "1.tif", bad, photometric="minisblack")
    (problem,) = run_job(iter_check_volumes(items, cache=cache))
    assert "found 7" in problem and len(scanned) == 1
    assert json.loads(cache.read_text())["files"] == {}  # a failed file is not remembered


def test_one_problem_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write_pair(root, "1", _image(), _label()[:4])
    with pytest.raises(DatasetCheckError) as info:
        validate_dataset(root)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(root / "train_labels" / "1.tif"))
