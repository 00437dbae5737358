"""The challenge dataset folder: ``train_images/``, ``train_labels/``, ``test_images/`` and the csvs.

Images and labels are paired by id (``<id>.tif``). ``train.csv`` / ``test.csv`` (columns ``id, scroll_id``)
give the ids and their scroll; without csvs the ids come from the file names. Snapshot folders such as
``deprecated_train_images/`` are ignored, and so are corrected label versions (``<id>.v001.tif``) and
autosaves (``<id>.autosave.tif``) written by proofreading.

Irregularities that do not stop the folder from being used are collected in
:attr:`ChallengeDataset.warnings` (and emitted as :class:`~napari_vesuvius.core.errors.VesuviusWarning`,
which the CLI prints on stderr): ids a csv lists without a volume file, volume files a csv does not list
(ignored), ids repeated in a csv (used once), ids in both csvs, and two files for one id. Missing files
of listed ids stay in the id lists: :meth:`ChallengeDataset.problems` reports them, and each command
decides (``submit`` refuses them, ``predict`` and ``train`` skip ids without any file, saying so).
Checking the volumes themselves (headers, label values, NaN) is :mod:`.dataset_check`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_vesuvius.core.volume.io import TIFF_SUFFIXES

from .errors import DatasetError, warn_user
from .proofread.naming import is_derived_name

TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES = "train_images", "train_labels", "test_images"
TRAIN_CSV, TEST_CSV = "train.csv", "test.csv"


def _sort_key(volume_id: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order first, then the others alphabetically (a stable, natural order)."""
    return (0, int(volume_id)) if volume_id.isdigit() else (1, volume_id)


def _tiffs_by_id(folder: Path, warnings: list[str] | None = None) -> dict[str, Path]:
    """``id -> file`` of the volumes in ``folder``; a second file for one id (``5.tif`` and ``5.tiff``)
    is ignored, with a warning appended to ``warnings``."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in TIFF_SUFFIXES and not path.name.startswith("."):
            if is_derived_name(path.name):  # a corrected version or an autosave, not a volume id
                continue
            if path.stem in found:
                if warnings is not None:
                    warnings.append(
                        f"{folder}: two files for id {path.stem!r} ({found[path.stem].name}, {path.name}): "
                        f"using {found[path.stem].name}, ignoring {path.name}"
                    )
                continue
            found[path.stem] = path
    return found


def _id_list(ids: Iterable[str], limit: int = 20) -> str:
    """``a, b, c`` (sorted naturally), the first ``limit`` ids and how many more."""
    ordered = sorted(ids, key=_sort_key)
    shown = ", ".join(ordered[:limit])
    return shown + (f" ... and {len(ordered) - limit} more" if len(ordered) > limit else "")


def _read_csv(path: Path, warnings: list[str]) -> dict[str, str | None]:
    """``id -> scroll_id`` from a challenge csv (scroll_id None when the column is absent).

    An id listed more than once with the same scroll is used once (a warning says so); listed with
    different scrolls it is refused: the scroll decides the validation split, and there is no way to
    tell which row is right.
    """
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "id" not in columns:
                listed = ", ".join(columns) or "none"
                raise DatasetError(f"{path}: csv has no 'id' column (columns: {listed})")
            rows: dict[str, str | None] = {}
            lines: dict[str, list[int]] = {}
            for line, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                volume_id = row.get("id")
                if not volume_id:
                    raise DatasetError(f"{path}: line {line} has an empty id")
                scroll = row.get("scroll_id") or None
                if volume_id in rows and rows[volume_id] != scroll:
                    raise DatasetError(
                        f"{path}: id {volume_id!r} is listed with different scroll_id values "
                        f"({rows[volume_id]} on line {lines[volume_id][0]}, {scroll} on line {line})"
                    )
                rows.setdefault(volume_id, scroll)
                lines.setdefault(volume_id, []).append(line)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{path}: cannot read csv ({error})") from error
    repeated = {volume_id: found for volume_id, found in lines.items() if len(found) > 1}
    if repeated:
        where = "; ".join(
            f"{volume_id!r} on lines {', '.join(str(n) for n in found)}"
            for volume_id, found in sorted(repeated.items(), key=lambda item: _sort_key(item[0]))[:20]
        )
        more = f" ... and {len(repeated) - 20} more" if len(repeated) > 20 else ""
        warnings.append(f"{path}: {len(repeated)} duplicate id(s), each used once: {where}{more}")
    return rows


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
    #: irregularities that do not stop the folder from being used (see the module docstring)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path) -> ChallengeDataset:
        """Index a dataset folder (reads only the csvs and directory listings, no volume data).

        Irregularities are collected in :attr:`warnings` and emitted as VesuviusWarnings.
        """
        root = Path(path)
        if not is_dataset_folder(root):
            expected = f"{TRAIN_IMAGES}/ or {TEST_IMAGES}/"
            raise DatasetError(f"{root}: not a challenge dataset folder (no {expected})")
        warnings: list[str] = []
        images = _tiffs_by_id(root / TRAIN_IMAGES, warnings)
        labels = _tiffs_by_id(root / TRAIN_LABELS, warnings)
        test_images = _tiffs_by_id(root / TEST_IMAGES, warnings)
        scrolls: dict[str, str | None] = {}
        csv_of: dict[str, Path] = {}
        id_lists = []
        listings = ((TRAIN_CSV, TRAIN_IMAGES, images), (TEST_CSV, TEST_IMAGES, test_images))
        for csv_name, folder, files in listings:
            csv_path = root / csv_name
            if csv_path.is_file():
                rows = _read_csv(csv_path, warnings)
                for volume_id in rows:
                    scrolls.setdefault(volume_id, rows[volume_id])
                    csv_of.setdefault(volume_id, csv_path)
                id_lists.append(sorted(rows, key=_sort_key))
                absent = [i for i in rows if i not in files]
                if absent:
                    warnings.append(
                        f"{csv_path}: {len(absent)} listed id(s) have no volume in {folder}/: "
                        f"{_id_list(absent)}"
                    )
                unlisted = [i for i in files if i not in rows]
                if unlisted:
                    warnings.append(
                        f"{root / folder}: {len(unlisted)} volume(s) not listed in {csv_name} are ignored: "
                        f"{_id_list(unlisted)}"
                    )
            else:
                id_lists.append(sorted(files, key=_sort_key))
        both = set(id_lists[0]) & set(id_lists[1])
        if both:
            warnings.append(
                f"{root}: {len(both)} id(s) listed as both training and test volumes "
                f"(used as training ids): {_id_list(both)}"
            )
        dataset = cls(root, id_lists[0], id_lists[1], scrolls, images, labels, test_images, csv_of, warnings)
        for message in warnings:
            warn_user(None, message)
        return dataset

    def missing_train_ids(self) -> list[str]:
        """Training ids listed in ``train.csv`` with neither image nor label file (absent volumes)."""
        return [i for i in self.train_ids if i not in self._images and i not in self._labels]

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
        """Raise DatasetError listing every missing file (ids in a csv without file, labels without image).

        Only the folder listing: :func:`~napari_vesuvius.core.dataset_check.validate_dataset` checks the
        volumes too.
        """
        from .dataset_check import format_problems

        found = self.problems()
        if found:
            raise DatasetError(format_problems(self.root, found))

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
