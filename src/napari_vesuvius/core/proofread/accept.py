"""Accept a prediction as labels: the model's mask becomes editable 0/1 labels, ignore (2) is kept.

The prediction is a probability volume (post-processed with a :class:`PostprocessConfig`, as the Tune
widget does) or a mask that is already post-processed (non-zero = surface). Where existing labels
say *ignore* (2) the accepted labels stay 2: those regions were never annotated and must not become
training signal. Only a box of the volume may be accepted (an in-memory crop of a lazy volume); the
pipeline then runs on the box plus a halo (``preview_region``: scan gating and the border margin in
whole-volume coordinates), so hysteresis and closing see context beyond the box edges.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import VolumeError
from ..labels import IGNORE, SURFACE
from ..postprocess import PostprocessConfig, iter_pipeline, preview_region
from ..progress import Progress
from .region import Box, box_voxels, full_box, is_full, read_crop

#: context (voxels per side) post-processed around a box and cut away afterwards
CONTEXT_MARGIN = 16
#: largest region edited in memory (uint8 voxels; about 3 copies are held: labels, baseline, mask)
MAX_EDIT_VOXELS = 512**3


@dataclass
class Accepted:
    """The result of accepting a prediction over ``box``.

    ``labels``: uint8 0/1/2 of the box (editable); ``mask``: the model's boolean mask of the box;
    ``probability``: the probability of the box (None when the prediction was a mask).
    """

    box: Box
    labels: np.ndarray
    mask: np.ndarray
    probability: np.ndarray | None
    ignored_voxels: int


def _check_shape(name: str, array: Any, shape: tuple[int, ...]) -> None:
    if array is not None and tuple(int(n) for n in array.shape) != shape:
        raise VolumeError(None, f"{name} shape {tuple(array.shape)} differs from the prediction's {shape}")


def iter_accept(
    prediction: Any,
    *,
    is_probability: bool,
    labels: Any = None,
    box: Box | None = None,
    config: PostprocessConfig | None = None,
    scan: Any = None,
    margin: int = CONTEXT_MARGIN,
    max_voxels: int = MAX_EDIT_VOXELS,
) -> Generator[Progress, None, Accepted]:
    """Job: accept ``prediction`` (probability or mask, numpy/dask/zarr) over ``box`` as labels.

    ``labels``: existing label volume whose ignore voxels are kept (None: none). ``scan``: CT (or a
    boolean scan mask) used to gate the post-processing to the scanned region, like the Tune widget.
    """
    shape = tuple(int(n) for n in prediction.shape)
    if len(shape) != 3:
        raise VolumeError(None, f"the prediction must be 3D, got shape {shape}")
    _check_shape("label volume", labels, shape)
    _check_shape("CT volume", scan, shape)
    box = full_box(shape) if box is None else box
    if box_voxels(box) > max_voxels:
        raise VolumeError(
            None,
            f"region of {box_voxels(box):,} voxels is too large to edit in memory (limit {max_voxels:,}); "
            "accept the visible region or a box instead",
        )
    yield Progress(0, 3, "reading the prediction")
    if is_probability:
        config = PostprocessConfig() if config is None else config
        if is_full(box, shape):
            prob = read_crop(prediction, box)
            scan_mask = None if scan is None else read_crop(scan, box) > 0
            pipeline = iter_pipeline(prob, config, scan_mask=scan_mask)
            while True:
                try:
                    report = next(pipeline)
                except StopIteration as stop:
                    mask = stop.value
                    break
                yield Progress(1, 3, f"post-processing: {report.message}")
            probability = prob
        else:  # the box plus a halo, in whole-volume coordinates (border margin, percentile value)
            yield Progress(1, 3, "post-processing the region")
            mask = np.ascontiguousarray(preview_region(prediction, box, config, scan, context=margin))
            probability = read_crop(prediction, box)
    else:
        raw = read_crop(prediction, box)
        mask = (raw != 0) & (raw != IGNORE) if raw.dtype.kind in "iu" else raw != 0
        probability = None
    yield Progress(2, 3, "keeping ignore regions")
    out = mask.astype(np.uint8) * np.uint8(SURFACE)
    ignored = 0
    if labels is not None:
        ignore = read_crop(labels, box) == IGNORE
        out[ignore] = IGNORE
        ignored = int(ignore.sum())
    yield Progress(3, 3, "accepted")
    return Accepted(box, out, mask, probability, ignored)
