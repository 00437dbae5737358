"""Physical placement (:class:`~.spatial.Spatial`) in TIFF files: read from the first page's header, written
as tags by :mod:`.tiff_write`.

Read, first match wins (only the first page's tags and description, never pixel data):

1. tifffile's JSON description holding our own ``vesuvius_spatial`` record (what :mod:`.tiff_write` writes
   for dtypes ImageJ cannot hold): exact scale, origin and unit, source ``"tifffile-json"``;
2. ImageJ metadata: X/YResolution (pixels per unit, so the voxel size is 1/resolution), ``spacing`` (z step),
   ``unit`` (``micron``, ``\\u00B5m``...) and ``xorigin``/``yorigin``/``zorigin`` (in pixels: the origin is
   ``-origin × size``), source ``"imagej"``;
3. OME-XML ``PhysicalSizeX/Y/Z`` and their units (default µm), source ``"ome-tiff"``;
4. plain X/YResolution with ResolutionUnit inch or centimeter, converted to micrometers, source
   ``"tiff-resolution"``. 1, 72 and 96 pixels per inch are the "no resolution" defaults of image writers
   and screen tools, not a CT voxel size, and are ignored, as is ResolutionUnit NONE.

A TIFF resolution has no z: when the file gives none, the z size is taken equal to x (CT voxels are
isotropic) and a note says so. Odd metadata never fails a read: it gives the default ``Spatial()`` and a
:class:`~.base.VolumeWarning`.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.volume.base import VolumeWarning
from napari_vesuvius.core.volume.spatial import SPATIAL_ATTR, Spatial, normalize_unit

#: Micrometers per unit, for converting TIFF resolution units and mixed OME units.
_MICROMETERS = {
    "angstrom": 1e-4,
    "nanometer": 1e-3,
    "micrometer": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
    "inch": 25400.0,
}
#: Pixels per inch that mean "no resolution" (tifffile/libtiff default, Mac and Windows screen defaults).
_PLACEHOLDER_DPI = (1.0, 72.0, 96.0)
#: ImageJ's spelling of the NGFF units it knows (any other unit string is kept as it is).
_IMAGEJ_UNITS = {
    "micrometer": "micron",
    "nanometer": "nm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
}
#: dtypes an ImageJ hyperstack can hold; others get resolution tags and tifffile's JSON description.
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
Z_ASSUMED_NOTE = "z voxel size not in the TIFF; taken equal to x"


def _tidy(value: float) -> float:
    """A value derived from rationals or products, rounded to 12 significant digits (7.910000000000001 ->
    7.91) so that what was written reads back equal."""
    return float(f"{value:.12g}")


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _pixel_size(page: Any, tag: str) -> float | None:
    """1 / the X- or YResolution tag (pixels per unit) of a page, None when absent or not positive."""
    entry = page.tags.get(tag)
    if entry is None:
        return None
    value = entry.value
    try:
        numerator, denominator = (
            (float(v) for v in value) if isinstance(value, tuple) else (float(value), 1.0)
        )
    except (TypeError, ValueError):
        return None
    if not (numerator > 0 and denominator > 0 and math.isfinite(numerator) and math.isfinite(denominator)):
        return None
    return denominator / numerator


def _with_z(x: float, y: float, z: float | None, notes: list[str]) -> tuple[float, float, float]:
    if z is None:
        notes.append(Z_ASSUMED_NOTE)
        z = x
    return (z, y, x)


def _from_json(page: Any) -> Spatial | None:
    from tifffile.tifffile import shaped_description_metadata  # not exported at the top level

    if not page.is_shaped:
        return None
    record = shaped_description_metadata(page.shaped_description).get(SPATIAL_ATTR)
    if not isinstance(record, dict):
        return None
    return Spatial.from_dict(record, source="tifffile-json")


def _from_imagej(tif: Any, notes: list[str]) -> Spatial | None:
    meta = tif.imagej_metadata or {}
    page = tif.pages.first
    unit = normalize_unit(meta.get("unit"))
    x, y = _pixel_size(page, "XResolution"), _pixel_size(page, "YResolution")
    z = _positive(meta.get("spacing"))
    if unit is None:  # ImageJ then takes the unit from ResolutionUnit (inch / centimeter), like any reader
        unit_name = _resolution_unit(page)
        if unit_name is not None and x is not None and not _placeholder(x, y or x, unit_name):
            factor = _MICROMETERS[unit_name]
            unit, x, y = "micrometer", _tidy(x * factor), _tidy((y or x) * factor)
            z = _tidy(z * factor) if z is not None else None
    if unit is None and z is None and x in (None, 1.0) and y in (None, 1.0):
        return None  # an uncalibrated ImageJ image (ImageJ's default unit is "pixel")
    x = _tidy(x or 1.0)
    scale = _with_z(x, _tidy(y or x), z, notes)
    origin = []
    for axis, size in zip("zyx", scale, strict=True):
        try:
            pixels = float(meta.get(f"{axis}origin", 0.0))
        except (TypeError, ValueError):
            pixels = 0.0
        origin.append(_tidy(-pixels * size) + 0.0 if math.isfinite(pixels) else 0.0)
    return Spatial(scale, tuple(origin), unit, "imagej")  # type: ignore[arg-type]


def _from_ome(tif: Any, notes: list[str]) -> Spatial | None:
    root = ElementTree.fromstring(tif.pages.first.description)
    pixels = next((node for node in root.iter() if node.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    sizes: dict[str, float] = {}
    units: dict[str, str | None] = {}
    for axis in "XYZ":
        size = _positive(pixels.get(f"PhysicalSize{axis}"))
        if size is not None:
            sizes[axis] = size
            units[axis] = normalize_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
    if "X" not in sizes:
        return None
    if len(set(units.values())) > 1:  # mixed units: all in micrometers when each converts
        if not all(u in _MICROMETERS for u in units.values()):
            raise ValueError(f"OME PhysicalSize units differ and do not all convert: {units}")
        sizes = {a: _tidy(s * _MICROMETERS[units[a]]) for a, s in sizes.items()}  # type: ignore[index]
        units = dict.fromkeys(units, "micrometer")
    scale = _with_z(sizes["X"], sizes.get("Y", sizes["X"]), sizes.get("Z"), notes)
    return Spatial(scale, unit=units["X"], source="ome-tiff")


def _resolution_unit(page: Any) -> str | None:
    """``"inch"`` or ``"centimeter"`` from ResolutionUnit (TIFF default inch), None for NONE."""
    tag = page.tags.get("ResolutionUnit")
    return {2: "inch", 3: "centimeter"}.get(int(tag.value) if tag is not None else 2)


def _placeholder(x: float, y: float, unit: str) -> bool:
    """True for 1, 72 or 96 pixels per inch: a writer's default, not a measured pixel size."""
    return unit == "inch" and any(
        abs(1 / x - dpi) < 1e-6 and abs(1 / y - dpi) < 1e-6 for dpi in _PLACEHOLDER_DPI
    )


