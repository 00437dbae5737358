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
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.export import SubmissionTarget, SubmissionWriter, submission_targets
from napari_vesuvius.core.inference.models import ModelSpec, describe_models, load_models
from napari_vesuvius.core.inference.settings import SlidingWindowSettings
from napari_vesuvius.core.postprocess import PostprocessConfig, iter_pipeline, scan_mask_from_ct
from napari_vesuvius.core.postprocess.choice import model_postprocess
from napari_vesuvius.core.progress import Progress, run_job, scaled
from napari_vesuvius.core.volume.io import open_volume

#: Progress units per volume: prediction, post-processing and writing share them in these proportions.
UNITS = 1000
PREDICT_UNITS, POSTPROCESS_UNITS = 850, 120

__all__ = ["iter_submit", "submit"]


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
    settings: SlidingWindowSettings | None = None,
    **overrides: Any,
) -> Iterator[Progress]:
    """Job: predict, post-process and export every test volume of ``data`` into ``out``.

    ``data``: a challenge dataset folder or a folder of test images (see ``submission_targets``).
    ``models``: :class:`ModelSpec` s (loaded once, here) and/or loaded ``InferenceModel`` /
    ``WeightedModel`` s, averaged as a weighted probability ensemble. ``settings``: the sliding window
    (:class:`~.inference.settings.SlidingWindowSettings`; keyword ``overrides`` change single fields;
    the probability is always float16 in memory). ``config``: the post-processing
    (default: the clean-up the model chose on its validation volumes when it stored one, see
    :func:`~..postprocess.choice.model_postprocess`, else the built-in defaults). Returns an
    ``ExportSummary`` whose volumes carry per-step timings (``read``, ``predict``, ``postprocess``,
    ``write``) and whose settings say which clean-up was used (``postprocess_source``). Bad ids, images
    or masks raise ``SubmissionError`` before the zip is swapped in; a cancel leaves ``out`` as it was.
    """
    window = SlidingWindowSettings.build(settings, **overrides).replace(output_dtype="float16")
    started = time.perf_counter()
    targets = submission_targets(data)  # a folder that is no test set is refused before any work

    from napari_vesuvius.core.inference.engine import predict_volume  # torch: after the checks

    yield Progress(0, 1, f"loading {len(models)} model(s)")
    members = load_models(models)
    config_source = "given"
    if config is None:
        config, config_source = model_postprocess(members)
    described: dict[str, Any] = {
        "data": str(data),
        "models": describe_models(models),
        "postprocess": config.to_dict(),
        "postprocess_source": config_source,
        **{k: v for k, v in window.to_dict().items() if k != "output_dtype"},
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
            job = predict_volume(ct, members, window, source=target.image)
            result = yield from scaled(job, base, PREDICT_UNITS, total, label + "predict ")
            described.setdefault("inference", result.settings)
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
        summary = yield from scaled(writer.finish(described), UNITS * len(targets), len(targets), total)
    summary.seconds = time.perf_counter() - started
    return summary


def submit(
    data: str | Path,
    models: Sequence[ModelSpec | Any],
    out: str | Path,
    config: PostprocessConfig | None = None,
    settings: SlidingWindowSettings | None = None,
    **overrides: Any,
) -> Any:
    """Run :func:`iter_submit` synchronously (no progress) and return its ``ExportSummary``."""
    return run_job(iter_submit(data, models, out, config, settings, **overrides))
