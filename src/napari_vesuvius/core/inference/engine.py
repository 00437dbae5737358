"""Sliding-window 3D inference: Gaussian-blended tiles, mirroring TTA, ensembles, progressive output.

``predict_volume`` is a job generator (see ``core/progress.py``): it yields a ``Progress`` after each
batch of tiles and returns a :class:`PredictionResult`. Each model is run by a
:class:`~._runner.ModelRunner` in z-rows of tiles; finished z-slabs of surface probability are
combined over the models (weighted average), set to 0 outside the scanned region (``ct == 0``, found
in the slabs the runners read anyway, so a lazy input is read once) and written into the output at
once, so a zarr output fills progressively and memory stays bounded.

Closing the generator (cancel) stops it within one batch. The output then stays marked partial: a
zarr output keeps the attribute ``complete: false``; the caller gets ``CancelledError`` from
``run_job`` instead of a result.

The semantics match nnU-Net v2's predictor with the same patch, step, Gaussian and mirroring.

Input values follow the intensity rule of :mod:`.intensity`: a volume whose dtype differs from what a
model was trained on is converted (announced with a warning) or refused, and NaN/Inf voxels are
refused with a VolumeError naming the file.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress, relay, run_job

from .intensity import prepare_input
from .model_api import InferenceModel, WeightedModel
from .models import as_members
from .settings import OUTPUT_DTYPES, SlidingWindowSettings, describe_members


@dataclass
class PredictionResult:
    """What a finished prediction returns.

    ``probability`` is the output array (numpy or zarr) holding the surface probability as
    float16/float32 in [0, 1] or uint8 in 0–255. ``forward_s`` is the time spent in network forward
    passes (exact on CPU; on CUDA it counts kernel launches only, which run asynchronously).
    """

    probability: Any
    elapsed_s: float
    tiles_run: int
    tiles_skipped: int
    voxels_per_s: float
    complete: bool
    settings: dict[str, Any] = field(default_factory=dict)
    forward_s: float = 0.0


def _prepare_output(output: Any, shape: tuple[int, ...], output_dtype: str) -> Any:
    if output is None:  # output_dtype was validated by SlidingWindowSettings
        return np.zeros(shape, dtype=output_dtype)
    if tuple(output.shape) != tuple(shape):
        raise VolumeError(None, f"output shape {tuple(output.shape)} differs from the volume's {shape}")
    if np.dtype(output.dtype).name not in OUTPUT_DTYPES:
        raise VolumeError(None, f"output dtype {output.dtype} is not one of {OUTPUT_DTYPES}")
    return output


def _convert(prob: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        return (prob * 255.0 + 0.5).astype(np.uint8)
    return prob.astype(dtype, copy=False)


def _set_complete(output: Any, complete: bool, settings: dict[str, Any] | None = None) -> None:
    """Mark a zarr-like output (anything with ``.attrs``) complete or partial."""
    attrs = getattr(output, "attrs", None)
    if attrs is None:
        return
    update: dict[str, Any] = {"complete": complete}
    if settings is not None:
        update["prediction"] = settings
    attrs.update(update)


class _Combiner:
    """Weighted average of several models' finished z-slabs until every model has passed them."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.yx = shape[1:]
        self.base = 0
        self.sum = np.zeros((0, *self.yx), dtype=np.float32)

    def add(self, z0: int, z1: int, prob: np.ndarray, weight: float) -> None:
        need = z1 - self.base
        if need > len(self.sum):
            grow = np.zeros((need - len(self.sum), *self.yx), dtype=np.float32)
            self.sum = np.concatenate([self.sum, grow])
        self.sum[z0 - self.base : z1 - self.base] += weight * prob

    def take(self, upto: int) -> np.ndarray:
        count = upto - self.base
        out, self.sum = self.sum[:count], self.sum[count:]
        self.base = upto
        return out


def _previewing(
    rows: Generator[Progress, None, Any], runner: Any, out: Any, every_s: float, shown: list[float]
) -> Generator[Progress, None, Any]:
    """Pass ``rows``' reports on; before one, write the runner's preview into ``out`` when due."""
    dtype = np.dtype(out.dtype)

    def before_report(report: Progress) -> Progress:
        now = time.perf_counter()
        if now - shown[0] >= every_s:
            shown[0] = now
            preview = runner.provisional()
            if preview is not None:
                z0, z1, prob = preview
                out[z0:z1] = _convert(prob, dtype)
        return report

    return relay(rows, before_report)


