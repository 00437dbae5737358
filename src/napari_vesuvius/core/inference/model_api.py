"""What the inference engine consumes: networks, patch size and intensity normalisation.

Both the built-in checkpoints and imported nnU-Net v2 models are turned into an
:class:`InferenceModel`; the sliding-window engine knows nothing else about where a model came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily at run time
    import torch

NormalizationKind = Literal["scale", "zscore", "percentile", "ct"]
NORMALIZATION_KINDS: tuple[str, ...] = ("scale", "zscore", "percentile", "ct")
#: kinds whose statistics are fitted on each volume (:meth:`Normalization.fit`)
FITTED_KINDS: tuple[str, ...] = ("zscore", "percentile")
#: intensity range of the built-in models' training data (uint8 CT); see :mod:`.intensity`
UINT8_RANGE: tuple[float, float] = (0.0, 255.0)
_FIELDS = ("kind", "mean", "std", "lower", "upper", "input_range", "use_mask")


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"normalization {name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"normalization {name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation applied to every tile before the network sees it.

    * ``scale``: ``(x - mean) / std`` with fixed numbers (built-in models: uint8 CT → roughly [-1, 1]).
    * ``zscore``: nnU-Net's ``ZScoreNormalization``: the image's own mean/std. Call :meth:`fit` on the
      whole volume first, so every tile is normalised with the same statistics. ``use_mask`` (nnU-Net's
      ``use_mask_for_norm``): the statistics are those of the scanned region only (the hole-filled
      non-zero mask), so the air outside the scan and how much of it a volume holds never change them,
      and voxels that are exactly 0 stay 0 (see :meth:`apply`).
    * ``percentile``: the image's own 1st and 99th percentiles of its scanned (non-zero) voxels map to
      -1 and +1 (:func:`.zscore.percentile_statistics`; ``lower``/``upper`` hold them after :meth:`fit`,
      ``mean``/``std`` their midpoint and half-difference). Unlike the z-score, the anchors are the
      background and papyrus levels themselves, so they do not move with the share of papyrus (a packed
      region is mostly papyrus, a loose one mostly air); no clipping.
    * ``ct``: nnU-Net's ``CTNormalization``: clip to ``[lower, upper]`` then ``(x - mean) / std`` with
      the dataset statistics stored in the plans.

    ``input_range`` (``scale`` only): the intensity range ``(low, high)`` of the data the model was
    trained on, which its fixed numbers assume; volumes of another dtype are converted onto it (see
    :mod:`.intensity`). ``None``: the volume is used as it is (always so for the fitted kinds and ``ct``).
    Every field is checked on construction (``ValueError``): a checkpoint cannot smuggle in a zero or
    non-finite std or an unknown kind.
    """

    kind: NormalizationKind = "scale"
    mean: float = 127.5
    std: float = 127.5
    lower: float | None = None
    upper: float | None = None
    input_range: tuple[float, float] | None = UINT8_RANGE
    use_mask: bool = False

    def __post_init__(self) -> None:
        if self.kind not in NORMALIZATION_KINDS:
            known = ", ".join(NORMALIZATION_KINDS)
            raise ValueError(f"unknown normalization kind {self.kind!r} (known: {known})")
        if not isinstance(self.use_mask, bool | np.bool_):
            raise ValueError(f"normalization use_mask must be true or false, got {self.use_mask!r}")
        object.__setattr__(self, "use_mask", bool(self.use_mask))
        if self.use_mask and self.kind not in FITTED_KINDS:
            raise ValueError(
                f"normalization use_mask applies to kinds {' and '.join(FITTED_KINDS)} only, "
                f"not {self.kind!r}"
            )
        mean, std = _finite(self.mean, "mean"), _finite(self.std, "std")
        if std <= 0:
            raise ValueError(f"normalization std must be positive, got {self.std!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        pairs = ((self.lower, "lower"), (self.upper, "upper"))
        bounds = [None if value is None else _finite(value, name) for value, name in pairs]
        if self.kind == "ct" and None in bounds:
            raise ValueError("normalization kind 'ct' needs both lower and upper clip bounds")
        if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
            raise ValueError(f"normalization lower {bounds[0]} is above upper {bounds[1]}")
        object.__setattr__(self, "lower", bounds[0])
        object.__setattr__(self, "upper", bounds[1])
        object.__setattr__(self, "input_range", self._checked_range())

    def _checked_range(self) -> tuple[float, float] | None:
        if self.kind != "scale" or self.input_range is None:
            return None  # z-score and CT statistics are taken in the volume's own units
        value = self.input_range
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
            raise ValueError(f"normalization input_range must be [low, high], got {value!r}")
        low, high = _finite(value[0], "input_range low"), _finite(value[1], "input_range high")
        if not low < high:
            raise ValueError(f"normalization input_range must have low < high, got {value!r}")
        return (low, high)

    def fit(self, volume: Any) -> Normalization:
        """Return a copy with per-image statistics filled in (``zscore`` only; others are fixed).

        The statistics are nnU-Net's: over the bounding box of the non-zero voxels, so air around
        the scanned region does not count, or with ``use_mask`` over the hole-filled non-zero mask
        (see :mod:`.zscore`); NumPy or dask input, bounded memory. Every inference path and the
        training sampler call this one method, so they all take the same statistics.
        A volume holding NaN or infinite values has no statistics: VolumeError (naming the file when
        the volume was opened by ``core.volume``).
        """
        if self.kind == "percentile":
            from .zscore import percentile_statistics

            low, high = percentile_statistics(volume)
            require_finite_statistics(volume, low, high)
            mean, half = (low + high) / 2, max((high - low) / 2, 1e-8)
            return replace(self, mean=mean, std=half, lower=low, upper=high)
        if self.kind != "zscore":
            return self
        from .zscore import zscore_statistics

        mean, std = zscore_statistics(volume, use_mask=self.use_mask)
        require_finite_statistics(volume, mean, std)
        return replace(self, mean=mean, std=std)

    @property
    def fitted_per_volume(self) -> bool:
        """True when :meth:`fit` takes statistics from each volume (z-score, percentile)."""
        return self.kind in FITTED_KINDS

    def apply(self, tile: np.ndarray) -> np.ndarray:
        """Normalise a tile (any shape) to float32.

        With ``use_mask`` every voxel that is exactly 0 stays 0, as nnU-Net leaves the outside of its
        mask: a tile cannot see whether a zero is enclosed by the scan (nnU-Net normalises enclosed
        zeros too), so all zeros are treated alike, in training and at inference.
        """
        raw = np.asarray(tile)
        out = np.asarray(raw, dtype=np.float32)
        if self.kind == "ct" and self.lower is not None and self.upper is not None:
            out = np.clip(out, self.lower, self.upper)
        out = (out - np.float32(self.mean)) / np.float32(max(self.std, 1e-8))
        if self.use_mask:
            out[raw == 0] = 0.0
        return out

    def to_dict(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in _FIELDS}
        data["input_range"] = None if self.input_range is None else list(self.input_range)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`; unknown fields are refused, a missing ``input_range`` of a
        ``scale`` normalisation (checkpoints saved before it was recorded) reads as uint8 0–255, a
        missing ``use_mask`` as false."""
        if not isinstance(data, Mapping):
            raise ValueError(f"normalization must be a dict, got {type(data).__name__}")
        unknown = sorted(str(key) for key in data if key not in _FIELDS)
        if unknown:
            raise ValueError(f"unknown normalization field(s) {unknown}")
        return cls(**{key: data[key] for key in _FIELDS if key in data})


def require_finite_statistics(volume: Any, *values: Any) -> None:
    """Raise VolumeError naming the volume's file when fitted statistics are NaN/Inf (bad voxels)."""
    if all(math.isfinite(float(v)) for v in values):
        return
    from napari_vesuvius.core.errors import VolumeError
    from napari_vesuvius.core.volume.io import source_path

    raise VolumeError(
        source_path(volume),
        "contains NaN or infinite values (its intensity statistics are not finite); "
        "replace them (e.g. by 0) before predicting",
    )


@dataclass
class InferenceModel:
    """One model as the engine runs it.

    ``networks`` are the members of one model (e.g. nnU-Net folds): their logits are averaged before
    the softmax, as nnU-Net does. Each network maps ``(B, 1, Z, Y, X)`` float tensors to logits
    ``(B, num_classes, Z, Y, X)``; class ``surface_class`` is the surface. Several *different* models
    are combined by the engine as a weighted average of probabilities (see ``WeightedModel``).
    """

    networks: Sequence[torch.nn.Module]
    patch_size: tuple[int, int, int]
    normalization: Normalization = field(default_factory=Normalization)
    num_classes: int = 2
    surface_class: int = 1
    name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class WeightedModel:
    """A member of a probability-averaging ensemble of different models."""

    model: InferenceModel
    weight: float = 1.0
