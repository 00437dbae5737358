"""OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3) metadata: read leniently, write only what validates.

One place for NGFF. Reading (:func:`read_ngff_image`): a group's 0.4 ``multiscales`` or 0.5
``ome.multiscales`` (also 0.1–0.3 files without ``axes``: t, c, z, y, x by dimensionality) becomes the
level paths, each level's :class:`~.spatial.Spatial` placement (z, y, x; dataset transformations composed
with the multiscale-level ones) and the singleton non-spatial axes (t, c) to squeeze; real channels or
time points are refused; :class:`SqueezedSource` reads a stored level without its singleton axes.
Writing (:func:`multiscales_attrs`): the attributes of every OME-Zarr this
project writes are built with ``ome-zarr-models`` (never hand-written dicts); :func:`validate_ome_zarr`
validates a written group with it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume.base import NGFF_VERSION, check_zarr_format
from napari_vesuvius.core.volume.spatial import Downsample, Spatial, normalize_unit

#: Axis names assumed when a file (NGFF 0.1–0.3) declares none, by dimensionality.
_DEFAULT_AXES = {3: "zyx", 4: "czyx", 5: "tczyx"}
_AXIS_TYPES = {"x": "space", "y": "space", "z": "space", "t": "time", "c": "channel"}


@dataclass(frozen=True)
class NgffImage:
    """What the multiscales metadata of an OME-Zarr image says, reduced to a (z, y, x) volume.

    ``paths``: the level arrays, full resolution first. ``spatials``: each level's placement.
    ``squeeze``: indices of the stored axes dropped on read (singleton t / c), ``axis_names`` the stored
    axes' names (for messages). ``notes``: what was assumed or ignored while reading (for the volume's
    notes; the squeeze is not among them, the reader reports it).
    """

    version: str
    paths: tuple[str, ...]
    spatials: tuple[Spatial, ...]
    axis_names: tuple[str, ...]
    squeeze: tuple[int, ...] = ()
    name: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def squeezed_names(self) -> tuple[str, ...]:
        return tuple(self.axis_names[i] for i in self.squeeze)

    @property
    def squeeze_note(self) -> str | None:
        """What a reader says when it squeezes axes (warning and volume note), else None."""
        if not self.squeeze:
            return None
        return (
            f"squeezed the singleton axes {', '.join(self.squeezed_names)} of the OME-Zarr axes "
            f"({', '.join(self.axis_names)}): read as a (z, y, x) volume"
        )


def multiscales_list(attrs: Mapping[str, Any]) -> list[Any] | None:
    """The ``multiscales`` list of group attributes (0.4 top level or 0.5 under ``ome``), else None."""
    if "multiscales" in attrs:
        value = attrs["multiscales"]
    else:
        ome = attrs.get("ome")
        value = ome.get("multiscales") if isinstance(ome, Mapping) else None
    return value if isinstance(value, list) else None


# ----------------------------------------------------------------------------------------------- read
def _axes(entry: Mapping[str, Any], ndim: int, path: Path | str) -> tuple[list[str], list[str], list[Any]]:
    """Names, types and units of the stored axes; assumed from the dimensionality when undeclared."""
    raw = entry.get("axes")
    if not raw:  # NGFF 0.1-0.3 have none; an empty list says nothing either
        if ndim not in _DEFAULT_AXES:
            raise VolumeError(path, f"OME-Zarr declares no axes and its arrays are {ndim}D; expected 3D-5D")
        raw = list(_DEFAULT_AXES[ndim])
    if not isinstance(raw, list) or len(raw) != ndim:
        raise VolumeError(path, f"OME-Zarr axes {raw!r} do not match the arrays' {ndim} dimensions")
    names, types, units = [], [], []
    for axis in raw:
        if isinstance(axis, Mapping):
            name = str(axis.get("name", ""))
            kind = axis.get("type") or _AXIS_TYPES.get(name.lower(), "")
            unit = axis.get("unit")
        else:
            name, kind, unit = str(axis), _AXIS_TYPES.get(str(axis).lower(), ""), None
        names.append(name)
        types.append(str(kind))
        units.append(unit)
    return names, types, units


def _compose(transforms: Any, ndim: int, scale: list[float], shift: list[float]) -> None:
    """Apply an NGFF transformation list (scale / translation / identity) to ``scale``/``shift`` in place."""
    if transforms is None:
        return
    if not isinstance(transforms, list):
        raise ValueError(f"coordinateTransformations must be a list, got {transforms!r}")
    for transform in transforms:
        kind = transform.get("type") if isinstance(transform, Mapping) else None
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or kind not in transform:
            raise ValueError(f"unsupported transformation {transform!r}")
        values = [float(v) for v in transform[kind]]
        if len(values) != ndim or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{kind} {values} does not fit {ndim} axes")
        for i, value in enumerate(values):
            if kind == "scale":
                scale[i] *= value
                shift[i] *= value
            else:
                shift[i] += value


def halving_factors(level_shapes: Sequence[Sequence[int]]) -> list[tuple[float, float, float]]:
    """Each level's downsampling factor from level 0 along z, y, x, multiplied level by level.

    A step whose size is ``ceil(previous / 2)`` is a halving (factor 2, also for an axis of size 1 or an
    odd size: the last coarse voxel pools a partial block); any other step uses the size ratio.
    """
    factors = [(1.0, 1.0, 1.0)]
    for previous, current in itertools.pairwise(level_shapes):
        step = [
            2.0 if int(c) == math.ceil(int(p) / 2) else int(p) / int(c)
            for p, c in zip(previous, current, strict=True)
        ]
        factors.append(tuple(f * s for f, s in zip(factors[-1], step, strict=True)))  # type: ignore[arg-type]
    return factors


def _spatial_axes(
    names: list[str], types: list[str], shape: Sequence[int], path: Path | str
) -> tuple[list[int], list[int]]:
    """Indices of the space axes (exactly 3) and of the singleton others; VolumeError otherwise."""
    spatial = [i for i, kind in enumerate(types) if kind == "space"]
    others = [i for i in range(len(names)) if i not in spatial]
    if len(spatial) != 3:
        axes = ", ".join(f"{n} ({t or 'no type'})" for n, t in zip(names, types, strict=True))
        raise VolumeError(
            path, f"OME-Zarr has {len(spatial)} spatial axes ({axes}); expected 3 (z, y, x): a 3D volume"
        )
    for i in others:
        if int(shape[i]) != 1:
            what = {"channel": "channels", "time": "time points"}.get(types[i], "entries")
            raise VolumeError(
                path,
                f"OME-Zarr axis '{names[i]}' ({types[i] or 'no type'}) has {int(shape[i])} {what}; this "
                "plugin reads one 3D (z, y, x) volume: save a single channel / time point as its own "
                "OME-Zarr and open that",
            )
    return spatial, others


def read_ngff_image(
    attrs: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], path: Path | str
) -> NgffImage:
    """Interpret a group's attributes (0.4 ``multiscales`` or 0.5 ``ome.multiscales``).

    ``shapes``: the stored shape of each level path (to tell singleton axes from real channels).
    VolumeError naming ``path`` for multi-channel / time data or no 3 spatial axes.
    """
    multiscales = multiscales_list(attrs)
    if not multiscales or not isinstance(multiscales[0], Mapping):
        raise VolumeError(path, "OME-Zarr group has no multiscales metadata")
    entry = multiscales[0]
    ome = attrs.get("ome")
    version = str(entry.get("version") or (ome.get("version") if isinstance(ome, Mapping) else "") or "")
    datasets = entry.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise VolumeError(path, "OME-Zarr multiscales metadata lists no datasets")
    paths = []
    for dataset in datasets:
        level = dataset.get("path") if isinstance(dataset, Mapping) else None
        if level is None or str(level) not in shapes:
            raise VolumeError(path, f"OME-Zarr level {level!r} is missing")
        paths.append(str(level))
    level_shapes = [tuple(int(n) for n in shapes[p]) for p in paths]
    ndim = len(level_shapes[0])
    if any(len(shape) != ndim for shape in level_shapes):
        raise VolumeError(path, f"OME-Zarr levels differ in dimensionality: {level_shapes}")
    names, types, units = _axes(entry, ndim, path)
    spatial, others = _spatial_axes(names, types, level_shapes[0], path)
    notes = []
    spatial_units = {normalize_unit(units[i]) for i in spatial}
    unit = next(iter(spatial_units)) if len(spatial_units) == 1 else None
    if len(spatial_units) > 1:
        notes.append(f"spatial axes have different units ({[units[i] for i in spatial]}); unit ignored")
    spatials = _level_spatials(entry, datasets, ndim, spatial, unit)
    if spatials is None:
        notes.append("no usable coordinateTransformations: voxel size 1, levels scaled by their shape")
        zyx = [tuple(shape[i] for i in spatial) for shape in level_shapes]
        base = Spatial(unit=unit, source="ome-zarr")
        spatials = [base.downsampled(f, "nearest") for f in halving_factors(zyx)]
    name = entry.get("name")
    return NgffImage(
        version=version,
        paths=tuple(paths),
        spatials=tuple(spatials),
        axis_names=tuple(names),
        squeeze=tuple(others),
        name=str(name) if name is not None else None,
        notes=tuple(notes),
    )


def _level_spatials(
    entry: Mapping[str, Any], datasets: list[Any], ndim: int, spatial: list[int], unit: str | None
) -> list[Spatial] | None:
    """Each level's placement from its transformations composed with the multiscale-level ones; None
    when the file declares none or they are unusable (non-positive scale, wrong lengths...)."""
    if not any("coordinateTransformations" in d for d in datasets):
        return None
    result = []
    try:
        for dataset in datasets:
            scale, shift = [1.0] * ndim, [0.0] * ndim
            _compose(dataset.get("coordinateTransformations"), ndim, scale, shift)
            _compose(entry.get("coordinateTransformations"), ndim, scale, shift)
            result.append(
                Spatial(
                    tuple(scale[i] for i in spatial),  # type: ignore[arg-type]
                    tuple(shift[i] for i in spatial),  # type: ignore[arg-type]
                    unit,
                    "ome-zarr",
                )
            )
    except (ValueError, TypeError):
        return None
    return result


# ------------------------------------------------------------------------------------------- arrays
class SqueezedSource:
    """A stored array read without its singleton axes ``squeeze`` (indexed at 0): only what is asked
    for is read, so :func:`.io.central_sample` stays cheap on a (1, 1, Z, Y, X) OME-Zarr."""

    def __init__(self, source: Any, squeeze: Sequence[int]) -> None:
        self.source = source
        self.squeeze = tuple(sorted(int(i) for i in squeeze))
        kept = [i for i in range(len(source.shape)) if i not in self.squeeze]
        self.shape = tuple(int(source.shape[i]) for i in kept)
        self.chunks = tuple(int(source.chunks[i]) for i in kept)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> Any:
        items = list(key) if isinstance(key, tuple) else [key]
        if any(item is Ellipsis for item in items):
            at = items.index(Ellipsis)
            items[at : at + 1] = [slice(None)] * (self.ndim - len(items) + 1)
        items += [slice(None)] * (self.ndim - len(items))
        for axis in self.squeeze:
            items.insert(axis, 0)
        return self.source[tuple(items)]


def ngff_level_arrays(node: Any, attrs: Mapping[str, Any], path: Path | str) -> dict[str, Any]:
    """The arrays the multiscales' datasets list, by path; VolumeError naming a missing one."""
    entry = (multiscales_list(attrs) or [{}])[0]
    datasets = entry.get("datasets") if isinstance(entry, Mapping) else None
    if not isinstance(datasets, list) or not datasets:
        raise VolumeError(path, "OME-Zarr multiscales metadata lists no datasets")
    arrays = {}
    for dataset in datasets:
        key = dataset.get("path") if isinstance(dataset, Mapping) else None
        try:
            arrays[str(key)] = node[str(key)]
        except Exception as error:
            raise VolumeError(path, f"OME-Zarr level {key!r} is missing ({error})") from error
    return arrays


