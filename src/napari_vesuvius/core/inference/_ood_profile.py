"""Intensity profiles of scanned voxels: a cheap sample of a volume and its statistics (see :mod:`.ood`).

A profile describes the voxels inside the scanned region (value != 0, the convention of every reader:
air outside the scan is exactly 0) in the volume's raw units: percentiles, mean and std, a coarse
histogram, and the sheet/background contrast found by Otsu's two-class split (the *dark* class is
air and gaps, the *bright* class papyrus). Profiles are stored in checkpoints, so :meth:`from_dict`
treats its input as untrusted: every number must be finite and every field well formed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

#: percentiles of the scanned voxels a profile records
PERCENTILES: tuple[float, ...] = (0.5, 5.0, 25.0, 50.0, 75.0, 95.0, 99.5)
#: the voxels a profile samples by default (27 blocks of 8 × 34 × 34): a few ms on a NumPy volume
DEFAULT_MAX_VOXELS = 262_144
#: blocks per axis of the sample (at most; fewer on a short axis)
BLOCKS_PER_AXIS = 3
#: slices per block along axis 0 (z)
SLAB_DEPTH = 8
HISTOGRAM_BINS = 32
#: source of a profile built from an nnU-Net plans' foreground intensity properties
NNUNET_SOURCE = "nnunet-foreground"
#: nnU-Net's foreground intensity property names (over labelled voxels), also kept for our bright class
FOREGROUND_KEYS: tuple[str, ...] = ("mean", "median", "std", "percentile_00_5", "percentile_99_5")
#: per-volume features whose range over the training volumes a profile keeps
SPREAD_KEYS: tuple[str, ...] = ("median", "dark", "bright", "width", "contrast", "separation")
_MAX_SOURCE = 500


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"intensity profile {where} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"intensity profile {where} must be finite, got {value!r}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"intensity profile {where} must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class IntensityProfile:
    """Statistics of the scanned voxels of one volume or of a model's training volumes.

    ``percentiles`` maps each of :data:`PERCENTILES` to a value; ``dark`` / ``bright``: medians of
    Otsu's two classes; ``contrast``: Otsu separability η (between-class / total variance, 0–1, scale
    free); ``separation``: difference of the class means over the
    within-class std (a signal-to-noise ratio of the sheets, scale free and independent of how many
    voxels are papyrus); ``foreground``: the bright class in nnU-Net's
    foreground property names. ``spread``: per-volume ``[min, max]`` of :data:`SPREAD_KEYS` over the
    volumes the profile pools (equal ends for one volume). A profile from nnU-Net plans
    (``source == "nnunet-foreground"``) knows only ``foreground`` (its labelled voxels).
    """

    source: str
    voxels: int
    foreground: dict[str, float]
    percentiles: dict[float, float] = field(default_factory=dict)
    mean: float | None = None
    std: float | None = None
    dark: float | None = None
    bright: float | None = None
    contrast: float | None = None
    separation: float | None = None
    histogram: tuple[int, ...] = ()
    histogram_range: tuple[float, float] | None = None
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    volumes: int = 1
    dtype: str = ""

    @property
    def is_foreground_only(self) -> bool:
        """True for nnU-Net plans: no statistics of all scanned voxels, only of labelled ones."""
        return self.source == NNUNET_SOURCE

    @property
    def median(self) -> float | None:
        return self.percentiles.get(50.0)

    @property
    def width(self) -> float | None:
        """Sheet/background contrast in grey levels: bright minus dark class median."""
        return None if self.dark is None or self.bright is None else self.bright - self.dark

    def feature(self, key: str) -> float | None:
        """One of :data:`SPREAD_KEYS` of this profile itself (pooled over its volumes)."""
        return self.median if key == "median" else self.width if key == "width" else getattr(self, key)

    def range_of(self, key: str) -> tuple[float, float] | None:
        """``[min, max]`` of a feature over the training volumes (the pooled value when not recorded)."""
        if key in self.spread:
            return self.spread[key]
        value = self.feature(key)
        return None if value is None else (value, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data (checkpoint metadata); :meth:`from_dict` reads it back."""
        if self.is_foreground_only:
            return {"source": self.source, "voxels": self.voxels, **self.foreground}
        return {
            "source": self.source,
            "voxels": self.voxels,
            "volumes": self.volumes,
            "dtype": self.dtype,
            "percentiles": [[p, v] for p, v in self.percentiles.items()],
            "mean": self.mean,
            "std": self.std,
            "dark": self.dark,
            "bright": self.bright,
            "contrast": self.contrast,
            "separation": self.separation,
            "foreground": dict(self.foreground),
            "histogram": list(self.histogram),
            "histogram_range": None if self.histogram_range is None else list(self.histogram_range),
            "spread": {key: list(value) for key, value in self.spread.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> IntensityProfile:
        """Validate and read :meth:`to_dict` data or an nnU-Net plans entry (``source`` nnunet-foreground).

        ValueError naming the field for anything ill-formed: non-finite numbers, wrong types, unknown
        percentiles, a negative std, a std of zero.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"intensity profile must be a dict, got {type(data).__name__}")
        source = data.get("source", "")
        if not isinstance(source, str) or len(source) > _MAX_SOURCE:
            raise ValueError("intensity profile source must be a short string")
        if source == NNUNET_SOURCE:
            foreground = _foreground(data, "")
            voxels = _count(data.get("voxels", 0), "voxels")
            return cls(source=source, voxels=voxels, foreground=foreground)
        percentiles = _percentiles(data.get("percentiles"))
        numbers = {
            key: _number(data.get(key), key)
            for key in ("mean", "std", "dark", "bright", "contrast", "separation")
        }
        if numbers["std"] <= 0:
            raise ValueError("intensity profile std must be positive")
        if not 0.0 <= numbers["contrast"] <= 1.0:
            raise ValueError("intensity profile contrast must lie in [0, 1]")
        histogram = data.get("histogram", [])
        if not isinstance(histogram, list | tuple) or len(histogram) > 4096:
            raise ValueError("intensity profile histogram must be a list of counts")
        counts = tuple(_count(c, "histogram") for c in histogram)
        hist_range = data.get("histogram_range")
        if hist_range is not None:
            hist_range = _pair(hist_range, "histogram_range")
        spread_data = data.get("spread", {})
        if not isinstance(spread_data, Mapping):
            raise ValueError("intensity profile spread must be a dict")
        spread = {key: _pair(spread_data[key], f"spread.{key}") for key in SPREAD_KEYS if key in spread_data}
        dtype = data.get("dtype", "")
        if not isinstance(dtype, str) or len(dtype) > 32:
            raise ValueError("intensity profile dtype must be a short string")
        return cls(
            source=source,
            voxels=_count(data.get("voxels"), "voxels"),
            volumes=max(1, _count(data.get("volumes", 1), "volumes")),
            foreground=_foreground(data.get("foreground"), "foreground."),
            percentiles=percentiles,
            histogram=counts,
            histogram_range=hist_range,
            spread=spread,
            dtype=dtype,
            **numbers,
        )


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"intensity profile {where} must be [low, high]")
    low, high = _number(value[0], where), _number(value[1], where)
    if low > high:
        raise ValueError(f"intensity profile {where} has low > high")
    return low, high


def _percentiles(value: Any) -> dict[float, float]:
    if not isinstance(value, list | tuple):
        raise ValueError("intensity profile percentiles must be a list of [percentile, value]")
    out: dict[float, float] = {}
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise ValueError("intensity profile percentiles must be a list of [percentile, value]")
        p = _number(item[0], "percentile")
        if p not in PERCENTILES:
            raise ValueError(f"intensity profile percentile {p} is not one of {PERCENTILES}")
        out[p] = _number(item[1], f"percentile {p:g}")
    if set(out) != set(PERCENTILES):
        raise ValueError(f"intensity profile needs the percentiles {PERCENTILES}")
    values = [out[p] for p in PERCENTILES]
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError("intensity profile percentiles must not decrease")
    return out


def _foreground(value: Any, prefix: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"intensity profile {prefix or 'foreground'} must be a dict")
    out = {key: _number(value.get(key), f"{prefix}{key}") for key in FOREGROUND_KEYS}
    if out["std"] < 0:
        raise ValueError(f"intensity profile {prefix}std must not be negative")
    if out["percentile_00_5"] > out["percentile_99_5"]:
        raise ValueError(f"intensity profile {prefix}percentile_00_5 is above percentile_99_5")
    return out


# ----------------------------------------------------------------------------------------- sampling
def _array_of(volume: Any) -> Any:
    """The array-like to slice: a LazyVolume's full-resolution level, anything else as it is."""
    levels = getattr(volume, "levels", None)
    return levels[0] if levels else volume


def _block_slices(shape: tuple[int, ...], max_voxels: int) -> list[tuple[slice, ...]]:
    """Up to 3×3×3 blocks centred in the cells of a grid over the volume (deterministic).

    Blocks are thin along axis 0 (:data:`SLAB_DEPTH` slices) and wide in the other two: a TIFF stack
    decodes whole pages, so the sample costs a few dozen pages of a scroll, never most of them.
    """
    total = math.prod(shape)
    if total <= max_voxels:
        return [tuple(slice(0, n) for n in shape)]
    depth = min(SLAB_DEPTH, shape[0])
    side = max(1, int(math.sqrt(max_voxels / (BLOCKS_PER_AXIS**3 * depth))))
    per_axis = []
    for n, b in zip(shape, (depth, min(side, shape[1]), min(side, shape[2])), strict=True):
        count = max(1, min(BLOCKS_PER_AXIS, n // b))
        starts = sorted({min(max(int((i + 0.5) * n / count - b / 2), 0), n - b) for i in range(count)})
        per_axis.append([slice(s, s + b) for s in starts])
    return [(a, b, c) for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]


def sample_scanned(volume: Any, max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[np.ndarray, str]:
    """Non-zero voxels of a few blocks spread over ``volume`` (float64, 1-D) and the volume's dtype.

    NumPy, dask, zarr and :class:`~napari_vesuvius.core.volume.io.LazyVolume` (or anything sliceable
    with ``shape``); reads at most ``max_voxels`` voxels, never the whole of a large volume.
    """
    array = _array_of(volume)
    shape = tuple(int(n) for n in array.shape)
    if len(shape) != 3:
        raise ValueError(f"an intensity profile needs a 3D volume, got shape {shape}")
    if max_voxels < 1:
        raise ValueError("max_voxels must be positive")
    slices = _block_slices(shape, int(max_voxels))
    if hasattr(array, "dask") and hasattr(array, "compute"):
        import dask

        blocks = dask.compute(*(array[s] for s in slices), scheduler="threads")
    else:
        blocks = [np.asarray(array[s]) for s in slices]
    values = np.concatenate([np.asarray(b).ravel() for b in blocks])
    dtype = str(values.dtype)
    values = values[values != 0].astype(np.float64, copy=False)
    if values.size and not np.isfinite(values).all():
        values = values[np.isfinite(values)]
    return values, dtype


def _otsu(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Otsu's threshold over a 256-bin histogram of ``values`` within [low, high], and η there."""
    if not high > low:
        return low, 0.0
    counts, edges = np.histogram(np.clip(values, low, high), bins=256, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = counts / counts.sum()
    w0 = np.cumsum(weight)
    m0 = np.cumsum(weight * centres)
    total_mean = m0[-1]
    total_var = float((weight * (centres - total_mean) ** 2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * w0 - m0) ** 2 / (w0 * (1 - w0))
    between = np.nan_to_num(between[:-1], nan=0.0, posinf=0.0)
    k = int(np.argmax(between))
    eta = float(between[k] / total_var) if total_var > 0 else 0.0
    return float(edges[k + 1]), min(max(eta, 0.0), 1.0)


def profile_of_values(values: np.ndarray, *, source: str = "", dtype: str = "") -> IntensityProfile:
    """The profile of a 1-D sample of scanned voxels (ValueError when it holds fewer than 2 values)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < 2:
        raise ValueError("too few scanned (non-zero) voxels for an intensity profile")
    pct = np.percentile(values, PERCENTILES)
    mean, std = float(values.mean()), float(values.std())
    threshold, eta = _otsu(values, float(pct[0]), float(pct[-1]))
    bright_values = values[values >= threshold]
    dark_values = values[values < threshold]
    if bright_values.size == 0 or dark_values.size == 0:
        bright_values = dark_values = values
    dark, bright = float(np.median(dark_values)), float(np.median(bright_values))
    within = math.sqrt(
        (dark_values.var() * dark_values.size + bright_values.var() * bright_values.size) / values.size
    )
    separation = (float(bright_values.mean()) - float(dark_values.mean())) / max(within, 1e-6)
    fg_pct = np.percentile(bright_values, (0.5, 50.0, 99.5))
    foreground = {
        "mean": float(bright_values.mean()),
        "median": float(fg_pct[1]),
        "std": float(bright_values.std()),
        "percentile_00_5": float(fg_pct[0]),
        "percentile_99_5": float(fg_pct[2]),
    }
    low, high = float(values.min()), float(values.max())
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high if high > low else low + 1))
    safe_std = std if std > 0 else 1.0
    features = {"median": float(pct[3]), "dark": dark, "bright": bright, "width": bright - dark}
    features.update(contrast=eta, separation=separation)
    return IntensityProfile(
        source=source[:_MAX_SOURCE],
        voxels=int(values.size),
        foreground=foreground,
        percentiles={p: float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
        mean=mean,
        std=safe_std,
        dark=dark,
        bright=bright,
        contrast=eta,
        separation=separation,
        histogram=tuple(int(c) for c in counts),
        histogram_range=(low, high),
        spread={key: (value, value) for key, value in features.items()},
        dtype=dtype,
    )


def _name_of(volume: Any) -> str:
    if isinstance(volume, str | Path):
        return str(volume)
    location = getattr(volume, "location", None)
    return str(location) if location else ""


def profile_of(volume: Any, *, max_voxels: int = DEFAULT_MAX_VOXELS, source: str = "") -> IntensityProfile:
    """A cheap, deterministic profile of ``volume``'s scanned voxels (a few blocks, ≤ ``max_voxels``).

    ``volume``: NumPy / dask / zarr array, LazyVolume, or a path (opened lazily). ValueError when
    the blocks hold fewer than 2 scanned voxels.
    """
    if isinstance(volume, str | Path):
        from napari_vesuvius.core.volume.io import open_volume

        with open_volume(volume) as opened:
            return profile_of(opened, max_voxels=max_voxels, source=source or str(volume))
    values, dtype = sample_scanned(volume, max_voxels)
    return profile_of_values(values, source=source or _name_of(volume), dtype=dtype)


def training_profile(
    volumes: Iterable[Any], *, max_voxels: int = DEFAULT_MAX_VOXELS, source: str = "training"
) -> IntensityProfile:
    """One profile pooling several training volumes (arrays, LazyVolumes or paths), with their spread.

    Pooled statistics come from the union of the per-volume samples; ``spread`` holds each feature's
    ``[min, max]`` over the volumes, so a model trained on a broad set accepts anything inside it.
    """
    samples, profiles, dtypes = [], [], set()
    for volume in volumes:
        if isinstance(volume, str | Path):
            from napari_vesuvius.core.volume.io import open_volume

            with open_volume(volume) as opened:
                values, dtype = sample_scanned(opened, max_voxels)
        else:
            values, dtype = sample_scanned(volume, max_voxels)
        if values.size < 2:
            continue
        samples.append(values)
        dtypes.add(dtype)
        profiles.append(profile_of_values(values))
    if not samples:
        raise ValueError("no scanned (non-zero) voxels in the training volumes")
    pooled = profile_of_values(np.concatenate(samples), source=source, dtype="/".join(sorted(dtypes)))
    spread = {}
    for key in SPREAD_KEYS:
        values = [p.feature(key) for p in profiles]
        spread[key] = (float(min(values)), float(max(values)))
    return replace(pooled, spread=spread, volumes=len(profiles))
