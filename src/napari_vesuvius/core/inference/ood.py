"""The out-of-distribution intensity check: is a volume clearly unlike the data a model was trained on?

Built-in checkpoints record the :class:`IntensityProfile` of their training volumes' scanned voxels
(``metadata["training_intensity"]``, written by the training run); nnU-Net models carry their plans'
``foreground_intensity_properties_per_channel["0"]`` there (``source: "nnunet-foreground"``). Before
predicting, :func:`check_intensity` profiles a few blocks of the volume (cheap, never the whole
scroll) and compares in the space that matters for the model's normalisation:

* ``scale`` (fixed numbers: absolute grey levels matter): the mid-level between background and sheets
  (``(dark + bright) / 2``, Otsu's two classes) against the training volumes' range, in units of the
  training sheet/background difference ``W``; and the sheet/background difference itself against the
  training range (ratio). Both are taken after the model's dtype conversion (:mod:`.intensity`).
* ``zscore`` / ``percentile`` (fitted per volume): brightness and offset are normalised away, so the
  scale-free ``separation`` (sheet minus background over the within-class noise) is what the network
  feels; it is compared as a ratio to the training range. The raw mid-level is still compared as for
  ``scale``: a volume far brighter or darker than anything in training comes from another scan
  setting, which the per-volume normalisation undoes for brightness but which often changes contrast
  and noise too, so the user is told and asked to check (the remedy says the brightness itself is
  compensated). A model trained on a domain-randomised set
  has a wide training range and stays quiet on the shifts it has seen.
* ``ct`` (nnU-Net CTNormalization, also ``scale`` with nnU-Net plans): the sample's bright class
  (papyrus, what nnU-Net's labelled foreground is made of) against the plans' foreground median, in
  units of the plans' foreground std.

"Clearly outside" is calibrated on the synthetic fragments (docs/user-guide.md, *When the model warns
that a volume looks different*):
the thresholds below stay quiet on other seeds of the training generator and fire on a brightness
scaled copy (×1.5, ×0.6), a copy with its sheet/background contrast reduced (×0.6 about the mean) and
a noisier copy. A model without a recorded profile (checkpoints saved before it existed) is not
checked: :func:`check_intensity` returns None silently, as it does for a sample without scanned voxels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._ood_profile import (
    DEFAULT_MAX_VOXELS,
    NNUNET_SOURCE,
    PERCENTILES,
    IntensityProfile,
    profile_of,
    profile_of_values,
    sample_scanned,
    training_profile,
)

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "NNUNET_SOURCE",
    "PERCENTILES",
    "IntensityProfile",
    "IntensityReference",
    "IntensityShift",
    "check_intensity",
    "intensity_reference",
    "profile_of",
    "profile_of_values",
    "sample_scanned",
    "training_intensity_of",
    "training_profile",
]

#: metadata key of the training profile in an InferenceModel / checkpoint
METADATA_KEY = "training_intensity"
#: scale models: mid-level outside the training range by more than this fraction of W
LEVEL_TOLERANCE = 0.2
#: scale models: sheet/background difference below this ratio of the training minimum
WIDTH_LOW = 0.75
#: scale models: sheet/background difference above this ratio of the training maximum
WIDTH_HIGH = 1.35
#: z-score models: separation below / above these ratios of the training range
SEPARATION_LOW = 0.6
SEPARATION_HIGH = 1.8
#: CT models: bright-class median further than this many foreground stds from the plans' median
CT_TOLERANCE = 1.5
#: fewer scanned voxels than this in the sample: no verdict
MIN_VOXELS = 1000

_REMEDY_SCALE = (
    "this model uses fixed intensity scaling, so it assumes the absolute grey levels it was trained on: "
    "rescale the volume to the training range, or retrain with per-volume normalisation "
    "(`napari-vesuvius train`, whose default normalises each volume by its own percentiles)"
)
_REMEDY_CONTRAST = (
    "fine-tune the model on a few labelled patches of this scroll (Retrain dock / "
    "`napari-vesuvius finetune`) and check the threshold on the Tune dock"
)
_REMEDY_ZSCORE_LEVEL = (
    "this model normalises each volume by its own statistics (percentiles or z-score), which undoes a global "
    "brightness change, but a scan this different (energy, reconstruction, 16 → 8-bit window) often "
    "differs in contrast and noise too: check the prediction and the threshold on the Tune dock, and if it "
    "is worse, fine-tune on a few labelled patches of this scroll (Retrain dock / `napari-vesuvius finetune`)"
)
_REMEDY_CT = (
    "this model clips and scales by its training data's intensities: check that the volume is in the "
    "same units as the training data (scan energy, reconstruction, 8/16-bit conversion), or fine-tune "
    "on a few labelled patches of this scroll (Retrain dock / `napari-vesuvius finetune`)"
)


@dataclass(frozen=True)
class IntensityShift:
    """A volume clearly outside a model's training intensities: which way, how far, what to do."""

    directions: tuple[str, ...]
    message: str
    remedy: str
    details: dict[str, Any] = field(default_factory=dict)


