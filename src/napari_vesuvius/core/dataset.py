"""The challenge dataset folder: ``train_images/``, ``train_labels/``, ``test_images/`` and the csvs.

Images and labels are paired by id (``<id>.tif``). ``train.csv`` / ``test.csv`` (columns ``id, scroll_id``)
give the ids and their scroll; without csvs the ids come from the file names. Snapshot folders such as
``deprecated_train_images/`` are ignored, and so are corrected label versions (``<id>.v001.tif``) and
autosaves (``<id>.autosave.tif``) written by proofreading.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DatasetError
from .proofread.naming import is_derived_name
from .volume_io import TIFF_SUFFIXES

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES = "train_images", "train_labels", "test_images"
TRAIN_CSV, TEST_CSV = "train.csv", "test.csv"


def _sort_key(volume_id: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order first, then the others alphabetically (a stable, natural order)."""
    return (0, int(volume_id)) if volume_id.isdigit() else (1, volume_id)


def _tiffs_by_id(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in TIFF_SUFFIXES and not path.name.startswith("."):
            if is_derived_name(path.name):  # a corrected version or an autosave, not a volume id
                continue
            found.setdefault(path.stem, path)
    return found


def _read_csv(path: Path) -> dict[str, str | None]:
    """``id -> scroll_id`` from a challenge csv (scroll_id None when the column is absent)."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "id" not in columns:
                listed = ", ".join(columns) or "none"
                raise DatasetError(f"{path}: csv has no 'id' column (columns: {listed})")
            rows: dict[str, str | None] = {}
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                if not row.get("id"):
                    raise DatasetError(f"{path}: line {line} has an empty id")
                rows[row["id"]] = row.get("scroll_id") or None
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{path}: cannot read csv ({error})") from error


def is_dataset_folder(path: str | Path) -> bool:
    """True for a folder with ``train_images/`` or ``test_images/`` (the challenge layout)."""
    path = Path(path)
    return path.is_dir() and ((path / TRAIN_IMAGES).is_dir() or (path / TEST_IMAGES).is_dir())


@dataclass
class ChallengeDataset:
    """An opened challenge dataset folder; ids are strings in a stable natural order."""

    root: Path
    train_ids: list[str]
    test_ids: list[str]
    _scrolls: dict[str, str | None] = field(default_factory=dict, repr=False)
    _images: dict[str, Path] = field(default_factory=dict, repr=False)
    _labels: dict[str, Path] = field(default_factory=dict, repr=False)
    _test_images: dict[str, Path] = field(default_factory=dict, repr=False)
    _csv_of: dict[str, Path] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> ChallengeDataset:
        """Index a dataset folder (reads only the csvs and directory listings, no volume data)."""
        root = Path(path)
        if not is_dataset_folder(root):
            expected = f"{TRAIN_IMAGES}/ or {TEST_IMAGES}/"
            raise DatasetError(f"{root}: not a challenge dataset folder (no {expected})")
        images, labels = _tiffs_by_id(root / TRAIN_IMAGES), _tiffs_by_id(root / TRAIN_LABELS)
        test_images = _tiffs_by_id(root / TEST_IMAGES)
        scrolls: dict[str, str | None] = {}
        csv_of: dict[str, Path] = {}
        id_lists = []
        for csv_name, files in ((TRAIN_CSV, images), (TEST_CSV, test_images)):
            csv_path = root / csv_name
            if csv_path.is_file():
                rows = _read_csv(csv_path)
                scrolls.update(rows)
                csv_of.update(dict.fromkeys(rows, csv_path))
                id_lists.append(sorted(rows, key=_sort_key))
            else:
                id_lists.append(sorted(files, key=_sort_key))
        return cls(root, id_lists[0], id_lists[1], scrolls, images, labels, test_images, csv_of)

    @property
    def ids(self) -> list[str]:
        """All ids, training first, each once."""
        return list(dict.fromkeys([*self.train_ids, *self.test_ids]))

    def is_train(self, volume_id: str) -> bool:
        return volume_id in self.train_ids

    def _check_known(self, volume_id: str) -> None:
        if volume_id not in self.train_ids and volume_id not in self.test_ids:
            raise DatasetError(f"{self.root}: unknown id {volume_id!r}")

    def image_path(self, volume_id: str) -> Path:
        """Path of the image of ``volume_id`` (train or test), whether or not the file exists."""
        self._check_known(volume_id)
        if volume_id in self.train_ids:
            return self._images.get(volume_id, self.root / TRAIN_IMAGES / f"{volume_id}.tif")
        return self._test_images.get(volume_id, self.root / TEST_IMAGES / f"{volume_id}.tif")

    def label_path(self, volume_id: str) -> Path | None:
        """Path of the label volume of a training id; None for test ids."""
        self._check_known(volume_id)
        if volume_id not in self.train_ids:
            return None
        return self._labels.get(volume_id, self.root / TRAIN_LABELS / f"{volume_id}.tif")

    def scroll_id(self, volume_id: str) -> str | None:
        """The scroll an id comes from (from the csv), None when unknown."""
        self._check_known(volume_id)
        return self._scrolls.get(volume_id)

    def scrolls(self) -> dict[str, int]:
        """Number of volumes per scroll id (ids without a scroll are counted under ``"?"``)."""
        counts: dict[str, int] = {}
        for volume_id in self.ids:
            key = self._scrolls.get(volume_id) or "?"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    def problems(self) -> list[str]:
        """Every inconsistency found, one message per problem naming the file."""
        found: list[str] = []
        for volume_id in self.train_ids:
            source = self._csv_of.get(volume_id)
            where = f" (listed in {source})" if source else ""
            image = self.image_path(volume_id)
            if not image.is_file():
                found.append(f"{image}: missing image for id {volume_id!r}{where}")
            label = self.label_path(volume_id)
            if (self.root / TRAIN_LABELS).is_dir() and label is not None and not label.is_file():
                found.append(f"{label}: missing label for id {volume_id!r}{where}")
        for volume_id in self.test_ids:
            image = self.image_path(volume_id)
            if not image.is_file():
                source = self._csv_of.get(volume_id)
                found.append(f"{image}: missing test image for id {volume_id!r} (listed in {source})")
        for volume_id, label in sorted(self._labels.items(), key=lambda item: _sort_key(item[0])):
            if volume_id not in self._images and volume_id not in self.train_ids:
                expected = self.root / TRAIN_IMAGES / label.name
                found.append(f"{label}: label has no image (expected {expected})")
        return found

    def validate(self) -> None:
        """Raise DatasetError listing every missing file (ids in a csv without file, labels without image)."""
        found = self.problems()
        if found:
            shown = found[:20] + ([f"... and {len(found) - 20} more"] if len(found) > 20 else [])
            raise DatasetError(f"{self.root}: {len(found)} problem(s):\n  " + "\n  ".join(shown))

    def summary(self) -> dict[str, object]:
        """JSON-ready overview: counts of train/test ids, labelled ids, and volumes per scroll."""
        return {
            "path": str(self.root),
            "train": len(self.train_ids),
            "test": len(self.test_ids),
            "labelled": sum(1 for i in self.train_ids if i in self._labels),
            "scrolls": self.scrolls(),
        }


def pair_ids(images: Iterable[str], labels: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """Split ids into (paired, image only, label only), each in the stable natural order."""
    image_set, label_set = set(images), set(labels)
    paired, image_only, label_only = image_set & label_set, image_set - label_set, label_set - image_set
    return (
        sorted(paired, key=_sort_key),
        sorted(image_only, key=_sort_key),
        sorted(label_only, key=_sort_key),
    )