def predict_volume(
    volume: Any,
    models: InferenceModel | Sequence[WeightedModel],
    settings: SlidingWindowSettings | None = None,
    *,
    output: Any = None,
    source: str | Path | None = None,
    preview_s: float | None = None,
    tuning: Any = None,
    **overrides: Any,
) -> Generator[Progress, None, PredictionResult]:
    """Sliding-window surface probability of a ``(Z, Y, X)`` CT volume (numpy or dask).

    ``models``: one model, or weighted members of a probability-averaging ensemble. ``settings``: the
    :class:`~.settings.SlidingWindowSettings` (default: the defaults); keyword ``overrides`` such as
    ``step=0.25`` change single fields. ``output``: ``None`` for a new numpy array of the settings'
    ``output_dtype``, or an existing numpy/zarr array of the volume's shape (its own dtype decides the
    conversion). ``source``: the volume's file, named in errors and warnings (default: the file a
    ``core.volume`` array was opened from). ``preview_s``: for a viewer showing ``output`` while it
    fills (one model only), also write the row of tiles in progress, blended so far, at most every
    ``preview_s`` seconds; those voxels are overwritten by their final values later, so the result is
    the same (None, the default: only final slabs are written). ``tuning``: a
    :class:`~.device.GpuTuning` for CUDA runs (None: its defaults). Returns a :class:`PredictionResult`.
    """
    from . import device as devices
    from ._runner import ModelRunner

    window = SlidingWindowSettings.build(settings, **overrides)
    if getattr(volume, "ndim", None) != 3:
        raise VolumeError(None, f"expected a 3D (Z, Y, X) volume, got shape {getattr(volume, 'shape', None)}")
    shape = tuple(int(s) for s in volume.shape)
    if min(shape) < 1:
        raise VolumeError(None, f"volume is empty (shape {shape})")
    if source is None:
        from napari_vesuvius.core.volume.io import source_path

        source = source_path(volume)
    members, check = prepare_input(volume, as_members(models), source)
    torch_device = devices.resolve_device(window.device)
    mode = devices.resolve_precision(window.precision, torch_device)
    out = _prepare_output(output, shape, window.output_dtype)
    out_dtype = np.dtype(out.dtype)
    total_weight = float(sum(m.weight for m in members))
    settings_used = window.replace(device=str(torch_device), precision=mode, output_dtype=out_dtype.name)
    described: dict[str, Any] = {**settings_used.to_dict(), "models": describe_members(members)}
    start = time.perf_counter()
    runners = [
        ModelRunner(
            volume,
            m.model,
            step=window.step,
            gaussian=window.gaussian,
            tta_axes=window.tta_axes,
            batch_size=window.batch_size,
            device=torch_device,
            precision=mode,
            skip_air=window.skip_air,
            check=check,
            source=source,
            tuning=tuning,
        )
        for m in members
    ]
    total = sum(r.tiles_total for r in runners)
    next_row = [0] * len(runners)
    combiner = _Combiner(shape) if len(runners) > 1 else None
    written = 0
    done = 0
    shown = [time.perf_counter()]  # when a preview was last written
    _set_complete(out, False, described)
    yield Progress(0, total, "starting")
    while written < shape[0]:
        # advance the model that lags behind; write what every model has finished
        pending = [i for i, r in enumerate(runners) if next_row[i] < len(r.rows)]
        if not pending:  # pragma: no cover - every model's last row finishes the volume
            raise RuntimeError(f"sliding window ended at z={written} of {shape[0]}")
        index = min(pending, key=lambda i: runners[i].front)
        runner = runners[index]
        done_before = done
        rows = runner.run_row(next_row[index], done, total)
        if preview_s is not None and combiner is None:
            rows = _previewing(rows, runner, out, preview_s, shown)
        finished = yield from rows
        done = done_before + len(runner.yx)
        next_row[index] += 1
        if finished is None:
            continue
        z0, z1, prob = finished
        if combiner is not None:
            combiner.add(z0, z1, prob, members[index].weight / total_weight)
            front = min(r.front for r in runners)
            if front <= written:
                continue
            z0, z1, prob = written, front, combiner.take(front)
        out[z0:z1] = _convert(prob, out_dtype)
        written = z1
    elapsed = time.perf_counter() - start
    _set_complete(out, True, described)
    return PredictionResult(
        probability=out,
        elapsed_s=elapsed,
        tiles_run=sum(r.tiles_run for r in runners),
        tiles_skipped=sum(r.tiles_skipped for r in runners),
        voxels_per_s=float(np.prod(shape)) / max(elapsed, 1e-9),
        complete=True,
        settings=described,
        forward_s=sum(r.forward_s for r in runners),
    )


def predict(
    volume: Any,
    models: InferenceModel | Sequence[WeightedModel],
    settings: SlidingWindowSettings | None = None,
    **kwargs: Any,
) -> PredictionResult:
    """Run :func:`predict_volume` to completion (no progress reporting)."""
    return run_job(predict_volume(volume, models, settings, **kwargs))