def training_intensity_of(model: Any) -> IntensityProfile | None:
    """The model's recorded training profile; None when absent, a warning and None when ill-formed."""
    data = (getattr(model, "metadata", None) or {}).get(METADATA_KEY)
    if data is None:
        return None
    try:
        return IntensityProfile.from_dict(data)
    except ValueError as error:
        from napari_vesuvius.core.errors import VesuviusWarning

        source = (getattr(model, "metadata", None) or {}).get("source", getattr(model, "name", "model"))
        warnings.warn(
            f"{source}: ignoring the recorded training intensity profile ({error})",
            VesuviusWarning,
            stacklevel=2,
        )
        return None


def _conversion(dtype: str, normalization: Any) -> tuple[float, float] | None:
    """``(scale, offset)`` mapping ``dtype`` values onto the model's input range (identity without one)."""
    if normalization.kind != "scale" or getattr(normalization, "input_range", None) is None or not dtype:
        return 1.0, 0.0
    from .intensity import conversion_for

    try:
        conversion = conversion_for(dtype, normalization)
    except (ValueError, TypeError):
        return None
    return conversion.scale, conversion.offset


def _outside(value: float, low: float, high: float) -> float:
    """Signed distance of ``value`` outside ``[low, high]`` (0 inside)."""
    return value - high if value > high else value - low if value < low else 0.0


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"


def _range_text(low: float, high: float) -> str:
    return _fmt(low) if _fmt(low) == _fmt(high) else f"{_fmt(low)}–{_fmt(high)}"


def _check_scale(train: IntensityProfile, sample: IntensityProfile, t_map: tuple, s_map: tuple) -> tuple:
    """Absolute levels (mid-level, sheet/background difference) in the model's input units."""
    (ta, tb), (sa, sb) = t_map, s_map
    dark_r, bright_r = train.range_of("dark"), train.range_of("bright")
    width_r = train.range_of("width")
    assert dark_r and bright_r and width_r and train.width is not None
    assert sample.dark is not None and sample.bright is not None and sample.width is not None
    mids = [ta * (dark_r[i] + bright_r[i]) / 2 + tb for i in (0, 1)]
    mid_low, mid_high = min(mids), max(mids)
    unit = max(ta * train.width, 1e-6)
    mid = sa * (sample.dark + sample.bright) / 2 + sb
    width = sa * sample.width
    w_low, w_high = ta * width_r[0], ta * width_r[1]
    level = _outside(mid, mid_low, mid_high) / unit
    ratio_low, ratio_high = width / max(w_low, 1e-6), width / max(w_high, 1e-6)
    details = {
        "normalization": "scale", "mid_level": mid, "training_mid_level": [mid_low, mid_high],
        "level_shift": level, "sheet_contrast": width, "training_sheet_contrast": [w_low, w_high],
        "contrast_ratio": ratio_low if ratio_low < 1 else ratio_high if ratio_high > 1 else 1.0,
    }  # fmt: skip
    parts, directions = [], []
    if abs(level) > LEVEL_TOLERANCE:
        directions.append("brighter" if level > 0 else "darker")
        side = "above" if level > 0 else "below"
        parts.append(
            f"is {directions[-1]} than the model's training data: mid-level {_fmt(mid)} vs "
            f"{_range_text(mid_low, mid_high)} in training, {abs(level):.2f}× the training sheet/background "
            f"difference ({_fmt(unit)}) {side}"
        )
    if ratio_low < WIDTH_LOW or ratio_high > WIDTH_HIGH:
        lower = ratio_low < WIDTH_LOW
        directions.append("lower contrast" if lower else "higher contrast")
        parts.append(
            f"has {'lower' if lower else 'higher'} sheet/background contrast: {_fmt(width)} grey levels vs "
            f"{_range_text(w_low, w_high)} in training (×{ratio_low if lower else ratio_high:.2f})"
        )
    remedy = _REMEDY_SCALE if directions else ""
    if directions == ["lower contrast"]:
        remedy = f"{_REMEDY_SCALE}; or {_REMEDY_CONTRAST}"
    return tuple(directions), parts, remedy, details


