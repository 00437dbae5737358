"""The post-processing pipeline: probability volume + :class:`PostprocessConfig` -> boolean mask.

Step order (each switched off by its config value):

1. threshold — absolute, percentile (over the scanned voxels) or 3D hysteresis;
2. restrict — zero voxels outside the scanned region (``gate_to_scan``) and the border ``margin``;
3. opening, 4. closing — ellipsoids with separate z and y/x radii (closing never shrinks at faces);
5. 2D hole filling along an axis, 6. 3D cavity filling;
7. restrict again (closing and filling can add voxels outside the allowed region);
8. components — dust removal and keep-k largest, with one 26-connected labelling.

Components come last so the masks it returns never hold a component under ``dust_size``.
Input is a NumPy array (a dask array is computed whole first: fine for 320³ challenge volumes,
not for whole scrolls; run the pipeline per chunk with overlap there).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeError
from ..progress import Progress, run_job
from .components import fill_cavities_3d, fill_holes_2d, filter_components
from .config import PostprocessConfig
from .morphology import binary_closing, binary_opening
from .threshold import ProbabilityKeys, percentile_threshold_value, threshold_hysteresis


def as_probability_array(prob: Any, source: str | Path | None = None) -> np.ndarray:
    """A 3D NumPy probability array (dask/zarr arrays are computed whole)."""
    if hasattr(prob, "compute") and not isinstance(prob, np.ndarray):
        prob = prob.compute()
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise VolumeError(source, f"expected a 3D probability volume, got shape {prob.shape}")
    return prob


def scan_mask_from_ct(ct: Any) -> np.ndarray:
    """The scanned region of a CT volume: ``ct > 0`` (zero-filled voxels lie outside the scan)."""
    if hasattr(ct, "compute") and not isinstance(ct, np.ndarray):
        ct = ct.compute()
    return np.asarray(ct) > 0


def check_scan_mask(scan_mask: Any, shape: tuple[int, ...], source: str | Path | None) -> np.ndarray | None:
    """``scan_mask`` as a boolean NumPy array of ``shape`` (nonzero = scanned), or None when not given.

    Dask/zarr masks are computed whole. Raises :class:`VolumeError` naming ``source`` when the shape
    differs from the probabilities'. The pipeline, its preview and the sweep all check masks here.
    """
    if scan_mask is None:
        return None
    if hasattr(scan_mask, "compute") and not isinstance(scan_mask, np.ndarray):
        scan_mask = scan_mask.compute()
    scan_mask = np.asarray(scan_mask)
    if scan_mask.shape != shape:
        raise VolumeError(
            source, f"scan mask shape {scan_mask.shape} does not match the probabilities {shape}"
        )
    return scan_mask if scan_mask.dtype == np.bool_ else scan_mask != 0


def enabled_steps(config: PostprocessConfig, has_scan: bool = False) -> list[str]:
    """Names of the steps :func:`iter_pipeline` will run for ``config``, in order."""
    restrict = (has_scan and config.gate_to_scan) or config.margin > 0
    adds = config.closing_z + config.closing_xy > 0 or config.fill_holes or config.fill_cavities
    steps = ["threshold"]
    steps += ["restrict"] if restrict else []
    steps += ["opening"] if config.opening_z + config.opening_xy > 0 else []
    steps += ["closing"] if config.closing_z + config.closing_xy > 0 else []
    steps += ["fill_holes"] if config.fill_holes else []
    steps += ["fill_cavities"] if config.fill_cavities else []
    steps += ["restrict_again"] if restrict and adds else []
    steps += ["components"] if config.dust_size > 1 or config.keep_largest > 0 else []
    return steps


def _restrict(
    mask: np.ndarray,
    scan: np.ndarray | None,
    margin: int,
    origin: tuple[int, ...],
    full_shape: tuple[int, ...],
) -> None:
    """In place: zero voxels outside ``scan`` and within ``margin`` of the faces of the full volume."""
    if scan is not None:
        mask &= scan
    if margin <= 0:
        return
    for axis, (start, size, full) in enumerate(zip(origin, mask.shape, full_shape, strict=True)):
        index: list[slice] = [slice(None)] * 3
        low = min(max(margin - start, 0), size)  # local end of the low-face margin
        if low:
            index[axis] = slice(0, low)
            mask[tuple(index)] = False
        high = min(max(full - margin - start, 0), size)  # local start of the high-face margin
        if high < size:
            index[axis] = slice(high, size)
            mask[tuple(index)] = False


def iter_pipeline_steps(
    keys: ProbabilityKeys,
    config: PostprocessConfig,
    scan: np.ndarray | None,
    *,
    origin: tuple[int, ...] = (0, 0, 0),
    full_shape: tuple[int, ...] | None = None,
    thresholded: np.ndarray | None = None,
    percentile_t: float | None = None,
    timings: dict[str, float] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: the enabled steps on a (possibly sub-) volume at ``origin`` of a volume of ``full_shape``.

    The one implementation of the step order, shared by :func:`iter_pipeline`, the Tune preview
    (:mod:`.preview`, which passes a crop's ``origin``) and the parameter sweep (which reuses a
    ``thresholded`` mask or a ``percentile_t`` across configs that share the threshold step), so
    previews and sweep scores match the masks the pipeline writes. ``scan`` comes from
    :func:`check_scan_mask`; ``timings`` (if given) receives seconds per step. Returns the bool mask.
    """
    full_shape = tuple(keys.keys.shape) if full_shape is None else full_shape
    gate = scan if config.gate_to_scan else None
    steps = enabled_steps(config, has_scan=scan is not None)
    mask = np.zeros(0, bool)
    for done, step in enumerate(steps):
        yield Progress(done, len(steps), step.replace("_", " "))
        started = time.perf_counter()
        if step == "threshold":
            if thresholded is not None:
                mask = np.array(thresholded, dtype=bool, copy=True)
            elif config.threshold_mode == "absolute":
                mask = keys.at_least(config.threshold)
            elif config.threshold_mode == "percentile":
                t = percentile_t
                if t is None:
                    t = percentile_threshold_value(keys, config.percentile_fraction, scan)
                mask = keys.above(t)
            else:
                mask = threshold_hysteresis(keys, config.t_low, config.t_high, gate)
        elif step in ("restrict", "restrict_again"):
            _restrict(mask, gate, config.margin, origin, full_shape)
        elif step == "opening":
            mask = binary_opening(mask, config.opening_z, config.opening_xy)
        elif step == "closing":
            mask = binary_closing(mask, config.closing_z, config.closing_xy)
        elif step == "fill_holes":
            mask = fill_holes_2d(mask, config.fill_holes_axis, config.max_hole_size)
        elif step == "fill_cavities":
            mask = fill_cavities_3d(mask, config.max_cavity_size)
        elif step == "components":
            mask = filter_components(mask, config.dust_size, config.keep_largest)
        if timings is not None:
            timings[step] = timings.get(step, 0.0) + time.perf_counter() - started
    yield Progress(len(steps), len(steps), "done")
    return mask


