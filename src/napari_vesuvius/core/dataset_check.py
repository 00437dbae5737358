"""Check every volume of a dataset before using it, and list every bad file at once.

Two passes, so a bad header is found in seconds however large the dataset is:

1. **headers** of every image and label, no voxel data read: readable, 3D (:func:`open_volume`),
   image dtype numeric (integer or float), label dtype integer or bool (float labels are refused, not
   rounded), label shape equal to its image's shape;
2. **values**, streamed chunk by chunk (one chunk of the file in memory at a time): labels hold only
   0, 1 and 2 (:func:`iter_label_counts`) and not only 2 (nothing to train on); float images hold no
   NaN or ±Inf. Integer images cannot hold either, so they need no value pass.

A file with a header problem gets no value pass (one problem per file). Nothing raises before every
file was looked at: :func:`iter_check_volumes` returns the problems, the ``validate`` variants raise
one :class:`DatasetCheckError` listing them all (``path: problem`` each).

Pass 2 reads all label data (the challenge's 806 labels: about 26 GB decoded). ``cache`` names a JSON
file remembering the files whose values passed, by path, size and modification time: a run folder
keeps one, so a resumed run does not read an unchanged dataset again. Zarr folders are not cached
(a rewritten chunk does not change the folder's time).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.volume.io import iter_label_counts, open_volume

from .errors import DatasetError, VesuviusError
from .labels import IGNORE
from .progress import Job, Progress, run_job, scaled
from .value_checks import label_values_problem

#: Bump when the rules change: cached passes of older rules are checked again.
CHECK_VERSION = 1
#: progress units of one volume's value pass (its chunks are mapped onto them)
_VALUE_UNITS = 100


@dataclass(frozen=True)
class CheckItem:
    """One volume to check: an image and, for training data, its label (None for test images)."""

    image: Path
    label: Path | None = None


class DatasetCheckError(DatasetError):
    """Bad files in a dataset; ``problems`` holds one ``path: problem`` line per bad file."""

    def __init__(self, where: str | Path | None, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(format_problems(where, self.problems))


def format_problems(where: str | Path | None, problems: Sequence[str]) -> str:
    """One line for one problem (it names its file); else a count line and one indented line each."""
    if len(problems) == 1:
        return problems[0]
    head = f"{where}: " if where is not None else ""
    return f"{head}{len(problems)} problem(s):\n  " + "\n  ".join(problems)


@dataclass
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype


def _read_header(path: Path, role: str, problems: dict[Path, str]) -> _Header | None:
    """Shape and dtype of ``path`` (no voxel data read); a problem is recorded instead of raised."""
    try:
        with open_volume(path) as volume:
            header = _Header(volume.shape, np.dtype(volume.dtype))
    except VesuviusError as error:
        problems[path] = _problem_text(path, error)
        return None
    except OSError as error:
        problems[path] = f"{path}: cannot read {role} ({error.strerror or error})"
        return None
    kind = header.dtype.kind
    if role == "image" and kind not in "uif":
        problems[path] = (
            f"{path}: image dtype {header.dtype} is not a CT intensity type (expected uint8, uint16 or float)"
        )
        return None
    if role == "label" and kind not in "biu":
        problems[path] = (
            f"{path}: label dtype {header.dtype}: labels must be integers (uint8) with values 0, 1, 2 "
            "(float labels are refused, not rounded)"
        )
        return None
    return header


def _problem_text(path: Path, error: Exception) -> str:
    message = str(error)
    return message if message.startswith(str(path)) else f"{path}: {message}"


# ----------------------------------------------------------------------------------------- the cache
def _stamp(path: Path, role: str) -> list[Any] | None:
    """``[role, size, mtime_ns]`` of a regular file; None for folders (zarr: not cached)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [role, stat.st_size, stat.st_mtime_ns] if path.is_file() else None


def _load_cache(cache: Path | None) -> dict[str, Any]:
    if cache is None:
        return {}
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CHECK_VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _save_cache(cache: Path | None, passed: dict[str, Any]) -> None:
    if cache is None:
        return
    from .atomic import atomic_write_text

    with contextlib.suppress(OSError):  # only saves time: a read-only run folder must not stop the run
        atomic_write_text(cache, json.dumps({"version": CHECK_VERSION, "files": passed}, indent=1) + "\n")


# ------------------------------------------------------------------------------------ value passes
def _iter_label_values(path: Path) -> Job[str | None]:
    """Job: the problem of a label volume's values (None: fine), chunk by chunk."""
    with open_volume(path) as volume:
        counts = yield from iter_label_counts(volume.data)
    problem = label_values_problem(counts)
    if problem is not None:
        return f"{path}: {problem}"
    if counts.get(0, 0) + counts.get(1, 0) == 0 and counts.get(IGNORE, 0) > 0:
        return f"{path}: every voxel is ignore (2): nothing to train on"
    return None


