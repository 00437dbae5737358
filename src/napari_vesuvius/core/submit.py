"""The offline submission pipeline: predict → clean up → export, for every test volume.

One volume at a time (memory: one CT, its probability and its mask), models loaded once, the scan
mask taken from ``ct > 0``, and the masks streamed into a validated, atomically replaced
``submission.zip`` (:mod:`napari_vesuvius.core.export`). A job generator (``core/progress.py``), so the
CLI, the Export widget and a notebook all drive the same code; no napari or Qt import, so it runs in
an offline competition notebook with only the core installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError
from .export import SubmissionError, SubmissionTarget, SubmissionWriter, submission_targets
from .inference.loading import DEFAULT_NNUNET_CHECKPOINT
from .postprocess import PostprocessConfig, iter_pipeline, scan_mask_from_ct
from .postprocess_choice import model_postprocess
from .progress import Progress, run_job, scaled
from .volume_io import open_volume

#: Progress units per volume: prediction, post-processing and writing share them in these proportions.
UNITS = 1000
PREDICT_UNITS, POSTPROCESS_UNITS = 850, 120


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: checkpoint file or nnU-Net folder, its ensemble weight, nnU-Net folds/checkpoint."""

    path: Path
    weight: float = 1.0
    folds: tuple[int | str, ...] | None = None
    checkpoint: str = DEFAULT_NNUNET_CHECKPOINT

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "weight": self.weight,
            "folds": None if self.folds is None else list(self.folds),
            "checkpoint": self.checkpoint,
        }


def load_models(specs: Sequence[ModelSpec | Any]) -> list[Any]:
    """Load every :class:`ModelSpec` once into a ``WeightedModel``; loaded models pass through."""
    from .inference.loading import load_model
    from .inference.model_api import InferenceModel, WeightedModel

    if not specs:
        raise SubmissionError(None, "no model given: pass at least one model")
    members = []
    for spec in specs:
        if isinstance(spec, WeightedModel):
            members.append(spec)
        elif isinstance(spec, InferenceModel):
            members.append(WeightedModel(spec, 1.0))
        else:
            if not spec.weight > 0:
                raise CheckpointError(spec.path, f"ensemble weight must be positive, got {spec.weight}")
            folds = None if spec.folds is None else list(spec.folds)
            model = load_model(spec.path, folds=folds, checkpoint=spec.checkpoint)
            members.append(WeightedModel(model, float(spec.weight)))
    return members


def _describe(model: ModelSpec | Any) -> dict[str, Any]:
    if isinstance(model, ModelSpec):
        return model.describe()
    inner = getattr(model, "model", model)
    return {"name": getattr(inner, "name", ""), "weight": getattr(model, "weight", 1.0)}


def _read_ct(target: SubmissionTarget) -> np.ndarray:
    """The whole CT volume of one target in memory (a 320³ uint8 volume is 33 MB)."""
    assert target.image is not None
    with open_volume(target.image) as volume:
        return np.asarray(volume.data.compute())


def iter_submit(
    data: str | Path,
    models: Sequence[ModelSpec | Any],
    out: str | Path,
    config: PostprocessConfig | None = None,
    *,
    step: float = 0.5,
    gaussian: bool = True,
    tta_axes: Sequence[int] = (),
    batch_size: int = 2,
    device: str = "auto",
    precision: str = "auto",
    skip_air: bool = True,
) -> Iterator[Progress]:
    """Job: predict, post-process and export every test volume of ``data`` into ``out``.

    ``data``: a challenge dataset folder or a folder of test images (see ``submission_targets``).
    ``models``: :class:`ModelSpec` s (loaded once, here) and/or loaded ``InferenceModel`` /
    ``WeightedModel`` s, averaged as a weighted probability ensemble. ``config``: the post-processing
    (default: the clean-up the model chose on its validation volumes when it stored one, see
    :func:`~.postprocess_choice.model_postprocess`, else the built-in defaults). Returns an
    ``ExportSummary`` whose volumes carry per-step timings (``read``, ``predict``, ``postprocess``,
    ``write``) and whose settings say which clean-up was used (``postprocess_source``). Bad ids, images
    or masks raise ``SubmissionError`` before the zip is swapped in; a cancel leaves ``out`` as it was.
    """
    from .inference.engine import predict_volume

    started = time.perf_counter()
    targets = submission_targets(data)
    yield Progress(0, 1, f"loading {len(models)} model(s)")
    members = load_models(models)
    config_source = "given"
    if config is None:
        config, config_source = model_postprocess(members)
    settings: dict[str, Any] = {
        "data": str(data),
        "models": [
            m.describe() if isinstance(m, ModelSpec) else {"name": getattr(m, "name", "")} for m in models
        ],
        "postprocess": config.to_dict(),
        "postprocess_source": config_source,
        "step": step,
        "gaussian": gaussian,
        "tta_axes": list(tta_axes),
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
    }
    total = UNITS * len(targets) + len(targets)
    with SubmissionWriter(out, targets) as writer:
        for index, target in enumerate(targets):
            base = index * UNITS
            label = f"{target.volume_id} ({index + 1}/{len(targets)}): "
            yield Progress(base, total, label + "reading")
            t0 = time.perf_counter()
            ct = _read_ct(target)
            t1 = time.perf_counter()
            job = predict_volume(
                ct, members, step=step, gaussian=gaussian, tta_axes=tta_axes, batch_size=batch_size,
                device=device, precision=precision, skip_air=skip_air, output_dtype="float16",
                source=target.image,
            )  # fmt: skip
            result = yield from scaled(job, base, PREDICT_UNITS, total, label + "predict ")
            settings.setdefault("inference", result.settings)
            t2 = time.perf_counter()
            scan = scan_mask_from_ct(ct)
            del ct
            pipeline = iter_pipeline(result.probability, config, scan_mask=scan, source=target.image)
            mask = yield from scaled(
                pipeline, base + PREDICT_UNITS, POSTPROCESS_UNITS, total, label + "clean-up "
            )
            del result, scan
            t3 = time.perf_counter()
            yield Progress(base + PREDICT_UNITS + POSTPROCESS_UNITS, total, label + "writing")
            timings = {"read": t1 - t0, "predict": t2 - t1, "postprocess": t3 - t2}
            writer.add(target.volume_id, mask, source=target.image, seconds=t3 - t0, timings=timings)
            del mask
        summary = yield from scaled(writer.finish(settings), UNITS * len(targets), len(targets), total)
    summary.seconds = time.perf_counter() - started
    return summary


def submit(
    data: str | Path,
    models: Sequence[ModelSpec | Any],
    out: str | Path,
    config: PostprocessConfig | None = None,
    **kwargs: Any,
) -> Any:
    """Run :func:`iter_submit` synchronously (no progress) and return its ``ExportSummary``."""
    return run_job(iter_submit(data, models, out, config, **kwargs))
