"""The intensity rule: which voxel values a model expects, and what happens to volumes of other dtypes.

Every checkpoint records the normalisation its model was trained with (``TrainConfig.normalization``); the
built-in training default maps each volume's 1st/99th percentiles over the scanned region to ±1
(``kind="percentile"``, ``use_mask``; ``"zscore"`` takes its mean/std instead), which takes every volume as
it is (see the last paragraphs). Built-in models trained with ``scale`` normalise with fixed numbers
(``(x - 127.5) / 127.5``), so they only work on the intensity scale they were trained on. Their checkpoints
record that scale as ``normalization.input_range = [low, high]``: the range of the training data's dtype,
``[0, 255]`` for models trained on the challenge's uint8 CT (checkpoints saved before the record existed read
as ``[0, 255]``). At inference a volume is brought onto that range by one linear map chosen by its
**dtype alone**, never by its content, so every tile and every block of a volume gets the same map:

* uint8 or uint16 whose full range is the recorded one (uint8 for ``[0, 255]``): used as it is;
* other uint8/uint16: its full range mapped linearly onto ``[low, high]``; for the built-in models
  uint16 → ``x · 255 / 65535 = x / 257`` (65535 → 255, 257 → 1);
* float16/32/64: values must lie in ``[0, 1]`` and are mapped to ``low + x · (high - low)`` (× 255);
  a value outside ``[0, 1]`` is refused with a VolumeError naming the file and the first bad z
  (rescale the volume or convert it to uint8/uint16 first);
* any other dtype (signed or wider integers, bool): refused up front.

Each conversion is announced once per volume with a :class:`~napari_vesuvius.core.volume.base.
VolumeWarning` naming the file, the model and the map (the CLI prints it on stderr). The map is folded
into the normalisation's mean and std (``(a·x + b - mean) / std = (x - (mean - b)/a) / (std/a)``), so
it costs nothing per voxel.

Models whose statistics come from the image itself (nnU-Net ``ZScoreNormalization``, built-in models trained
with ``zscore`` or ``percentile``: one set of statistics per volume, fitted on the whole volume before the
first tile by every path, block-wise runs included) or from their training data in its own units (nnU-Net
``CTNormalization``, ``NoNormalization``) take every volume as it is: ``input_range`` is ``None``, nothing
is converted or announced. nnU-Net's ``RGBTo01Normalization`` expects 0–255: ``[0, 255]``.

Independent of the model, a float volume must be finite: NaN or ±Inf voxels are refused with a
VolumeError naming the file and the z of the first bad slice. In-memory arrays are checked up front;
lazy volumes (dask, zarr) slab by slab as the sliding window reads them (two reductions, no extra
pass over the file), so the error may come after part of the output was written (a zarr output then
stays marked ``complete: false``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.base import VolumeWarning

from .model_api import Normalization, WeightedModel

#: integer dtypes mapped by their full range
_MAPPABLE = (np.dtype(np.uint8), np.dtype(np.uint16))


@dataclass(frozen=True)
class IntensityConversion:
    """How one model takes one dtype: ``x ↦ scale · x + offset`` before its normalisation."""

    scale: float = 1.0
    offset: float = 0.0
    #: human-readable map (empty when the volume is used as it is)
    rule: str = ""
    #: float input: values must lie in [0, 1]
    unit_range: bool = False

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def adapt(self, normalization: Normalization) -> Normalization:
        """The normalisation that gives the same result on raw values of the volume's dtype."""
        if self.identity:
            return normalization
        mean = (normalization.mean - self.offset) / self.scale
        return replace(normalization, mean=mean, std=normalization.std / self.scale, input_range=None)


