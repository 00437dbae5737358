"""Helpers of the Train widget that do not touch Qt: layers saved as training data, a run started by an
earlier napari session, and the progress line (rate and ETA).

Layers are saved in the run folder's ``data/`` in the challenge layout
(``data/train_images/<name>.tif`` + ``data/train_labels/<name>.tif``, ``<name>`` from the image layer),
so the run stays self-contained and resumable after napari is closed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import DatasetError
from napari_vesuvius.core.labels import IGNORE
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.training.process import running_pid

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


class AttachedRun:
    """A training process started by an earlier napari session, known only by its pid (POSIX).

    Offers the part of :class:`~napari_vesuvius.core.training.process.TrainingProcess` the widget uses.
    """

    def __init__(self, run_dir: Path, pid: int) -> None:
        self.run_dir, self.pid = run_dir, pid

    @property
    def running(self) -> bool:
        return running_pid(self.run_dir) == self.pid

    def poll(self) -> int | None:
        """None while it runs; the exit code is unknown to us (the metrics log says how it ended)."""
        return None if self.running else -1

    def cancel(self) -> None:
        """SIGTERM: the run saves a checkpoint and its state, then exits."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        """Signal the run only while ``train.pid`` still identifies it (pid and start time): never a
        process that reused the pid."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):  # it exited in between
                os.kill(self.pid, signum)

    def log_tail(self, max_chars: int = 4000) -> str:
        from napari_vesuvius.core.training.rundir import TRAIN_LOG

        try:
            return (self.run_dir / TRAIN_LOG).read_bytes()[-max_chars:].decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


def recent_rate(records: Sequence[dict[str, Any]], window_s: float = 120.0) -> float | None:
    """Iterations per second over the last ``window_s`` seconds of the current session's records."""
    points: list[tuple[float, int]] = []
    for record in records:
        if record.get("event") == "started":
            points = []  # a resumed session restarts the clock
        elapsed, iteration = record.get("elapsed"), record.get("iteration")
        timed = isinstance(elapsed, int | float) and isinstance(iteration, int)
        if record.get("event") in ("progress", "epoch_end") and timed:
            points.append((float(elapsed), iteration))
    if len(points) < 2:
        return None
    end_time, end_iteration = points[-1]
    start_time, start_iteration = next(
        ((t, i) for t, i in points if end_time - t <= window_s and t < end_time), points[-2]
    )
    if end_time <= start_time or end_iteration <= start_iteration:
        return None
    return (end_iteration - start_iteration) / (end_time - start_time)


def format_duration(seconds: float | None) -> str:
    """``1:02:03``, ``4:05`` or ``?``."""
    if seconds is None or not np.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
