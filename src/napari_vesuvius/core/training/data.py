"""Training data: where the volumes come from and the train/validation split.

Sources, in the order they are tried for a ``--data`` folder:

* a challenge folder (``train_images/`` + ``train_labels/``, optional ``train.csv`` with ``scroll_id``);
* a run folder whose ``data/`` is such a folder (the Train widget saves layers there as
  ``data/train_images/<id>.tif`` + ``data/train_labels/<id>.tif``);
* a folder with ``images/`` + ``labels/`` holding ``<id>.tif``/``.tiff``/``.zarr`` pairs;

plus explicit image/label pairs. Volumes are read into RAM, lazily, the first time a patch is drawn
from them (see :mod:`.sampler`): challenge volumes are at most 384³ uint8 (57 MB), so RAM needs about
``(1 + 1) × volume size`` per volume used. Validation holds out whole scrolls when the csv names several
scrolls, else a seeded random fraction of the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_vesuvius.core.volume.io import TIFF_SUFFIXES

from ..dataset import ChallengeDataset, is_dataset_folder
from ..dataset_check import format_problems
from ..errors import DatasetError
from ..proofread.naming import is_derived_name


@dataclass(frozen=True)
class VolumeSource:
    """One labelled volume: id, image and label paths, and its scroll when known."""

    id: str
    image: Path
    label: Path
    scroll: str | None = None


def _volumes_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or is_derived_name(path.name):  # hidden, or a proofread version
            continue
        is_tiff = path.is_file() and path.suffix.lower() in TIFF_SUFFIXES
        if is_tiff or (path.is_dir() and path.suffix == ".zarr"):
            found.setdefault(path.stem, path)
    return found


def _from_challenge(root: Path) -> list[VolumeSource]:
    """Training pairs of a challenge folder; ids listed in train.csv with no file at all are skipped
    (the dataset's warning names them), an image without its label (or the reverse) is an error."""
    dataset = ChallengeDataset.open(root)
    absent = set(dataset.missing_train_ids())
    sources, problems = [], []
    for volume_id in dataset.train_ids:
        if volume_id in absent:
            continue
        image, label = dataset.image_path(volume_id), dataset.label_path(volume_id)
        if label is None or not label.is_file():
            problems.append(f"{label or root}: missing label for training id {volume_id!r}")
        if not image.is_file():
            problems.append(f"{image}: missing image for training id {volume_id!r}")
        if label is not None and label.is_file() and image.is_file():
            sources.append(VolumeSource(volume_id, image, label, dataset.scroll_id(volume_id)))
    if problems:
        raise DatasetError(format_problems(root, problems))
    if not sources:
        why = "train_images/ is empty"
        if absent:
            why = f"none of the {len(absent)} id(s) in train.csv has files"
        raise DatasetError(f"{root}: no training volumes ({why})")
    return sources


def _from_image_label_folders(root: Path) -> list[VolumeSource]:
    images, labels = _volumes_in(root / "images"), _volumes_in(root / "labels")
    missing = sorted(set(images) - set(labels))
    if missing:
        raise DatasetError(f"{root / 'labels'}: no label for image(s) {', '.join(missing[:10])}")
    extra = sorted(set(labels) - set(images))
    if extra:
        raise DatasetError(f"{root / 'images'}: no image for label(s) {', '.join(extra[:10])}")
    if not images:
        raise DatasetError(f"{root}: images/ holds no .tif/.tiff/.zarr volumes")
    return [VolumeSource(key, images[key], labels[key]) for key in images]


def sources_from_folder(path: str | Path) -> list[VolumeSource]:
    """The labelled volumes of a challenge folder, a run folder (``data/``) or an images/labels folder."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: training data folder not found")
    if is_dataset_folder(root):
        return _from_challenge(root)
    if is_dataset_folder(root / "data"):
        return _from_challenge(root / "data")
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return _from_image_label_folders(root)
    raise DatasetError(
        f"{root}: not training data (expected train_images/ + train_labels/, data/ of a run folder, "
        "or images/ + labels/)"
    )


def collect_sources(data: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[VolumeSource]:
    """All sources of a run: every data folder, then the explicit pairs; ids are made unique."""
    sources: list[VolumeSource] = []
    for folder in data:
        sources.extend(sources_from_folder(folder))
    for image, label in pairs:
        for path in (Path(image), Path(label)):
            if not path.exists():
                raise DatasetError(f"{path}: file not found")
        sources.append(VolumeSource(Path(image).stem, Path(image), Path(label)))
    seen: dict[str, int] = {}
    unique = []
    for source in sources:
        count = seen.get(source.id, 0)
        seen[source.id] = count + 1
        new_id = source.id if count == 0 else f"{source.id}#{count}"
        unique.append(VolumeSource(new_id, source.image, source.label, source.scroll))
    if not unique:
        raise DatasetError("no training volumes given")
    return unique


def split_sources(
    sources: Sequence[VolumeSource], val_fraction: float, seed: int, val_ids: Sequence[str] = ()
) -> tuple[list[VolumeSource], list[VolumeSource], str]:
    """``(train, validation, note)``: explicit ids, else held-out scrolls, else a random fraction.

    With a single volume (or ``val_fraction`` 0) the validation list is empty and the note says so.
    """
    sources = list(sources)
    if val_ids:
        known = {s.id for s in sources}
        unknown = [v for v in val_ids if v not in known]
        if unknown:
            raise DatasetError(f"validation id(s) not in the training data: {', '.join(unknown)}")
        val = [s for s in sources if s.id in set(val_ids)]
        train = [s for s in sources if s.id not in set(val_ids)]
        if not train:
            raise DatasetError("every volume is a validation volume: nothing left to train on")
        return train, val, f"validation: {len(val)} volume(s) given by id"
    if val_fraction <= 0 or len(sources) < 2:
        why = "val_fraction is 0" if val_fraction <= 0 else "only one volume"
        return sources, [], f"no held-out validation volume ({why}): validating on training volumes"
    rng = np.random.default_rng([int(seed), 7919])
    target = max(1, round(val_fraction * len(sources)))
    scrolls = sorted({s.scroll for s in sources if s.scroll is not None})
    if len(scrolls) > 1 and all(s.scroll is not None for s in sources):
        counts = {scroll: sum(s.scroll == scroll for s in sources) for scroll in scrolls}
        chosen: list[str] = []
        for scroll in [scrolls[i] for i in rng.permutation(len(scrolls))]:
            if sum(counts[c] for c in chosen) + counts[scroll] <= target and len(chosen) < len(scrolls) - 1:
                chosen.append(scroll)
        if not chosen:
            chosen = [min(scrolls, key=lambda scroll: (counts[scroll], scroll))]
        val = [s for s in sources if s.scroll in chosen]
        train = [s for s in sources if s.scroll not in chosen]
        return train, val, f"validation: scroll(s) {', '.join(chosen)} held out ({len(val)} volume(s))"
    picked = {int(i) for i in rng.permutation(len(sources))[: min(target, len(sources) - 1)]}
    val = [s for i, s in enumerate(sources) if i in picked]
    train = [s for i, s in enumerate(sources) if i not in picked]
    return train, val, f"validation: {len(val)} of {len(sources)} volume(s) held out at random"
