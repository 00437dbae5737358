"""Fine-tune the current model on corrected volumes, predict again and compare scores.

The training set is the corrected image/label pairs plus, optionally, the volumes of training data
folders (:func:`~napari_vesuvius.core.training.data.sources_from_folder`); a folder volume whose
image is one of the corrected ones is replaced by its corrected labels, never trained twice.
Corrected volumes are always trained on; validation holds out ``val_fraction`` of the *other*
volumes (whole scrolls when known), or validates on the training volumes when there are none.

Training runs through the training runner (:func:`~napari_vesuvius.core.training.runner.train`, or
the ``train`` CLI as a subprocess in the widget) with ``init`` = the current checkpoint and a
fine-tuning learning rate (:data:`FINETUNE_LR`, a tenth of the from-scratch default), so a few
corrected volumes adjust the model instead of overwriting it. Like every run, it first checks every
volume (:mod:`~napari_vesuvius.core.dataset_check`: a bad corrected label is refused before training,
with all bad files listed) and stops on a non-finite loss without replacing a good checkpoint
(:mod:`~napari_vesuvius.core.training.guard`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..progress import Progress
from .region import Box, box_shape, full_box, grow_box, read_crop

#: learning rates used when none is given: a tenth of training from scratch
FINETUNE_LR = {"sgd": 1e-3, "adamw": 1e-4}
#: folder of a run holding the corrected pairs written for it (crops, in-memory layers)
CORRECTED_DIR = "corrected"


@dataclass
class CorrectedVolume:
    """A saved correction: the version file, the region it covers and the image it belongs to."""

    name: str
    image: Any  # the whole image volume (lazy is fine: only the box is read)
    image_path: Path | None
    labels_path: Path
    box: Box
    whole: bool
    #: the family has an original label file, so the saved version is labelled outside the crop too
    has_original: bool

    def trains_whole(self) -> bool:
        """Train on the image file and the whole version (else on the crop, written for the run)."""
        from .accept import MAX_EDIT_VOXELS

        if self.image_path is None or not self.image_path.is_file():
            return False
        small = int(np.prod(self.image.shape)) <= MAX_EDIT_VOXELS
        return self.whole or (self.has_original and small)


@dataclass(frozen=True)
class FinetuneResult:
    """A finished fine-tuning run and the checkpoint to use (best, else last)."""

    run_dir: Path
    checkpoint: Path
    train: Any  # core.training.runner.TrainResult


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def training_pairs(
    corrected: Sequence[tuple[str | Path, str | Path]],
    data: Sequence[str | Path] = (),
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[tuple[str, str]], list[str], str]:
    """``(pairs, val_ids, note)`` for a fine-tuning run (see the module docstring).

    ``pairs`` lists the corrected pairs first; ``val_ids`` are ids as the runner will name them.
    """
    from ..training.data import VolumeSource, collect_sources, sources_from_folder, split_sources

    if not corrected:
        raise DatasetError("no corrected volumes to fine-tune on")
    fixed = [(Path(i), Path(lb)) for i, lb in corrected]
    others: list[VolumeSource] = []
    replaced = 0
    for folder in data:
        for source in sources_from_folder(folder):
            if any(_same_file(source.image, image) for image, _ in fixed):
                replaced += 1
                continue
            others.append(source)
    pairs = [(str(i), str(lb)) for i, lb in fixed] + [(str(s.image), str(s.label)) for s in others]
    named = collect_sources((), pairs)  # the ids the runner will give (checks the files exist)
    extra = [VolumeSource(named[len(fixed) + k].id, s.image, s.label, s.scroll) for k, s in enumerate(others)]
    note = f"{len(fixed)} corrected volume(s)"
    if data:
        note += f" + {len(extra)} from the training data" + (f" ({replaced} replaced)" if replaced else "")
    val_ids: list[str] = []
    if extra and val_fraction > 0:
        _, held_out, split_note = split_sources(extra, val_fraction, seed)
        val_ids = [s.id for s in held_out]
        note += f"; {split_note}"
    else:
        note += "; validating on the training volumes"
    return pairs, val_ids, note


def finetune_config(
    model: str | Path,
    corrected: Sequence[tuple[str | Path, str | Path]],
    *,
    data: Sequence[str | Path] = (),
    epochs: int,
    iterations_per_epoch: int,
    patch_size: Sequence[int] | None = None,
    batch_size: int = 2,
    val_fraction: float = 0.2,
    optimizer: str = "sgd",
    lr: float | None = None,
    seed: int = 0,
    **settings: Any,
) -> Any:
    """The :class:`~napari_vesuvius.core.training.config.TrainConfig` of a fine-tuning run.

    ``patch_size`` defaults to the model's; ``settings`` are further TrainConfig fields (device,
    torch_threads, val_patches, augment ...).
    """
    from ..inference.loading import load_model
    from ..training.config import TrainConfig, TrainConfigError

    model = Path(model).resolve()
    if not model.exists():
        raise TrainConfigError(f"{model}: model to fine-tune not found")
    if optimizer not in FINETUNE_LR:
        raise TrainConfigError(f"optimizer must be one of {', '.join(FINETUNE_LR)} (got {optimizer!r})")
    pairs, val_ids, _ = training_pairs(corrected, data, val_fraction=val_fraction, seed=seed)
    if patch_size is None:
        patch_size = tuple(int(p) for p in load_model(model).patch_size)
    return TrainConfig(
        epochs=int(epochs),
        iterations_per_epoch=int(iterations_per_epoch),
        patch_size=tuple(int(p) for p in patch_size),  # type: ignore[arg-type]
        batch_size=int(batch_size),
        pairs=tuple((str(Path(i).resolve()), str(Path(lb).resolve())) for i, lb in pairs),
        val_ids=tuple(val_ids),
        val_fraction=val_fraction if val_ids else 0.0,
        init=str(model),
        optimizer=optimizer,
        lr=FINETUNE_LR[optimizer] if lr is None else float(lr),
        seed=int(seed),
        **settings,
    )


def model_to_finetune(models: Sequence[Mapping[str, Any]], source: str) -> tuple[Path | None, str]:
    """``(model, why)``: the model to fine-tune, from the ``ModelSpec.describe()`` dicts of the models
    that made the prediction ``source`` (a layer name); None with a message asking the user to choose.

    An ensemble fine-tunes its highest-weighted member (the first among equals) and says so.
    """
    members = [m for m in models if m.get("path")]
    if not members:
        return None, f"{source!r} does not say which model made it: choose the model to fine-tune"
    weights = [float(m.get("weight") or 1.0) for m in members]
    chosen = members[weights.index(max(weights))]
    path = Path(str(chosen["path"]))
    if not path.exists():
        return None, f"the model that made {source!r} ({path}) is not found: choose the model to fine-tune"
    why = f"fine-tunes {path.name}, the model that made {source!r}"
    if len(members) > 1:
        why += f" (the highest-weighted of its {len(members)} ensemble models)"
    return path, why


def iter_prepare_finetune(
    model: str | Path, entries: Sequence[CorrectedVolume], run_dir: str | Path, **settings: Any
) -> Generator[Progress, None, Any]:
    """Job: the training pairs of ``entries`` (whole files, or crops written to ``run_dir/corrected/``)
    and the :func:`finetune_config` of ``model`` on them (``settings``: its keyword arguments)."""
    from ..volume.io import open_labels

    pairs: list[tuple[Path, Path]] = []
    for index, entry in enumerate(entries):
        yield Progress(index, len(entries) + 1, f"preparing {entry.name}")
        if entry.trains_whole() and entry.image_path is not None:
            pairs.append((entry.image_path, entry.labels_path))
            continue
        with open_labels(entry.labels_path) as volume:
            labels = read_crop(volume.data, entry.box)
        folder = Path(run_dir) / CORRECTED_DIR
        written = yield from iter_write_training_pair(entry.image, labels, folder, entry.name, entry.box)
        pairs.append(written)
    yield Progress(len(entries), len(entries) + 1, "fine-tuning settings")
    return finetune_config(model, pairs, **settings)


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """``checkpoint_best.pt`` of a run, else ``checkpoint_last.pt``, else None."""
    from ..training import rundir

    for name in (rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST):
        path = Path(run_dir) / name
        if path.is_file():
            return path
    return None


def iter_finetune(
    config: Any, run_dir: str | Path, *, log: Callable[[str], Any] | None = None
) -> Generator[Progress, None, FinetuneResult]:
    """Job: run the training runner on a :func:`finetune_config`; returns the checkpoint to use."""
    from ..errors import CheckpointError
    from ..training.runner import train

    result = yield from train(config, run_dir, log=log)
    checkpoint = best_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(run_dir, "the fine-tuning run wrote no checkpoint")
    return FinetuneResult(Path(run_dir), checkpoint, result)


def iter_write_training_pair(
    image: Any, labels: np.ndarray, folder: str | Path, name: str, box: Box | None = None
) -> Generator[Progress, None, tuple[Path, Path]]:
    """Job: write ``image[box]`` and the box's ``labels`` as ``folder/images|labels/<name>.tif``.

    ``image`` is the whole volume (lazy is fine: only the box is read); ``labels`` has the box's shape.
    """
    from napari_vesuvius.core.volume.write import iter_write_volume

    from ..errors import VolumeError

    folder = Path(folder)
    box = full_box(image.shape) if box is None else box
    if tuple(labels.shape) != box_shape(box):
        raise VolumeError(None, f"labels of shape {tuple(labels.shape)} do not fit the box {box_shape(box)}")
    paths = (folder / "images" / f"{name}.tif", folder / "labels" / f"{name}.tif")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    arrays = (read_crop(image, box), np.asarray(labels, dtype=np.uint8))
    for step, (path, array) in enumerate(zip(paths, arrays, strict=True)):
        for _ in iter_write_volume(path, array):
            yield Progress(step, 2, f"writing {path.name}")
    yield Progress(2, 2, "training pair written")
    return paths


def iter_predict_region(
    model: str | Path,
    image: Any,
    box: Box | None = None,
    *,
    margin: int | None = None,
    device: str = "auto",
    batch_size: int = 2,
    step: float = 0.5,
) -> Generator[Progress, None, np.ndarray]:
    """Job: surface probability (float32) of ``image[box]``, predicted with ``margin`` voxels of context.

    ``margin`` defaults to half the model's largest patch edge, so the box's borders are predicted
    with the context a whole-volume run would have.
    """
    from ..inference.engine import predict_volume
    from ..inference.loading import load_model

    yield Progress(0, 1, f"loading {Path(model).name}")
    network = load_model(model)
    shape = tuple(int(n) for n in image.shape)
    box = full_box(shape) if box is None else box
    margin = max(network.patch_size) // 2 if margin is None else int(margin)
    outer, inner = grow_box(box, margin, shape)
    volume = read_crop(image, outer)
    result = yield from predict_volume(
        volume, network, step=step, batch_size=batch_size, device=device, output_dtype="float32"
    )
    return np.ascontiguousarray(np.asarray(result.probability)[inner])


def iter_compare(
    predictions: Mapping[str, tuple[Any, bool]],
    labels: np.ndarray,
    config: Any = None,
    scan: Any = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Job: leaderboard score of each prediction against ``labels``; returns ``{name: ScoreResult}``.

    ``predictions`` maps a name to ``(array, is_probability)``; probabilities are post-processed
    with ``config`` (a :class:`PostprocessConfig`; default settings when None) and gated to ``scan``.
    """
    from ..metric import score_volume
    from ..postprocess import PostprocessConfig, run_pipeline

    config = PostprocessConfig() if config is None else config
    scores: dict[str, Any] = {}
    for index, (name, (array, is_probability)) in enumerate(predictions.items()):
        yield Progress(index, len(predictions), f"scoring {name}")
        mask = run_pipeline(array, config, scan_mask=scan) if is_probability else np.asarray(array) != 0
        scores[name] = score_volume(mask, labels)
    yield Progress(len(predictions), len(predictions), "scored")
    return scores