def _check_zscore(train: IntensityProfile, sample: IntensityProfile) -> tuple:
    """Only the scale-free separation matters after per-volume z-scoring."""
    sep_r = train.range_of("separation")
    assert sep_r is not None and sample.separation is not None
    ratio_low = sample.separation / max(sep_r[0], 1e-6)
    ratio_high = sample.separation / max(sep_r[1], 1e-6)
    details = {
        "normalization": "zscore", "separation": sample.separation, "training_separation": list(sep_r),
        "separation_ratio": ratio_low if ratio_low < 1 else ratio_high if ratio_high > 1 else 1.0,
    }  # fmt: skip
    if ratio_low < SEPARATION_LOW:
        text = (
            f"has lower sheet/background contrast than the model's training data: separation "
            f"{sample.separation:.2f} vs {sep_r[0]:.2f}–{sep_r[1]:.2f} in training (×{ratio_low:.2f}; "
            "sheet minus background over the noise)"
        )
        return ("lower contrast",), [text], _REMEDY_CONTRAST, details
    if ratio_high > SEPARATION_HIGH:
        text = (
            f"has higher sheet/background contrast than the model's training data: separation "
            f"{sample.separation:.2f} vs {sep_r[0]:.2f}–{sep_r[1]:.2f} in training (×{ratio_high:.2f})"
        )
        return ("higher contrast",), [text], _REMEDY_CONTRAST, details
    return (), [], "", details


def _check_level(train: IntensityProfile, sample: IntensityProfile, dtype: str) -> tuple:
    """Per-volume normalised models: only the raw mid-level of :func:`_check_scale` (its contrast part is
    normalised away), with their remedy. A volume of another dtype than the training data is first put
    on the training dtype's range (uint16 → uint8 is ``x / 257``; float [0, 1] → ``x · 255``), so 16-bit
    input alone never reads as brighter."""
    maps = _dtype_maps(train.dtype, dtype)
    if maps is None:
        return (), [], "", {}
    directions, parts, _, details = _check_scale(train, sample, *maps)
    keep = [i for i, d in enumerate(directions) if d in ("brighter", "darker")]
    level = {k: details[k] for k in ("mid_level", "training_mid_level", "level_shift")}
    remedy = _REMEDY_ZSCORE_LEVEL if keep else ""
    return tuple(directions[i] for i in keep), [parts[i] for i in keep], remedy, level


