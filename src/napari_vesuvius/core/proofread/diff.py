"""What the user changed: edited labels against the accepted baseline (the model's mask + kept ignore).

Each voxel of the diff volume holds one code: :data:`ADDED` (now surface, was not), :data:`REMOVED`
(was surface, now background), :data:`TO_IGNORE` (now ignore, was not) or :data:`FROM_IGNORE` (was
ignore, now background or surface); 0 where nothing changed. The baseline is what was accepted, so
ignore regions carried over from the original labels are not reported as changes.
"""

from __future__ import annotations

import numpy as np

from ..labels import BACKGROUND, IGNORE, SURFACE

UNCHANGED, ADDED, REMOVED, TO_IGNORE, FROM_IGNORE = 0, 1, 2, 3, 4
DIFF_NAMES = {ADDED: "added", REMOVED: "removed", TO_IGNORE: "to ignore", FROM_IGNORE: "from ignore"}
#: RGBA per code: green added, red removed, blue to-ignore, yellow un-ignored
DIFF_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (0.0, 0.0, 0.0, 0.0),
    UNCHANGED: (0.0, 0.0, 0.0, 0.0),
    ADDED: (0.1, 0.9, 0.2, 1.0),
    REMOVED: (0.95, 0.15, 0.15, 1.0),
    TO_IGNORE: (0.25, 0.45, 1.0, 1.0),
    FROM_IGNORE: (1.0, 0.85, 0.1, 1.0),
}


def label_diff(baseline: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """uint8 diff codes of ``edited`` against ``baseline`` (same shape, label values 0/1/2)."""
    baseline, edited = np.asarray(baseline), np.asarray(edited)
    if baseline.shape != edited.shape:
        raise ValueError(f"baseline shape {baseline.shape} differs from the edited labels' {edited.shape}")
    out = np.zeros(edited.shape, np.uint8)
    changed = baseline != edited
    if not changed.any():
        return out
    before, after = baseline[changed], edited[changed]
    codes = np.zeros(before.shape, np.uint8)
    codes[after == SURFACE] = ADDED
    codes[(after == BACKGROUND) & (before == SURFACE)] = REMOVED
    codes[after == IGNORE] = TO_IGNORE
    codes[(before == IGNORE) & (after != IGNORE)] = FROM_IGNORE
    out[changed] = codes
    return out


def diff_counts(diff: np.ndarray) -> dict[str, int]:
    """Voxels per change kind (``{"added": n, "removed": n, "to ignore": n, "from ignore": n}``)."""
    counts = np.bincount(np.asarray(diff, np.uint8).ravel(), minlength=len(DIFF_NAMES) + 1)
    return {name: int(counts[code]) for code, name in DIFF_NAMES.items()}
