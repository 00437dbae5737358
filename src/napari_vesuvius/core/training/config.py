"""The complete, exact settings of a training run, stored as ``config.json`` in the run folder.

Nothing about a run is implicit: every value the runner uses is a field here, resolved before the run
starts (e.g. the learning rate of the chosen optimiser), written to ``config.json`` and printed by the
CLI. Resuming compares the stored config with the requested one field by field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import VesuviusError

#: Defaults that depend on the optimiser (nnU-Net: SGD lr 1e-2, momentum 0.99, Nesterov, wd 3e-5).
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 1e-2, "weight_decay": 3e-5},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
}
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "bf16", "fp16", "off")
#: Fields that may change when resuming without ``force``: threads, the time limit (raise it to
#: continue a run that stopped on it) and the final clean-up choice (it does not change the weights).
RESUME_NEUTRAL_FIELDS = frozenset({"loader_threads", "torch_threads", "max_minutes", "choose_postprocess"})


class TrainConfigError(VesuviusError, ValueError):
    """Invalid training settings, or settings that differ from the run being resumed."""


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the CT augmentations (see :mod:`.augment`)."""

    mirror_axes: tuple[int, ...] = (0, 1, 2)
    rot90_yx: bool = True
    #: Transpose z with y/x as well: off by default, sheets in scroll volumes wrap around the z axis.
    permute_axes: bool = False
    p_rotate: float = 0.2
    max_rotation_deg: float = 15.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_shift: float = 0.15
    shift_range: float = 0.1
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainConfigError(f"unknown augmentation settings: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (validation patches, debugging)."""
        return cls(
            mirror_axes=(),
            rot90_yx=False,
            permute_axes=False,
            p_rotate=0.0,
            p_scale=0.0,
            p_brightness=0.0,
            p_shift=0.0,
            p_contrast=0.0,
            p_gamma=0.0,
            p_noise=0.0,
            p_blur=0.0,
        )


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; :meth:`resolved` fills optimiser-dependent values."""

    epochs: int
    iterations_per_epoch: int
    patch_size: tuple[int, int, int]
    batch_size: int
    data: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    val_fraction: float = 0.2
    val_ids: tuple[str, ...] = ()
    model_preset: str = "small"
    deep_supervision: bool = True
    init: str | None = None
    fold: int | None = None
    device: str = "auto"
    amp: str = "auto"
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.99
    nesterov: bool = True
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    #: Cross-entropy weight of background voxels in narrow gaps between two separate surface components
    #: (1 = no extra weight); see :mod:`.loss`.
    gap_weight: float = 1.0
    foreground_fraction: float = 1 / 3
    val_patches: int = 20
    score_every: int = 0
    score_max_volumes: int = 2
    patience: int = 0
    seed: int = 0
    #: Wall-clock limit of the run in minutes (setup and validation included; 0 = none). The run stops
    #: at the next iteration boundary once it is reached, and the poly learning-rate schedule follows
    #: whichever is further along, iterations or time, so the rate has decayed when time runs out.
    #: The clean-up choice at the end (``choose_postprocess``) comes after the limit.
    max_minutes: float = 0.0
    #: When the run ends, choose each checkpoint's clean-up (hysteresis T_low, closing) on the held-out
    #: volumes and store it with the checkpoint (:mod:`.postprocess_step`); needs validation volumes.
    choose_postprocess: bool = True
    loader_threads: int = 1
    torch_threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        object.__setattr__(self, "pairs", tuple((str(i), str(lb)) for i, lb in self.pairs))
        object.__setattr__(self, "val_ids", tuple(str(v) for v in self.val_ids))
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig.from_dict(self.augment))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TrainConfigError` for any setting out of range (one message per problem)."""
        problems = []
        for name in ("epochs", "iterations_per_epoch", "batch_size", "val_patches", "score_max_volumes"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if len(self.patch_size) != 3 or min(self.patch_size) < 4:
            problems.append(f"patch_size must be 3 sizes of at least 4 voxels (got {self.patch_size})")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in [0, 1) (got {self.val_fraction})")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            problems.append(f"foreground_fraction must be in [0, 1] (got {self.foreground_fraction})")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            problems.append(f"device must be one of {', '.join(DEVICES)} or cuda:N (got {self.device!r})")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {', '.join(AMP_MODES)} (got {self.amp!r})")
        if self.optimizer not in OPTIMIZER_DEFAULTS:
            choices = ", ".join(OPTIMIZER_DEFAULTS)
            problems.append(f"optimizer must be one of {choices} (got {self.optimizer!r})")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr must be positive (got {self.lr})")
        if not (isinstance(self.gap_weight, int | float) and 0.0 <= float(self.gap_weight) < float("inf")):
            problems.append(f"gap_weight must be a number of at least 0 (got {self.gap_weight})")
        if not (isinstance(self.max_minutes, int | float) and 0.0 <= float(self.max_minutes) < float("inf")):
            problems.append(f"max_minutes must be 0 (no limit) or a positive number (got {self.max_minutes})")
        for name in ("score_every", "patience", "loader_threads", "torch_threads"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be 0 or more (got {getattr(self, name)})")
        if not self.data and not self.pairs:
            problems.append("no training data: give a data folder or image/label pairs")
        if problems:
            raise TrainConfigError("invalid training settings: " + "; ".join(problems))

    def resolved(self) -> TrainConfig:
        """A copy with the optimiser-dependent defaults (lr, weight decay) filled in explicitly."""
        defaults = OPTIMIZER_DEFAULTS[self.optimizer]
        return replace(
            self,
            lr=defaults["lr"] if self.lr is None else float(self.lr),
            weight_decay=defaults["weight_decay"] if self.weight_decay is None else float(self.weight_decay),
        )

    @property
    def total_iterations(self) -> int:
        return int(self.epochs) * int(self.iterations_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainConfigError(f"unknown training settings: {sorted(unknown)}")
        values = dict(data)
        if "pairs" in values:
            values["pairs"] = tuple(tuple(p) for p in values["pairs"])
        for key in ("data", "val_ids", "patch_size"):
            if key in values:
                values[key] = tuple(values[key])
        if isinstance(values.get("augment"), dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        try:
            return cls(**values)
        except TypeError as error:
            raise TrainConfigError(f"incomplete training settings: {error}") from error

    def differences(self, other: TrainConfig) -> list[str]:
        """Human-readable ``field: old -> new`` lines for settings that change what is trained."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {mine[key]!r} -> {theirs[key]!r}"
            for key in mine
            if key not in RESUME_NEUTRAL_FIELDS and mine[key] != theirs.get(key)
        ]


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config.json`` atomically (indented, keys in field order)."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``config.json``; a missing or malformed file raises :class:`TrainConfigError` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise TrainConfigError(f"{path}: no training config (not a run folder?)") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TrainConfigError(f"{path}: cannot read training config ({error})") from error
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: training config must be a JSON object")
    try:
        return TrainConfig.from_dict(data)
    except TrainConfigError as error:
        raise TrainConfigError(f"{path}: {error}") from error