def _dtype_maps(train_dtype: str, dtype: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``(training map, sample map)`` onto the training dtype's full range; identity when the training
    dtype is not an 8/16-bit one (float or several); None when ``dtype`` cannot be put on it."""
    top = {"uint8": 255.0, "uint16": 65535.0}.get(train_dtype)
    if top is None or not dtype or dtype == train_dtype:
        return (1.0, 0.0), (1.0, 0.0)
    from .model_api import Normalization

    reference = Normalization(kind="scale", input_range=(0.0, top))
    sample_map = _conversion(dtype, reference)
    return None if sample_map is None else ((1.0, 0.0), sample_map)


def _merge(first: tuple, second: tuple) -> tuple:
    """Two verdicts as one: directions, message parts and remedies joined, details merged (the first's
    win where both have a key, e.g. ``normalization``)."""
    directions, parts = (*first[0], *second[0]), [*first[1], *second[1]]
    remedies = [r for r in (first[2], second[2]) if r]
    return directions, parts, "; or ".join(dict.fromkeys(remedies)), {**second[3], **first[3]}


def _check_foreground(train: IntensityProfile, sample: IntensityProfile, remedy: str = _REMEDY_CT) -> tuple:
    """nnU-Net plans: the sample's bright class against the labelled foreground of the training data."""
    fg, bright = train.foreground, sample.foreground["median"]
    unit = max(fg["std"], 1e-6)
    shift = (bright - fg["median"]) / unit
    details = {
        "normalization": "ct", "bright_median": bright, "training_foreground_median": fg["median"],
        "training_foreground_std": fg["std"], "shift_in_std": shift,
    }  # fmt: skip
    if abs(shift) <= CT_TOLERANCE:
        return (), [], "", details
    direction = "brighter" if shift > 0 else "darker"
    text = (
        f"is {direction} than the model's training data: papyrus (bright class) median {_fmt(bright)} vs "
        f"{_fmt(fg['median'])} for the training foreground, {abs(shift):.1f} training stds "
        f"{'above' if shift > 0 else 'below'}"
    )
    return (direction,), [text], remedy, details


def check_intensity(
    model: Any, volume: Any, *, name: str = "", max_voxels: int = DEFAULT_MAX_VOXELS
) -> IntensityShift | None:
    """Compare a cheap sample of ``volume`` with ``model``'s training intensities.

    Returns an :class:`IntensityShift` when the volume is clearly outside them, else None. None also
    when the model records no profile (older checkpoints), when the volume's dtype is one the model
    refuses anyway, or when the sample holds fewer than ``MIN_VOXELS`` scanned voxels. Never raises for
    a model's profile: an ill-formed one is ignored with a VesuviusWarning.
    """
    train = training_intensity_of(model)
    if train is None:
        return None
    values, dtype = sample_scanned(volume, max_voxels)
    if values.size < MIN_VOXELS:
        return None
    sample = profile_of_values(values, source=name, dtype=dtype)
    normalization = model.normalization
    kind = normalization.kind
    if train.is_foreground_only:
        remedy = _REMEDY_ZSCORE_LEVEL if normalization.fitted_per_volume else _REMEDY_CT
        directions, parts, remedy, details = _check_foreground(train, sample, remedy)
    elif kind == "scale":
        t_dtype = train.dtype if "/" not in train.dtype else ""
        t_map, s_map = _conversion(t_dtype, normalization), _conversion(dtype, normalization)
        if t_map is None or s_map is None:
            return None
        verdict = _check_scale(train, sample, t_map, s_map)
        if "lower contrast" not in verdict[0]:  # more noise at the same grey levels: the SNR check
            verdict = _merge(verdict, _check_zscore(train, sample))
        directions, parts, remedy, details = verdict
    elif normalization.fitted_per_volume:  # z-score or percentile: brightness and offset cancel out
        directions, parts, remedy, details = _merge(
            _check_level(train, sample, dtype), _check_zscore(train, sample)
        )
    else:  # a CT-normalised model with a full profile (fine-tuned nnU-Net): its clip window matters
        train_fg = IntensityProfile(source=NNUNET_SOURCE, voxels=train.voxels, foreground=train.foreground)
        directions, parts, remedy, details = _check_foreground(train_fg, sample)
    if not directions:
        return None
    label = f"volume {name}" if name else "the volume"
    details = {**details, "sample_voxels": sample.voxels, "training_source": train.source}
    return IntensityShift(
        directions=tuple(directions),
        message=f"{label} " + "; ".join(parts),
        remedy=remedy,
        details=details,
    )


@dataclass(frozen=True)
class IntensityReference:
    """What :func:`check_intensity` needs of a model (its normalisation and metadata), without its weights."""

    normalization: Any
    metadata: dict[str, Any]
    name: str = ""


def intensity_reference(path: str | Path) -> IntensityReference | None:
    """A model's normalisation and training profile read without building it (built-in checkpoint: its
    header, memory-mapped; nnU-Net folder: plans.json). None when they cannot be read: loading the
    model reports the problem, the check is only skipped."""
    from napari_vesuvius.core.errors import VesuviusError

    path = Path(path)
    try:
        if path.is_dir():
            from . import _nnunet_plans as plans_io

            plans_path = path / "plans.json"
            name = plans_io.configuration_from_folder_name(path)
            if name is None or not plans_path.is_file():
                return None
            plans = plans_io.read_json(plans_path, path)
            config = plans_io.resolve_configuration(plans, name, plans_path)
            normalization = plans_io.normalization_from_plans(config, plans, name, plans_path)
            metadata = plans_io.training_intensity_from_plans(plans)
        else:
            from .checkpoint import read_checkpoint_info

            info = read_checkpoint_info(path)
            normalization, metadata = info.normalization, info.metadata
    except (VesuviusError, OSError, ValueError, KeyError, TypeError):
        return None
    return IntensityReference(normalization, dict(metadata), path.name)
