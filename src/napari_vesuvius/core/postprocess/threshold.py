"""Thresholds on probability volumes: absolute, percentile and 3D hysteresis.

Probabilities come as uint8 (0–255, meaning value/255) or floating point in [0, 1]. Rather than
converting to float (a 128 MB float32 copy for 320³), every comparison is done on the raw bits:
for non-negative IEEE floats the unsigned integer view is ordered like the values, so
``p >= t`` becomes ``bits >= key(t)`` with ``key(t)`` the bits of the smallest representable value
that is >= t. Comparisons are exact in float64 semantics (``float(p) >= t``), independent of NumPy's
scalar-casting rules (NumPy 2 would otherwise round ``t`` to float16 for a float16 array).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VolumeError
from .components import _label

_UINT_FOR_FLOAT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


class ProbabilityKeys:
    """An integer view of a probability volume whose order matches the probability order."""

    def __init__(self, prob: np.ndarray, source: str | Path | None = None, *, validate: bool = True) -> None:
        prob = np.asarray(prob)
        if prob.dtype == np.bool_:
            prob = prob.view(np.uint8)
            self.scale = 1.0
        elif prob.dtype == np.uint8:
            self.scale = 255.0
        elif prob.dtype.kind == "f" and prob.dtype.itemsize in _UINT_FOR_FLOAT:
            self.scale = 0.0
        else:
            raise VolumeError(
                source, f"probabilities must be uint8 (0-255) or float in [0, 1], got {prob.dtype}"
            )
        self.dtype = prob.dtype
        self.source = source
        if self.scale:
            self.keys = prob
        else:
            native = prob.dtype.newbyteorder("=")
            if prob.dtype != native:
                prob = prob.astype(native)
            self.keys = prob.view(_UINT_FOR_FLOAT[prob.dtype.itemsize])
        if validate and self.keys.size and not self.scale and int(self.keys.max()) >= self.key_limit:
            raise VolumeError(
                source, "probabilities must lie in [0, 1] (found values above 1, negative values or NaN)"
            )

    @property
    def key_limit(self) -> int:
        """One past the largest key a valid probability can have."""
        if self.scale == 255.0:
            return 256
        if self.scale == 1.0:
            return 2
        return int(np.array(1.0, self.dtype).view(self.keys.dtype)) + 1

    def value_of(self, key: int | np.integer) -> float:
        """The probability (float64) that an integer key stands for; NaN for negative/NaN bit patterns."""
        if self.scale:
            return float(key) / self.scale
        value = float(np.array(key, self.keys.dtype).view(self.dtype))
        return value if value >= 0 and not np.signbit(value) else float("nan")

    def key_at_least(self, t: float) -> int:
        """Smallest key whose probability is >= t (``key_limit`` when none is)."""
        return self._first_key(t, strict=False)

    def key_above(self, t: float) -> int:
        """Smallest key whose probability is > t (``key_limit`` when none is)."""
        return self._first_key(t, strict=True)

    def _first_key(self, t: float, strict: bool) -> int:
        t = float(t)
        if t < 0 or (t == 0 and not strict):
            return 0
        if self.scale:
            maximum = int(self.scale)
            key = min(max(int(np.floor(t * self.scale)) - 1, 0), maximum + 1)
            while key <= maximum and not (key / self.scale > t if strict else key / self.scale >= t):
                key += 1
            return key if key <= maximum else self.key_limit
        candidate = np.array(t, dtype=self.dtype)
        value = float(candidate)
        if value < t or (strict and value == t):
            candidate = np.nextafter(candidate, np.array(np.inf, self.dtype))
        if float(candidate) > 1.0:
            return self.key_limit
        return int(candidate.view(self.keys.dtype))

    def at_least(self, t: float) -> np.ndarray:
        """Boolean mask ``p >= t``."""
        key = self.key_at_least(t)
        if key >= self.key_limit:
            return np.zeros(self.keys.shape, bool)
        return self.keys >= self.keys.dtype.type(key)

    def above(self, t: float) -> np.ndarray:
        """Boolean mask ``p > t``."""
        key = self.key_above(t)
        if key >= self.key_limit:
            return np.zeros(self.keys.shape, bool)
        return self.keys >= self.keys.dtype.type(key)


def _keys(prob: np.ndarray | ProbabilityKeys) -> ProbabilityKeys:
    return prob if isinstance(prob, ProbabilityKeys) else ProbabilityKeys(prob)


def threshold_absolute(prob: np.ndarray | ProbabilityKeys, t: float) -> np.ndarray:
    """``p >= t`` (probabilities in [0, 1]; uint8 scaled by 1/255)."""
    return _keys(prob).at_least(t)


def percentile_threshold_value(
    prob: np.ndarray | ProbabilityKeys, fraction: float, scan_mask: np.ndarray | None = None
) -> float:
    """The threshold ``t = quantile(p[scan], 1 - fraction)`` (linear interpolation, float64).

    Equals ``np.quantile(p[scan].astype(np.float64), 1 - fraction)`` but works on the integer keys
    with ``np.partition`` instead of sorting a float64 copy.
    """
    keys = _keys(prob)
    values = keys.keys[scan_mask] if scan_mask is not None else keys.keys.ravel().copy()
    n = values.size
    if n == 0:
        return float("inf")
    position = (n - 1) * (1.0 - float(fraction))
    lower = int(np.floor(position))
    upper = min(lower + 1, n - 1)
    values.partition([lower, upper] if upper != lower else [lower])
    a = keys.value_of(values[lower])
    b = keys.value_of(values[upper])
    gamma = position - lower
    # NumPy's _lerp: a + (b - a) * g, computed from the upper end when g >= 0.5 (monotonic).
    return float(b - (b - a) * (1.0 - gamma)) if gamma >= 0.5 else float(a + (b - a) * gamma)


def threshold_percentile(
    prob: np.ndarray | ProbabilityKeys, fraction: float, scan_mask: np.ndarray | None = None
) -> np.ndarray:
    """``p > quantile(p[scan], 1 - fraction)``: about ``fraction`` of the scanned voxels positive.

    Ties at the threshold value make the positive fraction smaller than requested (all tied voxels
    are negative), exactly like the NumPy expression.
    """
    keys = _keys(prob)
    return keys.above(percentile_threshold_value(keys, fraction, scan_mask))


def hysteresis_from_masks(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Keep the 26-connected components of ``weak`` that contain a voxel of ``strong``.

    ``strong`` must be a subset of ``weak``. One cc3d labelling of ``weak``; the labels under the
    strong voxels select the components. When every component is kept the weak mask is returned
    as is (no per-voxel lookup).
    """
    labels, count = _label(weak, 26)  # cc3d, or scipy inside labelling_without_gil()
    if count == 0:
        return np.zeros(weak.shape, bool)
    keep = np.zeros(count + 1, bool)
    keep[labels[strong]] = True
    keep[0] = False
    if keep[1:].all():
        return weak
    out = np.zeros(weak.shape, bool)
    out[weak] = keep[labels[weak]]
    return out


def threshold_hysteresis(
    prob: np.ndarray | ProbabilityKeys, t_low: float, t_high: float, scan_mask: np.ndarray | None = None
) -> np.ndarray:
    """3D hysteresis: voxels ``p >= t_low`` 26-connected (through such voxels) to one with ``p >= t_high``.

    With ``scan_mask`` only scanned voxels take part (a strong voxel outside the scan seeds nothing).
    """
    if t_low > t_high:
        raise ValueError(f"t_low {t_low} must not exceed t_high {t_high}")
    keys = _keys(prob)
    weak = keys.at_least(t_low)
    strong = keys.at_least(t_high)
    if scan_mask is not None:
        weak &= scan_mask
        strong &= scan_mask
    return hysteresis_from_masks(weak, strong)
