"""Helpers of the Train widget that do not touch Qt: layers saved as training data.

(Following a run — a run started by an earlier session, the progress line with rate and ETA — is
:mod:`._training_follower` and :mod:`napari_vesuvius.core.training.monitor`.)

Layers are saved in the run folder's ``data/`` in the challenge layout
(``data/train_images/<name>.tif`` + ``data/train_labels/<name>.tif``, ``<name>`` from the image layer),
so the run stays self-contained and resumable after napari is closed.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import DatasetError
from napari_vesuvius.core.labels import IGNORE
from napari_vesuvius.core.progress import Progress

DATA_DIR = "data"


def safe_name(name: str) -> str:
    """A file-name-safe version of a layer name (``[A-Za-z0-9._-]``, never empty or hidden)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "volume"
    return cleaned[:80]


def pair_paths(run_dir: Path, names: Sequence[str]) -> list[tuple[Path, Path]]:
    """Where each image/label pair is saved (``data/train_images|train_labels/<name>.tif``), unique."""
    data = run_dir / DATA_DIR
    used: set[str] = set()
    paths = []
    for name in names:
        base = stem = safe_name(name)
        count = 1
        while stem in used:
            count += 1
            stem = f"{base}_{count}"
        used.add(stem)
        paths.append((data / "train_images" / f"{stem}.tif", data / "train_labels" / f"{stem}.tif"))
    return paths


def check_pair(image_name: str, image: Any, label_name: str, label: Any) -> None:
    """Raise :class:`DatasetError` unless ``image`` and ``label`` are 3D volumes of one shape."""
    if len(image.shape) != 3:
        raise DatasetError(
            f"layer {image_name!r}: training needs a 3D volume, got shape {tuple(image.shape)}"
        )
    if tuple(label.shape) != tuple(image.shape):
        raise DatasetError(
            f"layer {label_name!r}: shape {tuple(label.shape)} differs from image layer {image_name!r} "
            f"{tuple(image.shape)}"
        )


def save_pairs_job(
    pairs: Sequence[tuple[str, Any, str, Any]], targets: Sequence[tuple[Path, Path]]
) -> Generator[Progress, None, list[tuple[Path, Path]]]:
    """Job: write ``(image name, image, label name, label)`` pairs to ``targets`` (atomic TIFFs).

    Labels must hold only 0 (background), 1 (surface) and 2 (ignore); they are stored as uint8.
    """
    from napari_vesuvius.core.volume.write import iter_write_volume

    total = 2 * len(pairs)
    for index, ((image_name, image, label_name, label), (image_path, label_path)) in enumerate(
        zip(pairs, targets, strict=True)
    ):
        check_pair(image_name, image, label_name, label)
        yield Progress(2 * index, total, f"checking {label_name}")
        low, high = np.min(label), np.max(label)
        low, high = int(np.asarray(low)), int(np.asarray(high))
        if low < 0 or high > IGNORE:
            raise DatasetError(
                f"layer {label_name!r}: labels must be 0 (background), 1 (surface) or {IGNORE} (ignore); "
                f"found values from {low} to {high}"
            )
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        yield Progress(2 * index, total, f"saving {image_name}")
        for _ in iter_write_volume(image_path, image):
            yield Progress(2 * index, total, f"saving {image_name}")
        for _ in iter_write_volume(label_path, label.astype(np.uint8, copy=False)):
            yield Progress(2 * index + 1, total, f"saving {label_name}")
    yield Progress(total, total, "data saved")
    return list(targets)