def _from_resolution(page: Any, notes: list[str]) -> Spatial | None:
    unit = _resolution_unit(page)
    x, y = _pixel_size(page, "XResolution"), _pixel_size(page, "YResolution")
    if unit is None or x is None:
        return None
    y = y or x
    if _placeholder(x, y, unit):
        return None
    factor = _MICROMETERS[unit]
    scale = _with_z(_tidy(x * factor), _tidy(y * factor), None, notes)
    return Spatial(scale, unit="micrometer", source="tiff-resolution")


def read_tiff_spatial(tif: Any, path: Path | str) -> tuple[Spatial, list[str]]:
    """The physical placement an open TiffFile declares, and notes on what was assumed.

    Reads the first page's header only. Malformed metadata gives ``Spatial()`` with a VolumeWarning.
    """
    notes: list[str] = []
    try:
        page = tif.pages.first
        spatial = _from_json(page)
        if spatial is None and tif.is_imagej:
            spatial = _from_imagej(tif, notes)
        if spatial is None and tif.is_ome:
            spatial = _from_ome(tif, notes)
        if spatial is None:
            spatial = _from_resolution(page, notes)
    except Exception as error:  # odd metadata must never stop a read
        note = f"physical scale metadata ignored ({type(error).__name__}: {error})"
        warnings.warn(VolumeWarning(f"{path}: {note}"), stacklevel=3)
        return Spatial(), [note]
    if spatial is None or spatial.is_default:
        return Spatial(), []
    return spatial, notes


def tiff_write_options(
    spatial: Spatial | None, shape: tuple[int, ...], dtype: Any, bigtiff: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TiffWriter kwargs, TiffWriter.write kwargs)`` carrying ``spatial`` into a page-per-slice TIFF.

    Nothing for the default placement (the file is then exactly what is written without one). ImageJ
    hyperstack metadata (resolution, ``spacing``, ``unit``, ``x/y/zorigin``) for uint8/uint16/float32
    stacks of at least 2 slices that fit a classic TIFF; otherwise X/YResolution per centimeter (when the
    unit converts) plus our exact record in tifffile's JSON description.
    """
    if spatial is None or spatial.is_default:
        return {}, {}
    z, y, x = spatial.scale
    if np.dtype(dtype) in IMAGEJ_DTYPES and shape[0] >= 2 and not bigtiff:
        metadata: dict[str, Any] = {"axes": "ZYX", "spacing": z}
        if spatial.unit is not None:
            metadata["unit"] = _IMAGEJ_UNITS.get(spatial.unit, spatial.unit)
        for axis, size, origin in zip("zyx", spatial.scale, spatial.translation, strict=True):
            if origin:
                metadata[f"{axis}origin"] = _tidy(-origin / size) + 0.0
        return {"imagej": True}, {"resolution": (1 / x, 1 / y), "metadata": metadata}
    options: dict[str, Any] = {"metadata": {SPATIAL_ATTR: spatial.to_dict()}}
    if spatial.unit in _MICROMETERS:
        per_cm = _MICROMETERS["centimeter"] / _MICROMETERS[spatial.unit]
        options.update(resolution=(per_cm / x, per_cm / y), resolutionunit="CENTIMETER")
    return {}, options


__all__ = ["Z_ASSUMED_NOTE", "read_tiff_spatial", "tiff_write_options"]
