"""Physical placement of a volume: voxel size, origin and unit of its (z, y, x) axes.

One concept, one place: every reader fills a :class:`Spatial` (OME-Zarr coordinate transformations, TIFF
resolution / ImageJ spacing, a slice folder's ``meta.json``), every writer carries it into its output
(OME-Zarr transformations per level, TIFF tags, plain zarr attributes), and the napari layers get it as
``scale`` / ``translate`` / ``units`` (:meth:`Spatial.layer_kwargs`), so CT, labels, probabilities and masks
line up with each other and with other plugins' layers.

Conventions (those of NGFF and napari, which agree): ``scale`` is the voxel size along z, y, x in
``unit``; ``translation`` is the physical position of the *centre* of voxel (0, 0, 0). A downsampled
pyramid level keeps the physical extent: its scale grows by the factor, and a level made by pooling
(mean / max over a 2×2×2 block) moves its origin by half the pooled block minus half a voxel
(:meth:`Spatial.downsampled`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Triple = tuple[float, float, float]

#: NGFF (0.4/0.5) names of the length units, the only spelling written; napari (pint) reads them too.
NGFF_LENGTH_UNITS = (
    "angstrom",
    "attometer",
    "centimeter",
    "decimeter",
    "exameter",
    "femtometer",
    "foot",
    "gigameter",
    "hectometer",
    "inch",
    "kilometer",
    "megameter",
    "meter",
    "micrometer",
    "mile",
    "millimeter",
    "nanometer",
    "parsec",
    "petameter",
    "picometer",
    "terameter",
    "yard",
    "yoctometer",
    "yottameter",
    "zeptometer",
    "zettameter",
)

#: Other spellings met in TIFF / ImageJ / OME-XML / meta.json files -> the NGFF name.
_UNIT_ALIASES = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",  # Greek mu
    "micron": "micrometer",
    "microns": "micrometer",
    "\\u00b5m": "micrometer",  # ImageJ writes the escape literally
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "a": "angstrom",
    "å": "angstrom",
    "in": "inch",
    "inches": "inch",
}

#: How a pyramid level was made from the level above: pooling a block (its centre moves) or taking every
#: n-th voxel (its origin stays).
Downsample = Literal["mean", "max", "nearest"]


def normalize_unit(unit: str | None) -> str | None:
    """The NGFF name of a length unit (``"µm"``, ``"micron"`` -> ``"micrometer"``); None when unknown.

    ImageJ's placeholder ``"pixel"`` (and empty strings) mean "no unit": None.
    """
    if unit is None:
        return None
    text = str(unit).strip()
    if not text or text.lower() in ("pixel", "pixels", "px", "none"):
        return None
    lowered = text.lower()
    if lowered in NGFF_LENGTH_UNITS:
        return lowered
    if lowered.endswith("s") and lowered[:-1] in NGFF_LENGTH_UNITS:  # "micrometers"
        return lowered[:-1]
    return _UNIT_ALIASES.get(text) or _UNIT_ALIASES.get(lowered)


def _triple(values: Sequence[float], what: str) -> Triple:
    items = tuple(float(v) for v in values)
    if len(items) != 3:
        raise ValueError(f"{what} needs 3 values (z, y, x), got {len(items)}")
    if not all(math.isfinite(v) for v in items):
        raise ValueError(f"{what} must be finite, got {items}")
    return (items[0], items[1], items[2])


@dataclass(frozen=True)
class Spatial:
    """Voxel size, origin and unit of a (z, y, x) volume's full-resolution level.

    ``source`` says where it was read from (``"ome-zarr"``, ``"imagej"``, ``"tiff-resolution"``,
    ``"meta.json"``, ``"zarr-attrs"``, ``"layer"``...) or ``"none"`` for the default (1 voxel = 1 unit,
    no unit). It is for messages and ``info``; equality ignores it.
    """

    scale: Triple = (1.0, 1.0, 1.0)
    translation: Triple = (0.0, 0.0, 0.0)
    unit: str | None = None
    source: str = "none"

    def __post_init__(self) -> None:
        scale = _triple(self.scale, "scale")
        if min(scale) <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "translation", _triple(self.translation, "translation"))
        object.__setattr__(self, "unit", normalize_unit(self.unit))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spatial):
            return NotImplemented
        return (self.scale, self.translation, self.unit) == (other.scale, other.translation, other.unit)

    def __hash__(self) -> int:
        return hash((self.scale, self.translation, self.unit))

    @property
    def is_default(self) -> bool:
        """True when nothing physical is known (scale 1, origin 0, no unit): outputs then carry nothing."""
        return self == Spatial()

    def downsampled(self, factors: Sequence[float], method: Downsample = "mean") -> Spatial:
        """The placement of a level downsampled by ``factors`` (z, y, x) from this one.

        Pooling (``mean``/``max``) puts a coarse voxel's centre at the centre of the block it pooled:
        ``translation + scale * (factor - 1) / 2``; ``nearest`` (every n-th voxel from 0) keeps the origin.
        """
        f = _triple(factors, "factors")
        scale = tuple(s * k for s, k in zip(self.scale, f, strict=True))
        if method == "nearest":
            translation = self.translation
        else:
            translation = tuple(
                t + s * (k - 1) / 2 for t, s, k in zip(self.translation, self.scale, f, strict=True)
            )
        return Spatial(scale, translation, self.unit, self.source)  # type: ignore[arg-type]

    def layer_kwargs(self) -> dict[str, Any]:
        """napari layer keyword arguments (``scale``, ``translate``, and ``units`` when known)."""
        kwargs: dict[str, Any] = {"scale": self.scale, "translate": self.translation}
        if self.unit is not None:
            kwargs["units"] = (self.unit,) * 3
        return kwargs

    @classmethod
    def from_layer(cls, layer: Any) -> Spatial:
        """The placement of a napari layer's last three axes (scale, translate, units)."""
        scale = tuple(float(v) for v in layer.scale)[-3:]
        translation = tuple(float(v) for v in layer.translate)[-3:]
        units = [str(u) for u in getattr(layer, "units", ())][-3:]
        unit = units[0] if units and len(set(units)) == 1 else None
        return cls(scale, translation, unit, "layer")  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (plain zarr attributes, provenance records)."""
        return {"scale": list(self.scale), "translation": list(self.translation), "unit": self.unit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "zarr-attrs") -> Spatial:
        """Inverse of :meth:`to_dict`; raises ValueError on a malformed record."""
        return cls(
            tuple(data.get("scale", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
            tuple(data.get("translation", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
            data.get("unit"),
            source,
        )

    def describe(self) -> str:
        """One line for ``info`` and the Data step, e.g. ``7.91 × 7.91 × 7.91 micrometer (from ome-zarr)``."""
        if self.is_default:
            return "no physical scale (1 voxel = 1 unit)"
        size = " × ".join(f"{v:g}" for v in self.scale)
        text = f"voxel {size} {self.unit or 'units'}"
        if any(self.translation):
            text += ", origin " + ", ".join(f"{v:g}" for v in self.translation)
        return f"{text} (from {self.source})"


#: Attribute key of a plain zarr array holding its :meth:`Spatial.to_dict` (OME-Zarr uses NGFF instead).
SPATIAL_ATTR = "vesuvius_spatial"

__all__ = ["NGFF_LENGTH_UNITS", "SPATIAL_ATTR", "Downsample", "Spatial", "normalize_unit"]
