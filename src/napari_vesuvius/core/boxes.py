"""Bounding boxes of masks, used to crop work to where the foreground is."""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of the True (non-zero) voxels as slices, or None when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
