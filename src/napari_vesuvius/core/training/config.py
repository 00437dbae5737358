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
#: ``TrainConfig.normalization`` choices (``auto`` is resolved by ``model.resolve_normalization``).
NORMALIZATIONS = ("auto", "scale", "zscore", "percentile")
#: The normalisation of runs whose config.json predates the choice: fixed scale for uint8 images,
#: z-score over the non-zero box otherwise. Read from such files only, never offered.
LEGACY_NORMALIZATION = "legacy"


class TrainConfigError(VesuviusError, ValueError):
    """Invalid training settings, or settings that differ from the run being resumed."""


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the CT augmentations (see :mod:`.augment`), per patch.

    The baseline is nnU-Net v2's default pipeline (``nnUNetTrainer.get_training_transforms``, built from
    batchgeneratorsv2), in its order: spatial (rotation ±30° about every axis p 0.2, isotropic scaling
    0.7-1.4 p 0.2), mirroring, then Gaussian noise, Gaussian blur (a sigma per axis), multiplicative
    brightness, contrast (range preserved), simulated low resolution, inverted gamma, gamma (both keep
    the patch's mean and std). Factors of brightness, contrast and gamma are drawn as nnU-Net draws them
    (``BGContrast``): half the time below 1, half above, uniform on each side. Every probability here is
    per patch and at least nnU-Net's *effective* one for a single channel (nnU-Net's blur and low
    resolution apply with p 0.5 per channel, so 0.1 and 0.125 in effect).

    Beyond nnU-Net, for models that must survive another scroll (scan energy, reconstruction, packing):

    * ``brightness_range`` 0.5-1.6 at p 0.25 (nnU-Net 0.75-1.25 at p 0.15): a new scroll's global
      intensity scale. Intensity augmentations act on the *normalised* patch, so with a per-volume
      z-score (the default) a raw scale or offset is already removed, and what a new scroll changes in
      normalised units is the sheet/background contrast: a factor here is a contrast change about the
      volume mean, the change that matters; with fixed ``scale`` normalisation it is the raw scale.
    * ``contrast_range`` 0.5-1.5 at p 0.25 (nnU-Net 0.75-1.25 at p 0.15): lower and higher sheet /
      background contrast about the patch mean, clipped to the patch's own range as in nnU-Net.
    * ``shift_range`` ±0.3 at p 0.15 (nnU-Net: none): an additive offset in normalised units (z-score:
      0.3 std, about where the background lands when packing changes the volume mean).
    * noise: ``noise_variance`` is a variance (std up to 0.32, nnU-Net draws its "variance" 0-0.1 and
      uses it as the std) at p 0.15 (nnU-Net 0.1): stronger noise, i.e. lower signal-to-noise, as in
      a lower-contrast scan after z-scoring.
    * blur sigma 0.5-1.5 per axis at p 0.2 (nnU-Net 0.5-1.0, p 0.1 in effect): anisotropic blur of
      other reconstructions.
    * low resolution at p 0.25 with zoom 0.5-1 (nnU-Net p 0.125 in effect); nearest-neighbour
      downsampling then linear upsampling, one zoom for all axes, as batchgeneratorsv2 does.

    Our extras that nnU-Net lacks: exact 90° rotations in the yx plane. Axis permutations involving z
    are off by default (sheets wrap around the scroll axis). :meth:`none` turns everything off.
    A stored run lacking newer transforms keeps them off (:meth:`from_stored`); settings given now
    get these defaults for any field they leave out.
    """

    mirror_axes: tuple[int, ...] = (0, 1, 2)
    rot90_yx: bool = True
    #: Transpose z with y/x as well: off by default, sheets in scroll volumes wrap around the z axis.
    permute_axes: bool = False
    p_rotate: float = 0.2
    max_rotation_deg: float = 30.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_brightness: float = 0.25
    brightness_range: tuple[float, float] = (0.5, 1.6)
    p_shift: float = 0.15
    shift_range: float = 0.3
    p_contrast: float = 0.25
    contrast_range: tuple[float, float] = (0.5, 1.5)
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    #: Gamma on the inverted patch (nnU-Net's ``p_invert_image=1`` transform): brightens dark structure.
    p_invert_gamma: float = 0.1
    p_noise: float = 0.15
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    #: Range of the Gaussian sigma, drawn separately for each axis (anisotropic blur).
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    p_low_resolution: float = 0.25
    #: Zoom of the simulated low resolution (0.5: every second voxel kept, then interpolated back).
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        problems = [_augment_problem(f.name, getattr(self, f.name)) for f in fields(self)]
        problems = [p for p in problems if p]
        if problems:
            raise TrainConfigError("invalid augmentation settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Settings from ``config.json``; fields an older run did not store get today's defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainConfigError(f"unknown augmentation settings: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> AugmentConfig:
        """Settings of a stored run (``config.json``): transforms added since it was written stay off.

        A run resumes with what it was trained with, as far as fields can say it; settings given
        now (partial dicts, ``--config``) use :meth:`from_dict`, where missing fields get defaults.
        """
        return cls.from_dict({**ADDED_AUGMENTATIONS_OFF, **data})

    @classmethod
    def nnunet(cls) -> AugmentConfig:
        """nnU-Net v2's default pipeline as closely as these fields express it (comparisons, ablations).

        Probabilities are nnU-Net's effective ones for a single-channel patch; the noise std is at most
        0.1 as there (drawn as the root of a uniform variance, nnU-Net draws the std uniformly).
        """
        return cls(
            rot90_yx=False, max_rotation_deg=30.0, scale_range=(0.7, 1.4),
            p_noise=0.1, noise_variance=(0.0, 0.01), p_blur=0.1, blur_sigma=(0.5, 1.0),
            p_brightness=0.15, brightness_range=(0.75, 1.25), p_shift=0.0,
            p_contrast=0.15, contrast_range=(0.75, 1.25), p_low_resolution=0.125,
        )  # fmt: skip

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (validation patches, debugging): every probability is 0."""
        probabilities = {f.name: 0.0 for f in fields(cls) if f.name.startswith("p_")}
        return cls(mirror_axes=(), rot90_yx=False, permute_axes=False, **probabilities)


