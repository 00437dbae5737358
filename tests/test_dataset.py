"""The challenge dataset folder: ids, pairing, scrolls and missing-file validation (core.dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_vesuvius.core.dataset import ChallengeDataset, is_dataset_folder, pair_ids
from napari_vesuvius.core.errors import DatasetError, VesuviusWarning


def make_dataset(root: Path, train: dict[str, str], test: dict[str, str], *, csvs: bool = True) -> Path:
    """Write a tiny dataset folder: 4³ TIFFs per id, optional train.csv/test.csv."""
    volume = np.zeros((4, 4, 4), np.uint8)
    for folder in ("train_images", "train_labels", "test_images", "deprecated_train_images"):
        (root / folder).mkdir(parents=True)
    for volume_id in train:
        tifffile.imwrite(root / "train_images" / f"{volume_id}.tif", volume)
        tifffile.imwrite(root / "train_labels" / f"{volume_id}.tif", volume)
    for volume_id in test:
        tifffile.imwrite(root / "test_images" / f"{volume_id}.tif", volume)
    tifffile.imwrite(root / "deprecated_train_images" / "999.tif", volume)
    if csvs:
        for name, rows in (("train.csv", train), ("test.csv", test)):
            lines = ["id,scroll_id", *(f"{i},{s}" for i, s in rows.items())]
            (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    return make_dataset(
        tmp_path / "data", {"1004": "34117", "327": "35360", "26894": "34117"}, {"7": "26002"}
    )


def test_open_pairs_ids_and_scrolls(dataset_root: Path) -> None:
    assert is_dataset_folder(dataset_root) and not is_dataset_folder(dataset_root / "train_images")
    dataset = ChallengeDataset.open(dataset_root)
    assert dataset.train_ids == ["327", "1004", "26894"]  # natural numeric order, stable
    assert dataset.test_ids == ["7"] and dataset.ids == ["327", "1004", "26894", "7"]
    assert dataset.image_path("1004") == dataset_root / "train_images" / "1004.tif"
    assert dataset.label_path("1004") == dataset_root / "train_labels" / "1004.tif"
    assert dataset.image_path("7") == dataset_root / "test_images" / "7.tif"
    assert dataset.label_path("7") is None
    assert dataset.scroll_id("327") == "35360" and dataset.scroll_id("7") == "26002"
    assert dataset.scrolls() == {"26002": 1, "34117": 2, "35360": 1}
    assert "999" not in dataset.ids  # deprecated folders are ignored
    dataset.validate()
    assert dataset.summary()["train"] == 3 and dataset.summary()["labelled"] == 3
    with pytest.raises(DatasetError, match="unknown id '42'"):
        dataset.image_path("42")


def test_without_csvs_ids_come_from_file_names(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", {"5": "", "12": ""}, {"3": ""}, csvs=False)
    dataset = ChallengeDataset.open(root)
    assert dataset.train_ids == ["5", "12"] and dataset.test_ids == ["3"]
    assert dataset.scroll_id("5") is None and dataset.scrolls() == {"?": 3}
    dataset.validate()


def test_missing_image_for_csv_id(dataset_root: Path) -> None:
    (dataset_root / "train_images" / "327.tif").unlink()
    with pytest.raises(DatasetError) as info:
        ChallengeDataset.open(dataset_root).validate()
    message = str(info.value)
    assert "train_images/327.tif: missing image for id '327'" in message
    assert "train.csv" in message


def test_missing_label_and_orphan_label(dataset_root: Path) -> None:
    (dataset_root / "train_labels" / "1004.tif").unlink()
    tifffile.imwrite(dataset_root / "train_labels" / "555.tif", np.zeros((4, 4, 4), np.uint8))
    problems = ChallengeDataset.open(dataset_root).problems()
    assert any("train_labels/1004.tif: missing label for id '1004'" in p for p in problems)
    assert any("train_labels/555.tif: label has no image" in p for p in problems)
    with pytest.raises(DatasetError, match="2 problem"):
        ChallengeDataset.open(dataset_root).validate()


def test_missing_test_image(dataset_root: Path) -> None:
    (dataset_root / "test_images" / "7.tif").unlink()
    with pytest.raises(DatasetError, match=r"test_images/7\.tif: missing test image for id '7'.*test\.csv"):
        ChallengeDataset.open(dataset_root).validate()


def test_bad_csv_and_not_a_dataset(tmp_path: Path, dataset_root: Path) -> None:
    (dataset_root / "train.csv").write_text("name,scroll\n1,2\n")
    with pytest.raises(DatasetError, match=r"train\.csv: csv has no 'id' column"):
        ChallengeDataset.open(dataset_root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: not a challenge dataset folder"):
        ChallengeDataset.open(tmp_path / "empty")


def test_pair_ids() -> None:
    assert pair_ids(["10", "2", "x"], ["2", "10", "y"]) == (["2", "10"], ["x"], ["y"])


def test_duplicate_csv_ids_are_used_once_with_a_warning(dataset_root: Path) -> None:
    (dataset_root / "train.csv").write_text(
        "id,scroll_id\n1004,34117\n327,35360\n1004,34117\n26894,34117\n327,35360\n"
    )
    with pytest.warns(VesuviusWarning, match=r"train\.csv: 2 duplicate id\(s\), each used once"):
        dataset = ChallengeDataset.open(dataset_root)
    assert dataset.train_ids == ["327", "1004", "26894"]
    (warning,) = dataset.warnings
    assert "'327' on lines 3, 6" in warning and "'1004' on lines 2, 4" in warning
    dataset.validate()


def test_a_csv_id_with_two_scrolls_is_refused(dataset_root: Path) -> None:
    (dataset_root / "train.csv").write_text("id,scroll_id\n1004,34117\n327,35360\n1004,26002\n")
    with pytest.raises(
        DatasetError, match=r"train\.csv: id '1004' is listed with different scroll_id values"
    ):
        ChallengeDataset.open(dataset_root)


def test_ids_without_volumes_and_volumes_without_ids_are_warned_about(dataset_root: Path) -> None:
    (dataset_root / "train.csv").write_text("id,scroll_id\n1004,34117\n327,35360\n55,35360\n66,1\n")
    (dataset_root / "test.csv").write_text("id,scroll_id\n7,26002\n8,26002\n327,35360\n")
    tifffile.imwrite(dataset_root / "train_images" / "1004.tiff", np.zeros((4, 4, 4), np.uint8))
    with pytest.warns(VesuviusWarning) as caught:
        dataset = ChallengeDataset.open(dataset_root)
    assert [str(w.message) for w in caught] == dataset.warnings
    text = "\n".join(dataset.warnings)
    assert f"{dataset_root / 'train_images'}: two files for id '1004' (1004.tif, 1004.tiff)" in text
    assert f"{dataset_root / 'train.csv'}: 2 listed id(s) have no volume in train_images/: 55, 66" in text
    assert f"{dataset_root / 'train_images'}: 1 volume(s) not listed in train.csv are ignored: 26894" in text
    assert f"{dataset_root / 'test.csv'}: 2 listed id(s) have no volume in test_images/: 8, 327" in text
    assert "1 id(s) listed as both training and test volumes (used as training ids): 327" in text
    assert dataset.image_path("1004").name == "1004.tif" and dataset.is_train("327")
    assert dataset.missing_train_ids() == ["55", "66"]
    assert dataset.scroll_id("327") == "35360"


def test_a_clean_folder_has_no_warnings(dataset_root: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ChallengeDataset.open(dataset_root).warnings == []
