"""Model members and their weights, in one place: :class:`ModelSpec`, :func:`load_models`, :func:`as_members`.

A run takes models in any of three forms: :class:`ModelSpec` s (a checkpoint file or nnU-Net folder,
its ensemble weight, nnU-Net folds and checkpoint name; loaded here), loaded ``InferenceModel`` s
(weight 1) or ``WeightedModel`` s. :func:`load_models` turns a mix of them into the weighted members
of a probability-averaging ensemble; :func:`as_members` does the same for models already loaded and
checks them. The engine, the scroll runner, the submission pipeline, the CLI and the widgets all call
these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_vesuvius.core.errors import CheckpointError

from .loading import DEFAULT_NNUNET_CHECKPOINT
from .model_api import InferenceModel, WeightedModel


@dataclass(frozen=True)
class ModelSpec:
    """A model to load: checkpoint file or nnU-Net folder, its ensemble weight, nnU-Net folds/checkpoint."""

    path: Path
    weight: float = 1.0
    folds: tuple[int | str, ...] | None = None
    checkpoint: str = DEFAULT_NNUNET_CHECKPOINT

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str path compares and prints as a Path

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "weight": self.weight,
            "folds": None if self.folds is None else list(self.folds),
            "checkpoint": self.checkpoint,
        }


def parse_folds(folds: Sequence[str] | None) -> tuple[int | str, ...] | None:
    """CLI fold names (``"0" "1" "all"``) as ints where numeric; None (all folds) stays None."""
    return None if folds is None else tuple(int(f) if f.isdigit() else f for f in folds)


def model_specs(
    paths: Sequence[str | Path],
    weights: Sequence[float | None] | None = None,
    folds: tuple[int | str, ...] | None = None,
    checkpoint: str = DEFAULT_NNUNET_CHECKPOINT,
) -> list[ModelSpec]:
    """One :class:`ModelSpec` per path; ``weights`` (None entries: 1.0) must match ``paths`` one to one."""
    if weights is not None and len(weights) != len(paths):
        raise CheckpointError(None, f"one weight per model is needed ({len(paths)}), got {len(weights)}")
    weights = weights if weights is not None else [None] * len(paths)
    return [
        ModelSpec(Path(path), 1.0 if weight is None else float(weight), folds, checkpoint)
        for path, weight in zip(paths, weights, strict=True)
    ]


def as_members(models: InferenceModel | WeightedModel | Sequence[Any]) -> list[WeightedModel]:
    """Loaded models as checked ensemble members (an ``InferenceModel`` gets weight 1)."""
    if isinstance(models, InferenceModel):
        return [WeightedModel(models, 1.0)]
    if isinstance(models, WeightedModel):
        return [models]
    members = [m if isinstance(m, WeightedModel) else WeightedModel(m, 1.0) for m in models]
    if not members:
        raise ValueError("predict_volume needs at least one model")
    for member in members:
        if not isinstance(member.model, InferenceModel):
            raise TypeError(f"expected InferenceModel or WeightedModel, got {type(member.model).__name__}")
        if not member.weight > 0:
            raise ValueError(f"ensemble weights must be positive, got {member.weight}")
        if not member.model.networks:
            raise ValueError(f"model {member.model.name!r} has no networks")
    return members


def load_models(specs: ModelSpec | Sequence[ModelSpec | Any]) -> list[WeightedModel]:
    """Load every :class:`ModelSpec` once into a ``WeightedModel``; loaded models pass through."""
    from napari_vesuvius.core.export import SubmissionError

    from .loading import load_model

    if isinstance(specs, ModelSpec | InferenceModel | WeightedModel):
        specs = [specs]
    if not specs:
        raise SubmissionError(None, "no model given: pass at least one model")
    members = []
    for spec in specs:
        if isinstance(spec, WeightedModel):
            members.append(spec)
        elif isinstance(spec, InferenceModel):
            members.append(WeightedModel(spec, 1.0))
        else:
            if not spec.weight > 0:
                raise CheckpointError(spec.path, f"ensemble weight must be positive, got {spec.weight}")
            folds = None if spec.folds is None else list(spec.folds)
            model = load_model(spec.path, folds=folds, checkpoint=spec.checkpoint)
            members.append(WeightedModel(model, float(spec.weight)))
    return members


def members_of(models: Any) -> list[WeightedModel]:
    """:func:`load_models` when ``models`` holds a :class:`ModelSpec`, else :func:`as_members`."""
    if isinstance(models, ModelSpec):
        return load_models([models])
    if isinstance(models, list | tuple) and any(isinstance(m, ModelSpec) for m in models):
        return load_models(models)
    return as_members(models)


def describe_models(models: Sequence[Any]) -> list[dict[str, Any]]:
    """JSON description of specs (path, weight, folds, checkpoint) or loaded models (name, weight)."""
    described = []
    for model in models:
        if isinstance(model, ModelSpec):
            described.append(model.describe())
        else:
            inner = getattr(model, "model", model)
            described.append({"name": getattr(inner, "name", ""), "weight": getattr(model, "weight", 1.0)})
    return described