def open_image(node: Any, path: Path | str) -> tuple[NgffImage, dict[str, Any]]:
    """An opened OME-Zarr image group: what its metadata says and its level arrays by path.

    The one reading of an image group (the lazy reader, the reader's cheap claim test, block-wise
    inputs); VolumeError naming ``path`` for missing levels, channels / time points, no 3 space axes.
    """
    attrs = dict(node.attrs)
    arrays = ngff_level_arrays(node, attrs, path)
    return read_ngff_image(attrs, {key: array.shape for key, array in arrays.items()}, path), arrays


# ---------------------------------------------------------------------------------------------- write
def _models(zarr_format: int) -> tuple[Any, Any, Any]:
    """The ome-zarr-models modules (multiscales, axes, image) of the NGFF version of a zarr format.

    Imported on use: they import zarr, which reading a TIFF must not.
    """
    if zarr_format == 2:
        import ome_zarr_models.v04.axes as axes
        import ome_zarr_models.v04.image as image
        import ome_zarr_models.v04.multiscales as multiscales
    else:
        import ome_zarr_models.v05.axes as axes  # type: ignore[no-redef]
        import ome_zarr_models.v05.image as image  # type: ignore[no-redef]
        import ome_zarr_models.v05.multiscales as multiscales  # type: ignore[no-redef]
    return multiscales, axes, image


