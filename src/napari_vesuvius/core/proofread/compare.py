"""A fair old-vs-fine-tuned comparison: both models scored on labelled volumes the fine-tuning never saw.

Scoring the two models against the corrected labels is not a comparison: those labels started as the old
model's own output (the old model "wins" by construction) and the new model was trained on them (a fit,
not an estimate). :func:`held_out_volumes` therefore looks for labelled volumes outside the fine-tuning's
training set, in this order:

1. the run's own validation volumes (ids in ``val_ids``, held out from training);
2. the other labelled volumes of the dataset folders the corrected images come from (a challenge folder's
   ``train_images/`` + ``train_labels/``, or ``images/`` + ``labels/``) and of the extra training folders,
   when the fine-tuning did not train on them.

The old model may have been trained on volumes of the second kind in its own training, which can only
favour it; the note says so. :func:`iter_fair_compare` predicts each volume (a central crop of at most
``max_edge`` voxels per axis, with the model's context around it) with both models, post-processes both
with the same settings, and scores them against the real labels. With no such volume it says plainly that
no fair comparison is possible and names no winner. Qt-free; runs in a worker.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VesuviusError
from ..progress import Progress
from .finetune import _same_file

#: at most this many held-out volumes are predicted (each twice): a comparison takes minutes, not hours
MAX_VOLUMES = 3
#: edge of the central crop predicted and scored per volume (voxels, per axis)
MAX_EDGE = 160
NO_FAIR_COMPARISON = (
    "no fair comparison possible: every labelled volume known here was trained on in this fine-tuning "
    "(add a training data folder with other labelled volumes, or keep some of it for validation)"
)


@dataclass(frozen=True)
class HeldOutVolume:
    """A labelled volume the fine-tuning did not train on, and why it counts as held out."""

    id: str
    image: Path
    label: Path
    why: str


@dataclass
class Comparison:
    """Scores of the old and the fine-tuned model on held-out volumes (empty: no fair comparison)."""

    volumes: list[HeldOutVolume] = field(default_factory=list)
    old: list[Any] = field(default_factory=list)  # ScoreResult per volume
    new: list[Any] = field(default_factory=list)
    note: str = NO_FAIR_COMPARISON

    @property
    def fair(self) -> bool:
        """Whether any held-out volume was scored (else there is no winner to name)."""
        return bool(self.old)

    def mean(self, which: str) -> dict[str, Any]:
        """Mean score terms of ``"old"`` or ``"new"`` over the volumes."""
        from ..metric.score import ScoreSummary

        results = self.old if which == "old" else self.new
        return ScoreSummary([v.id for v in self.volumes[: len(results)]], list(results)).mean

    def verdict(self) -> str:
        """One line: the mean scores and which model is better, or why there is no comparison."""
        if not self.fair:
            return self.note
        old, new = self.mean("old")["score"], self.mean("new")["score"]
        better = "fine-tuned is better" if new > old else "old model is better" if old > new else "a tie"
        count = len(self.old)
        return f"held-out score: old {old:.4f} → fine-tuned {new:.4f} ({better}; {count} volume(s))"


def _dataset_root(image: Path) -> Path | None:
    """The training folder an image file sits in (``<root>/train_images/x.tif`` → ``<root>``)."""
    parent = Path(image).parent
    return parent.parent if parent.name in ("train_images", "images") else None


def held_out_volumes(
    config: Any, extra_folders: Sequence[str | Path] = (), max_volumes: int = MAX_VOLUMES
) -> list[HeldOutVolume]:
    """Labelled volumes the fine-tuning run ``config`` (a TrainConfig) does not train on (see module doc)."""
    from ..errors import DatasetError
    from ..training.data import collect_sources, sources_from_folder, split_sources

    sources = collect_sources(config.data, config.pairs)
    train, val, _ = split_sources(sources, config.val_fraction, config.seed, config.val_ids)
    trained = [s.image for s in train]

    def unseen(image: Path) -> bool:
        return not any(_same_file(image, other) for other in trained)

    found = [HeldOutVolume(s.id, s.image, s.label, "a validation volume of the run") for s in val]
    found = [v for v in found if unseen(v.image)]
    folders: list[Path] = []
    for candidate in [*(_dataset_root(image) for image in trained), *map(Path, extra_folders)]:
        if candidate is not None and not any(_same_file(candidate, f) for f in folders):
            folders.append(candidate)
    for folder in folders:
        try:
            others = sources_from_folder(folder)
        except DatasetError:
            continue  # not a training folder (a single volume's folder)
        for source in others:
            if unseen(source.image) and not any(_same_file(source.image, v.image) for v in found):
                why = f"not trained on, from {folder.name}/"
                found.append(HeldOutVolume(source.id, source.image, source.label, why))
    return found[: max(0, int(max_volumes))]


def central_box(shape: Sequence[int], max_edge: int = MAX_EDGE) -> tuple[slice, ...]:
    """The central crop of at most ``max_edge`` voxels per axis."""
    box = []
    for size in shape:
        edge = min(int(size), int(max_edge))
        start = (int(size) - edge) // 2
        box.append(slice(start, start + edge))
    return tuple(box)


def iter_fair_compare(
    old_model: str | Path,
    new_model: str | Path,
    volumes: Sequence[HeldOutVolume],
    postprocess: Any = None,
    *,
    device: str = "auto",
    max_edge: int = MAX_EDGE,
) -> Generator[Progress, None, Comparison]:
    """Job: predict each held-out volume with both models, post-process alike, score against its labels.

    A volume that cannot be read or scored is skipped and named in the note.
    """
    from ..postprocess import PostprocessConfig
    from ..volume.io import open_labels, open_volume
    from .finetune import iter_compare, iter_predict_region
    from .region import read_crop

    config = PostprocessConfig() if postprocess is None else postprocess
    comparison = Comparison()
    skipped: list[str] = []
    total = 3 * len(volumes)
    for index, volume in enumerate(volumes):
        step = 3 * index
        try:
            with open_volume(volume.image) as image, open_labels(volume.label, image.shape) as labels:
                box = central_box(image.shape, max_edge)
                yield Progress(step, total, f"{volume.id}: predicting with the old model")
                old = yield from iter_predict_region(old_model, image.data, box, device=device)
                yield Progress(step + 1, total, f"{volume.id}: predicting with the fine-tuned model")
                new = yield from iter_predict_region(new_model, image.data, box, device=device)
                yield Progress(step + 2, total, f"{volume.id}: scoring")
                crop = np.asarray(read_crop(image.data, box))
                truth = np.asarray(read_crop(labels.data, box))
            scan = crop > 0 if config.gate_to_scan else None
            scores = yield from iter_compare({"old": (old, True), "new": (new, True)}, truth, config, scan)
        except (VesuviusError, OSError, ValueError) as error:
            skipped.append(f"{volume.id} ({error})")
            continue
        comparison.volumes.append(volume)
        comparison.old.append(scores["old"])
        comparison.new.append(scores["new"])
    yield Progress(total, total, "compared")
    edge = f"central {max_edge}³ crop" if max_edge else "whole volume"
    if comparison.fair:
        ids = ", ".join(f"{v.id} ({v.why})" for v in comparison.volumes)
        comparison.note = (
            f"scored on {len(comparison.volumes)} labelled volume(s) this fine-tuning never trained on, "
            f"{edge} each: {ids}; the old model may have seen some in its own training"
        )
    if skipped:
        comparison.note += "; skipped: " + "; ".join(skipped)
    return comparison