def conversion_for(dtype: Any, normalization: Normalization) -> IntensityConversion:
    """The conversion of volumes of ``dtype`` for ``normalization`` (ValueError: the dtype is refused)."""
    dtype = np.dtype(dtype)
    expected = getattr(normalization, "input_range", None)
    if expected is None:
        return IntensityConversion()
    low, high = expected
    span = f"{_number(low)}–{_number(high)}"
    if dtype in _MAPPABLE:
        top = float(np.iinfo(dtype).max)
        if low == 0.0 and high == top:
            return IntensityConversion()
        scale = (high - low) / top
        factor = f"x / {_number(1 / scale)}" if low == 0 and (1 / scale).is_integer() else f"{scale:.6g}·x"
        rule = f"{dtype.name} 0–{int(top)} mapped linearly onto {span} ({factor}{_plus(low)})"
        return IntensityConversion(scale, low, rule)
    if dtype.kind == "f":
        rule = f"{dtype.name} values in [0, 1] mapped onto {span} (x · {_number(high - low)}{_plus(low)})"
        return IntensityConversion(high - low, low, rule, unit_range=True)
    raise ValueError(
        f"{dtype.name} volumes cannot be mapped onto the intensity range {span} the model was trained "
        "on; convert the volume to uint8 (0–255), uint16 (0–65535) or float in [0, 1]"
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _plus(offset: float) -> str:
    return f" + {_number(offset)}" if offset else ""


@dataclass(frozen=True)
class VoxelCheck:
    """Checks the voxels a run reads: finite (float volumes) and, for a float → uint8 map, in [0, 1]."""

    source: Path | str | None
    unit_range: bool = False
    #: model and its recorded intensity range, named in the [0, 1] error
    model: str = ""
    span: str = "0–255"

    def __call__(self, raw: np.ndarray, z0: int = 0) -> None:
        """Raise VolumeError naming the file and the first bad z (``z0``: z of ``raw[0]``)."""
        raw = np.asarray(raw)
        if raw.dtype.kind != "f" or raw.size == 0:
            return
        low, high = float(np.min(raw)), float(np.max(raw))  # NaN propagates through min/max
        if not (np.isfinite(low) and np.isfinite(high)):
            z = z0 + _first_slice(~np.isfinite(raw))
            raise VolumeError(
                self.source,
                f"contains NaN or infinite values (first at z={z}); CT volumes must be finite: "
                "replace them (e.g. by 0) before predicting",
            )
        if self.unit_range and (low < 0.0 or high > 1.0):
            z = z0 + _first_slice((raw < 0) | (raw > 1))
            raise VolumeError(
                self.source,
                f"float intensities must lie in [0, 1] (mapped onto {self.span}, the range model "
                f"{self.model!r} was trained on), found {low:g}..{high:g} near z={z}; rescale to [0, 1] "
                "or convert the volume to uint8/uint16",
            )


def _first_slice(bad: np.ndarray) -> int:
    rows = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad
    return int(np.argmax(rows))


def _name(member: WeightedModel) -> str:
    return member.model.name or "model"


def check_input_dtype(
    members: Sequence[WeightedModel], dtype: Any, source: Path | str | None, *, announce: bool = True
) -> list[IntensityConversion]:
    """Each member's conversion for a volume of ``dtype``; warns for every conversion (``announce``)
    and raises VolumeError naming ``source`` when a model refuses the dtype."""
    conversions = []
    for member in members:
        try:
            conversion = conversion_for(dtype, member.model.normalization)
        except ValueError as error:
            raise VolumeError(source, f"model {_name(member)!r}: {error}") from None
        if announce and not conversion.identity:
            where = source if source is not None else "input volume"
            message = f"{where}: intensities converted for model {_name(member)!r}: {conversion.rule}"
            warnings.warn(VolumeWarning(message), stacklevel=3)
        conversions.append(conversion)
    return conversions


def adapt_normalizations(
    normalizations: Sequence[Normalization],
    conversions: Sequence[IntensityConversion],
) -> list[Normalization]:
    """Fold each conversion into its normalisation (see :meth:`IntensityConversion.adapt`)."""
    return [c.adapt(n) for n, c in zip(normalizations, conversions, strict=True)]


def voxel_check(
    members: Sequence[WeightedModel], conversions: Sequence[IntensityConversion], source: Path | str | None
) -> VoxelCheck:
    """The value check for a run of ``members`` (the [0, 1] rule names the first model that needs it)."""
    unit = [m for m, c in zip(members, conversions, strict=True) if c.unit_range]
    if not unit:
        return VoxelCheck(source)
    low, high = unit[0].model.normalization.input_range or (0.0, 1.0)
    return VoxelCheck(source, True, _name(unit[0]), f"{_number(low)}–{_number(high)}")


def is_in_memory(volume: Any) -> bool:
    """A plain numpy array (checked whole, up front); memmaps, dask and zarr arrays are lazy."""
    return isinstance(volume, np.ndarray) and not isinstance(volume, np.memmap)


def prepare_input(
    volume: Any, members: Sequence[WeightedModel], source: Path | str | None
) -> tuple[list[WeightedModel], VoxelCheck | None]:
    """Members adapted to the volume's dtype and the slab check still to run (``None``: nothing left).

    Announces conversions, refuses dtypes a model cannot take, and checks an in-memory float volume
    whole right away (see the module docstring).
    """
    conversions = check_input_dtype(members, volume.dtype, source, announce=False)
    adapted = [
        replace(m, model=replace(m.model, normalization=c.adapt(m.model.normalization)))
        for m, c in zip(members, conversions, strict=True)
    ]
    check: VoxelCheck | None = None
    if np.dtype(volume.dtype).kind == "f":
        check = voxel_check(members, conversions, source)
        if is_in_memory(volume):
            check(volume, 0)  # refused before anything is announced
            check = None
    check_input_dtype(members, volume.dtype, source)  # announce
    return adapted, check