def iter_pipeline(
    prob: Any,
    config: PostprocessConfig | None = None,
    *,
    scan_mask: Any = None,
    source: str | Path | None = None,
    timings: dict[str, float] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Job: run the post-processing pipeline, yielding one :class:`Progress` per step; returns a bool mask.

    ``prob``: uint8 (0–255) or float probabilities in [0, 1], shape (Z, Y, X). ``scan_mask``: True
    inside the scanned region (e.g. :func:`scan_mask_from_ct`); used to gate the result and as the
    population of the percentile threshold. ``source`` names the input in error messages;
    ``timings`` (if given) receives seconds per step.
    """
    config = PostprocessConfig() if config is None else config
    array = as_probability_array(prob, source)
    keys = ProbabilityKeys(array, source)
    scan = check_scan_mask(scan_mask, array.shape, source)
    mask = yield from iter_pipeline_steps(keys, config, scan, timings=timings)
    return mask


def run_pipeline(
    prob: Any,
    config: PostprocessConfig | None = None,
    *,
    scan_mask: Any = None,
    source: str | Path | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Run the whole pipeline synchronously and return the boolean mask (see :func:`iter_pipeline`)."""
    return run_job(iter_pipeline(prob, config, scan_mask=scan_mask, source=source, timings=timings))
