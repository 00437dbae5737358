"""What the inference engine consumes: networks, patch size and intensity normalisation.

Both the built-in checkpoints and imported nnU-Net v2 models are turned into an
:class:`InferenceModel`; the sliding-window engine knows nothing else about where a model came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily at run time
    import torch

NormalizationKind = Literal["scale", "zscore", "ct"]


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation applied to every tile before the network sees it.

    * ``scale``: ``(x - mean) / std`` with fixed numbers (built-in models: uint8 CT → roughly [-1, 1]).
    * ``zscore``: nnU-Net's ``ZScoreNormalization``: the image's own mean/std. Call :meth:`fit` on the
      whole volume first, so every tile is normalised with the same statistics.
    * ``ct``: nnU-Net's ``CTNormalization``: clip to ``[lower, upper]`` then ``(x - mean) / std`` with
      the dataset statistics stored in the plans.
    """

    kind: NormalizationKind = "scale"
    mean: float = 127.5
    std: float = 127.5
    lower: float | None = None
    upper: float | None = None

    def fit(self, volume: Any) -> Normalization:
        """Return a copy with per-image statistics filled in (``zscore`` only; others are fixed)."""
        if self.kind != "zscore":
            return self
        import dask.array as da

        data = volume if isinstance(volume, da.Array) else da.from_array(np.asarray(volume))
        data = data.astype(np.float64)
        mean, std = da.compute(data.mean(), data.std())
        return replace(self, mean=float(mean), std=float(max(std, 1e-8)))

    def apply(self, tile: np.ndarray) -> np.ndarray:
        """Normalise a tile (any shape) to float32."""
        out = np.asarray(tile, dtype=np.float32)
        if self.kind == "ct" and self.lower is not None and self.upper is not None:
            out = np.clip(out, self.lower, self.upper)
        return (out - np.float32(self.mean)) / np.float32(max(self.std, 1e-8))

    def to_dict(self) -> dict[str, Any]:
        keys = ("kind", "mean", "std", "lower", "upper")
        return {key: getattr(self, key) for key in keys}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return cls(**{key: data[key] for key in ("kind", "mean", "std", "lower", "upper") if key in data})


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