def multiscales_attrs(
    *,
    zarr_format: int,
    level_shapes: Sequence[Sequence[int]],
    spatial: Spatial,
    downsample: Downsample,
    name: str | None = None,
    paths: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The group attributes of a (z, y, x) OME-Zarr image with these levels, built and validated with
    ome-zarr-models: NGFF 0.4 for zarr format 2 (``{"multiscales": …}``), 0.5 for 3 (``{"ome": …}``).

    Each level's scale and translation follow from ``spatial`` and the shape ratio
    (:meth:`Spatial.downsampled` with ``downsample``; a ``ceil(n / 2)`` step is a factor 2, see
    :func:`halving_factors`), which is also recorded as the multiscale ``type``.
    """
    zarr_format = check_zarr_format(zarr_format)
    shapes = [tuple(int(n) for n in shape) for shape in level_shapes]
    if not shapes or any(len(shape) != 3 for shape in shapes):
        raise ValueError(f"level shapes must be 3D (z, y, x), got {shapes}")
    paths = [str(p) for p in paths] if paths is not None else [str(i) for i in range(len(shapes))]
    if len(paths) != len(shapes):
        raise ValueError(f"{len(paths)} paths for {len(shapes)} levels")
    placements = [spatial.downsampled(f, downsample) for f in halving_factors(shapes)]
    multiscales, axes, image = _models(zarr_format)
    datasets = [
        multiscales.Dataset.build(path=p, scale=list(s.scale), translation=list(s.translation))
        for p, s in zip(paths, placements, strict=True)
    ]
    axis_list = [axes.Axis(name=n, type="space", unit=spatial.unit) for n in "zyx"]
    extra = {"version": NGFF_VERSION[2]} if zarr_format == 2 else {}
    multiscale = multiscales.Multiscale(
        axes=axis_list, datasets=tuple(datasets), name=name, type=downsample, **extra
    )
    if zarr_format == 2:
        attrs = image.ImageAttrs(multiscales=[multiscale])
        return attrs.model_dump(mode="json", exclude_none=True, by_alias=True)
    attrs = image.ImageAttrs(version=NGFF_VERSION[3], multiscales=[multiscale])
    return {"ome": attrs.model_dump(mode="json", exclude_none=True, by_alias=True)}


def validate_ome_zarr_group(group: Any, location: str | Path) -> None:
    """Validate an opened zarr group as an OME-Zarr image (0.4 on zarr v2, 0.5 on v3); VolumeError
    naming ``location`` when ome-zarr-models rejects it."""
    zarr_format = int(group.metadata.zarr_format)
    model = _models(zarr_format)[2].Image
    try:
        model.from_zarr(group)
    except Exception as error:  # pydantic ValidationError, missing arrays, ...
        text = " ".join(str(error).split())
        if len(text) > 600:
            text = text[:600] + "…"
        version = NGFF_VERSION[zarr_format]
        problem = f"not a valid OME-Zarr {version} image ({type(error).__name__}: {text})"
        raise VolumeError(location, problem) from error


def validate_ome_zarr(location: str | Path) -> None:
    """Validate a written OME-Zarr group with ome-zarr-models; VolumeError naming it when invalid."""
    import zarr

    try:
        group = zarr.open_group(store=str(location), mode="r")
    except Exception as error:
        raise VolumeError(location, f"not a readable zarr group ({type(error).__name__}: {error})") from error
    validate_ome_zarr_group(group, location)


__all__ = [
    "NgffImage",
    "SqueezedSource",
    "halving_factors",
    "multiscales_attrs",
    "multiscales_list",
    "ngff_level_arrays",
    "open_image",
    "read_ngff_image",
    "validate_ome_zarr",
    "validate_ome_zarr_group",
]