def _iter_image_values(path: Path) -> Job[str | None]:
    """Job: the problem of a float image's values (NaN/Inf; None: fine), chunk by chunk."""
    nan = inf = 0
    with open_volume(path) as volume:
        blocks = volume.data.to_delayed().ravel()
        for index, block in enumerate(blocks):
            data = np.asarray(block.compute(scheduler="synchronous"))
            finite = np.isfinite(data)
            if not finite.all():
                nans = int(np.count_nonzero(np.isnan(data)))
                nan, inf = nan + nans, inf + int(data.size - np.count_nonzero(finite)) - nans
            yield Progress(index + 1, len(blocks), "looking for NaN/Inf")
    if nan or inf:
        found = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "±Inf")) if n)
        return (
            f"{path}: image holds {found} voxel(s); CT volumes with NaN/Inf are refused "
            "(replace them, e.g. with 0, and save again)"
        )
    return None


# ------------------------------------------------------------------------------------------ checks
def iter_check_volumes(
    items: Iterable[CheckItem], *, values: bool = True, cache: str | Path | None = None
) -> Job[list[str]]:
    """Job: check every item (module docstring); returns one ``path: problem`` line per bad file.

    ``values`` False: headers only (no voxel data read).
    """
    items = list(dict.fromkeys(items))  # the same pair given twice is checked once
    cache_path = None if cache is None else Path(cache)
    problems: dict[Path, str] = {}
    to_scan: list[tuple[Path, str]] = []
    total = len(items)
    for index, item in enumerate(items):
        yield Progress(index, total, f"checking headers: {item.image.name}")
        image = _read_header(item.image, "image", problems)
        if item.label is not None:
            label = _read_header(item.label, "label", problems)
            if label is not None and image is not None and label.shape != image.shape:
                problems[item.label] = (
                    f"{item.label}: label shape {label.shape} does not match the shape {image.shape} "
                    f"of its image {item.image}"
                )
                label = None
            if label is not None:
                to_scan.append((item.label, "label"))
        if image is not None and image.dtype.kind == "f":
            to_scan.append((item.image, "image"))
    to_scan = list(dict.fromkeys(to_scan))
    order = {path: i for i, path in enumerate(p for item in items for p in (item.image, item.label))}
    if not values:
        yield Progress(total, total, "headers checked")
        return [problems[path] for path in sorted(problems, key=order.__getitem__)]
    cached, passed = _load_cache(cache_path), {}
    total = len(items) + _VALUE_UNITS * len(to_scan)
    for index, (path, role) in enumerate(to_scan):
        key, stamp = str(path.resolve()), _stamp(path, role)
        if stamp is not None and cached.get(key) == stamp:
            passed[key] = stamp
            continue
        start = len(items) + _VALUE_UNITS * index
        prefix = f"checking values {index + 1}/{len(to_scan)} {path.name}: "
        scan = _iter_label_values(path) if role == "label" else _iter_image_values(path)
        try:
            problem = yield from scaled(scan, start, _VALUE_UNITS, total, prefix)
        except VesuviusError as error:  # a chunk that cannot be decoded (truncated file ...)
            problem = _problem_text(path, error)
        if problem is None:
            if stamp is not None:
                passed[key] = stamp
        else:
            problems[path] = problem
    if cache_path is not None:
        _save_cache(cache_path, passed)
    yield Progress(total, total, f"{len(items)} volume(s) checked, {len(problems)} bad file(s)")
    return [problems[path] for path in sorted(problems, key=order.__getitem__)]  # in the items' order


def iter_validate_volumes(
    items: Iterable[CheckItem],
    where: str | Path | None = None,
    *,
    values: bool = True,
    cache: str | Path | None = None,
) -> Job[None]:
    """Job: :func:`iter_check_volumes`, raising :class:`DatasetCheckError` (naming ``where``) on problems."""
    problems = yield from iter_check_volumes(items, values=values, cache=cache)
    if problems:
        raise DatasetCheckError(where, problems)


def dataset_items(dataset: Any) -> list[CheckItem]:
    """What :func:`iter_check_dataset` checks: every present training pair, then every test image."""
    items = []
    for volume_id in dataset.train_ids:
        image, label = dataset.image_path(volume_id), dataset.label_path(volume_id)
        if image.is_file():
            items.append(CheckItem(image, label if label is not None and label.is_file() else None))
    items += [CheckItem(dataset.image_path(i)) for i in dataset.test_ids if dataset.image_path(i).is_file()]
    return items


def iter_check_dataset(path: str | Path, *, values: bool = True) -> Job[tuple[Any, list[str]]]:
    """Job: ``(dataset, problems)`` of a challenge dataset folder: its missing files
    (:meth:`~.dataset.ChallengeDataset.problems`) and the bad volumes of :func:`iter_check_volumes`."""
    from .dataset import ChallengeDataset

    dataset = ChallengeDataset.open(path)
    problems = dataset.problems()
    problems += yield from iter_check_volumes(dataset_items(dataset), values=values)
    return dataset, problems


def iter_validate_dataset(path: str | Path, *, values: bool = True) -> Job[Any]:
    """Job: check a whole dataset folder; returns the opened dataset or raises one DatasetCheckError."""
    dataset, problems = yield from iter_check_dataset(path, values=values)
    if problems:
        raise DatasetCheckError(dataset.root, problems)
    return dataset


def validate_dataset(path: str | Path, *, values: bool = True) -> Any:
    """:func:`iter_validate_dataset` run to the end (no progress display)."""
    return run_job(iter_validate_dataset(path, values=values))
