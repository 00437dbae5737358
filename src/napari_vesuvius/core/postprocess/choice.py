"""Choose a model's clean-up on its validation volumes, as nnU-Net determines its post-processing.

The winners' notes (docs/challenge.md, "Post-processing defaults") say that only the hysteresis
``T_low`` mattered much and that its best value depends on the model; the anisotropic closing helps a
model that leaves small breaks in a sheet, and merges close sheets for one that does not. So a fixed
clean-up is a compromise, and a trained model should carry the clean-up that suits it.

:func:`iter_choose_postprocess` scores a small grid on labelled validation volumes: every ``T_low`` of
:data:`T_LOW_GRID` for each closing of :data:`CLOSING_GRID`, everything else as in the base config
(by default the built-in defaults). The best setting is adopted only when its mean leaderboard score
beats the base config by at least ``min_gain``; otherwise the base config stays, so an unhelpful grid
never changes a model's output. The result (:class:`PostprocessChoice`) is plain data: training stores
it in the checkpoint's metadata under :data:`METADATA_KEY`, and :func:`model_postprocess` reads it
back, so ``submit``, the Export and Tune docks and the demo use the model's own clean-up by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.postprocess.config import ConfigError, PostprocessConfig
from napari_vesuvius.core.postprocess.sweep import SweepCase, iter_sweep
from napari_vesuvius.core.progress import Progress, scaled

#: Key of the choice in a checkpoint's ``metadata`` (and of ``InferenceModel.metadata``).
METADATA_KEY = "postprocess"
#: Hysteresis T_low values tried (T_high stays at the base config's value).
T_LOW_GRID: tuple[float, ...] = tuple(round(0.15 + 0.05 * i, 2) for i in range(14))  # 0.15 … 0.80
#: (closing z-radius, closing xy-radius) pairs tried: the default, a z-only closing, none.
CLOSING_GRID: tuple[tuple[int, int], ...] = ((2, 1), (1, 0), (0, 0))
#: Smallest mean-score gain over the base config for a different setting to be adopted.
MIN_GAIN = 0.005


@dataclass(frozen=True)
class PostprocessChoice:
    """The clean-up chosen for one model, with the evidence: scores of every setting tried."""

    config: PostprocessConfig
    score: float
    base_score: float
    volumes: tuple[str, ...]
    #: one row per setting tried: ``{"closing_z", "closing_xy", "t_low", "score"}`` (mean over volumes)
    tried: tuple[dict[str, float], ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        """True when a setting other than the base config was adopted (it then scores higher)."""
        return self.score > self.base_score

    def describe(self) -> str:
        """One line for logs and widget messages."""
        c = self.config
        what = f"hysteresis {c.t_low:g}/{c.t_high:g}, closing z{c.closing_z}/xy{c.closing_xy}"
        return (
            f"clean-up {what}: mean score {self.score:.4f} on {len(self.volumes)} validation volume(s) "
            f"({', '.join(self.volumes)}); the base settings score {self.base_score:.4f}"
        )

    def to_metadata(self) -> dict[str, Any]:
        """Plain data for a checkpoint's metadata (loads with ``weights_only=True``)."""
        return {
            "config": self.config.to_dict(),
            "score": float(self.score),
            "base_score": float(self.base_score),
            "volumes": list(self.volumes),
            "tried": [dict(row) for row in self.tried],
            "chosen_by": "validation sweep of T_low x closing (napari_vesuvius.core.postprocess.choice)",
        }

    @classmethod
    def from_metadata(cls, data: Any, source: str = "checkpoint metadata") -> PostprocessChoice:
        """Read :meth:`to_metadata` back; a malformed entry raises :class:`ConfigError` naming ``source``."""
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ConfigError(source, f"{METADATA_KEY!r} must hold a 'config' object")
        config = PostprocessConfig.from_dict(data["config"], source)
        try:
            return cls(
                config=config,
                score=float(data.get("score", float("nan"))),
                base_score=float(data.get("base_score", float("nan"))),
                volumes=tuple(str(v) for v in data.get("volumes", ())),
                tried=tuple(dict(row) for row in data.get("tried", ())),
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(source, f"malformed {METADATA_KEY!r} entry: {error}") from None


def iter_choose_postprocess(
    cases: Sequence[SweepCase | tuple],
    base: PostprocessConfig | None = None,
    *,
    t_lows: Sequence[float] = T_LOW_GRID,
    closings: Sequence[tuple[int, int]] = CLOSING_GRID,
    min_gain: float = MIN_GAIN,
) -> Generator[Progress, None, PostprocessChoice]:
    """Job: score ``T_low`` × closing on labelled ``cases`` and return the :class:`PostprocessChoice`.

    ``cases``: ``(name, probability, label[, scan_mask])`` as for :func:`~.sweep.iter_sweep`. ``base``
    must use hysteresis; its own ``T_low`` and closing are always among the settings tried.
    """
    base = PostprocessConfig() if base is None else base
    if base.threshold_mode != "hysteresis":
        raise ConfigError(None, f"choosing T_low needs hysteresis thresholding, not {base.threshold_mode!r}")
    values = sorted({float(v) for v in (*t_lows, base.t_low) if 0.0 <= float(v) <= base.t_high})
    grid = list(dict.fromkeys([(base.closing_z, base.closing_xy), *closings]))
    tried: list[dict[str, float]] = []
    names: list[str] = []
    for index, (closing_z, closing_xy) in enumerate(grid):
        start = dataclasses.replace(base, closing_z=int(closing_z), closing_xy=int(closing_xy))
        sweep = yield from scaled(
            iter_sweep(cases, start, "t_low", values), index, 1, len(grid),
            f"closing z{closing_z}/xy{closing_xy}: ",
        )  # fmt: skip
        names = sweep.case_names
        for value, score in zip(sweep.values, sweep.mean_scores, strict=True):
            tried.append({"closing_z": closing_z, "closing_xy": closing_xy, "t_low": value, "score": score})
    yield Progress(len(grid), len(grid), "done")

    def config_of(row: dict[str, float]) -> PostprocessConfig:
        return dataclasses.replace(
            base, t_low=row["t_low"], closing_z=int(row["closing_z"]), closing_xy=int(row["closing_xy"])
        )

    base_row = next(row for row in tried if config_of(row) == base)
    best_row = max(tried, key=lambda row: row["score"])  # the first of equal scores: the base closing
    adopted = best_row if best_row["score"] >= base_row["score"] + min_gain else base_row
    return PostprocessChoice(
        config=config_of(adopted),
        score=float(adopted["score"]),
        base_score=float(base_row["score"]),
        volumes=tuple(names),
        tried=tuple(tried),
    )


def iter_choose_for_model(
    model: Any,
    volumes: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    device: str = "auto",
    batch_size: int = 2,
    base: PostprocessConfig | None = None,
) -> Generator[Progress, None, PostprocessChoice]:
    """Job: predict ``(name, ct, label)`` volumes with ``model`` (an ``InferenceModel``, engine defaults),
    then choose the clean-up on them."""
    from napari_vesuvius.core.inference.engine import predict_volume
    from napari_vesuvius.core.postprocess.pipeline import scan_mask_from_ct

    cases = []
    steps = len(volumes) + 1
    for index, (name, ct, label) in enumerate(volumes):
        job = predict_volume(ct, model, device=device, batch_size=batch_size, output_dtype="float32")
        result = yield from scaled(job, index, 1, steps, f"{name}: predict ")
        cases.append(SweepCase(name, np.asarray(result.probability), label, scan_mask_from_ct(ct)))
    choice = yield from scaled(iter_choose_postprocess(cases, base), len(volumes), 1, steps, "clean-up: ")
    return choice


def _choice_in(metadata: dict[str, Any], source: str) -> PostprocessChoice | None:
    if METADATA_KEY not in metadata:
        return None
    return PostprocessChoice.from_metadata(metadata[METADATA_KEY], source)


def model_choice(model: Any) -> PostprocessChoice | None:
    """The :class:`PostprocessChoice` stored with a loaded model (``InferenceModel`` or ``WeightedModel``)."""
    metadata = getattr(getattr(model, "model", model), "metadata", None) or {}
    return _choice_in(metadata, str(metadata.get("source", "model")))


def checkpoint_choice(path: str | Path) -> PostprocessChoice | None:
    """The choice stored in a checkpoint file, read without building the network (None for an
    nnU-Net folder or a checkpoint without one)."""
    from napari_vesuvius.core.inference.checkpoint import read_checkpoint_info

    path = Path(path)
    if not path.is_file():
        return None
    return _choice_in(read_checkpoint_info(path).metadata, str(path))


def common_config(choices: Sequence[PostprocessChoice | None]) -> PostprocessConfig | None:
    """The clean-up every member of a model or ensemble chose (the same for all), or None.

    An ensemble whose members chose differently gets None: its averaged probabilities are a different
    model, whose best clean-up its members' choices do not determine.
    """
    configs = {None if choice is None else choice.config for choice in choices}
    return next(iter(configs)) if len(configs) == 1 else None


def model_postprocess(models: Sequence[Any]) -> tuple[PostprocessConfig, str]:
    """The clean-up to use by default for loaded ``models`` and a phrase saying where it comes from:
    the one they all chose (:func:`common_config`), else the built-in defaults."""
    choices = [model_choice(model) for model in models]
    config = common_config(choices)
    if config is not None:
        what = "the model's" if len(models) == 1 else f"the {len(models)} models' common"
        return config, f"{what} own clean-up (chosen on its validation volumes)"
    if len(models) > 1 and any(choice is not None for choice in choices):
        return PostprocessConfig(), "built-in defaults (the ensemble members chose different clean-ups)"
    return PostprocessConfig(), "built-in defaults"