#: Augmentations added after runs were first stored, with the value that leaves them off.
ADDED_AUGMENTATIONS_OFF: dict[str, float] = {"p_low_resolution": 0.0, "p_invert_gamma": 0.0}


def _augment_problem(name: str, value: Any) -> str:
    """What is wrong with one :class:`AugmentConfig` field ("" when nothing is)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name.startswith("p_"):
        return (
            ""
            if number and 0.0 <= value <= 1.0
            else f"{name} must be a probability in [0, 1] (got {value!r})"
        )
    if name == "shift_range":
        return "" if number and value >= 0.0 else f"shift_range must be 0 or more (got {value!r})"
    if name.endswith(("_range", "_variance", "_sigma", "_zoom")):
        pair = isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value)
        if not pair or not 0.0 <= value[0] <= value[1]:
            return f"{name} must be (low, high) with 0 <= low <= high (got {value!r})"
        if name == "low_resolution_zoom" and not (value[0] > 0.0 and value[1] <= 1.0):
            return f"low_resolution_zoom must lie in (0, 1] (got {value!r})"
    return ""


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
    #: Intensity normalisation the model is trained with, stored in its checkpoints and applied alike by
    #: every inference path: ``zscore`` (each volume's own mean/std over its scanned region, air outside
    #: the scan left out), ``scale`` (fixed ``(x - 127.5) / 127.5`` on the uint8 range; uint16 / float
    #: images converted onto it by the intensity rule), ``auto`` (chosen by measurement; resolved to one
    #: of them before the run starts, and so stored in config.json). With ``init`` the fine-tuned model
    #: keeps its own normalisation: ``auto`` stays ``auto`` (the init model's), an explicit choice must
    #: match it.
    normalization: str = "auto"
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
        if self.normalization not in (*NORMALIZATIONS, LEGACY_NORMALIZATION):
            choices = ", ".join(NORMALIZATIONS)
            problems.append(f"normalization must be one of {choices} (got {self.normalization!r})")
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
        """A copy with the optimiser-dependent defaults (lr, weight decay) and the ``auto``
        normalisation (a fresh model's) filled in explicitly."""
        from .model import resolve_normalization  # imports torch: only the training process resolves

        defaults = OPTIMIZER_DEFAULTS[self.optimizer]
        return replace(
            self,
            lr=defaults["lr"] if self.lr is None else float(self.lr),
            weight_decay=defaults["weight_decay"] if self.weight_decay is None else float(self.weight_decay),
            normalization=resolve_normalization(self.normalization, self.init),
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
    # a run stored before the normalisation was a setting resumes with what it was trained with
    data.setdefault("normalization", LEGACY_NORMALIZATION)
    try:
        if isinstance(data.get("augment"), dict):  # transforms added since the run was stored stay off
            data["augment"] = AugmentConfig.from_stored(data["augment"])
        return TrainConfig.from_dict(data)
    except TrainConfigError as error:
        raise TrainConfigError(f"{path}: {error}") from error
