"""One proofreading session: the edited labels of a box, the accepted baseline and where saves go.

The session's ``labels`` array is what the viewer paints into (the whole volume, or an in-memory
crop of a volume too large to paint). ``target`` is the original label file whose family receives
the versions and the autosave (it need not exist: e.g. a test volume without labels). Every save
works on a snapshot, so painting can go on while a save runs in the background.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeError
from ..progress import Progress
from .accept import Accepted
from .autosave import Autosave, write_autosave
from .diff import label_diff
from .naming import autosave_path, split_name
from .region import Box, box_origin, box_shape, format_box, is_full
from .save import iter_save_version

SUPPORTED_EXTENSIONS = (".tif", ".tiff", ".zarr", ".ome.zarr")


def check_target(target: str | Path) -> Path:
    """The target (original labels path) if versions can be written next to it, else ``VolumeError``."""
    target = Path(target)
    if split_name(target)[1].lower() not in SUPPORTED_EXTENSIONS:
        raise VolumeError(target, "corrected labels are saved as .tif/.tiff or .zarr; choose such a path")
    if not target.parent.is_dir():
        raise VolumeError(target, "folder does not exist")
    return target


@dataclass
class EditSession:
    """Edited labels of ``box`` of a volume of ``full_shape``, saved as versions of ``target``."""

    target: Path
    full_shape: tuple[int, int, int]
    box: Box
    labels: np.ndarray
    baseline: np.ndarray
    probability: np.ndarray | None = None
    versions: list[Path] = field(default_factory=list)

    @classmethod
    def from_accepted(
        cls, accepted: Accepted, target: str | Path, full_shape: tuple[int, ...]
    ) -> EditSession:
        return cls(
            target=check_target(target),
            full_shape=tuple(int(n) for n in full_shape),  # type: ignore[arg-type]
            box=accepted.box,
            labels=accepted.labels,
            baseline=accepted.labels.copy(),
            probability=accepted.probability,
        )

    @classmethod
    def from_autosave(cls, autosave: Autosave, target: str | Path | None = None) -> EditSession:
        """Resume from an autosave (its baseline, else the restored labels, become the diff reference)."""
        baseline = autosave.baseline if autosave.baseline is not None else autosave.data.copy()
        return cls(
            target=check_target(target if target is not None else autosave.original),
            full_shape=autosave.full_shape,
            box=autosave.box,
            labels=autosave.data.copy(),
            baseline=baseline,
        )

    @property
    def whole(self) -> bool:
        return is_full(self.box, self.full_shape)

    @property
    def origin(self) -> tuple[int, int, int]:
        return box_origin(self.box)

    @property
    def autosave_path(self) -> Path:
        return autosave_path(self.target)

    def describe(self) -> str:
        region = "whole volume" if self.whole else f"crop {format_box(self.box)}"
        return f"{region} {box_shape(self.box)} of {self.full_shape} → versions of {self.target.name}"

    def iter_save(self, labels: np.ndarray | None = None, **kwargs: Any) -> Generator[Progress, None, Path]:
        """Job: save a snapshot of the labels as the next version; returns its path. ``kwargs``: the
        ``spatial`` and ``zarr_format`` of :func:`.save.iter_save_version`."""
        snapshot = np.array(self.labels if labels is None else labels, dtype=np.uint8, copy=True)
        path = yield from iter_save_version(
            self.target, snapshot, box=None if self.whole else self.box, full_shape=self.full_shape, **kwargs
        )
        self.versions.append(path)
        return path

    def autosave(
        self, labels: np.ndarray | None = None, generation: int | None = None, **kwargs: Any
    ) -> Path | None:
        """Write the autosave file (atomic) with the labels and the baseline; None when skipped
        because a newer autosave (larger ``generation``, see :func:`.autosave.next_generation`) of
        the same file started or is on disk."""
        return write_autosave(
            self.target,
            self.labels if labels is None else labels,
            box=self.box,
            full_shape=self.full_shape,
            baseline=self.baseline,
            generation=generation,
            **kwargs,
        )

    def diff(self, labels: np.ndarray | None = None) -> np.ndarray:
        return label_diff(self.baseline, self.labels if labels is None else labels)
