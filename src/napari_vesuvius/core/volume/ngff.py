"""OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on zarr v3) metadata: read leniently, write only what validates.

One place for NGFF: reading a group's ``multiscales`` into per-level :class:`~.spatial.Spatial` placements
(z, y, x) and the singleton non-spatial axes (t, c) to squeeze; building the attributes of every OME-Zarr
this project writes with ``ome-zarr-models`` (never hand-written dicts) and validating written groups with
it. Owned by the OME-Zarr work of issue 17.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_vesuvius.core.volume.spatial import Downsample, Spatial


@dataclass(frozen=True)
class NgffImage:
    """What the multiscales metadata of an OME-Zarr image says, reduced to a (z, y, x) volume.

    ``paths``: the level arrays, full resolution first. ``spatials``: each level's placement.
    ``squeeze``: indices of the stored axes dropped on read (singleton t / c), ``axis_names`` the stored
    axes' names (for messages).
    """

    version: str
    paths: tuple[str, ...]
    spatials: tuple[Spatial, ...]
    axis_names: tuple[str, ...]
    squeeze: tuple[int, ...] = ()
    name: str | None = None


def read_ngff_image(
    attrs: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], path: Path | str
) -> NgffImage:
    """Interpret a group's attributes (0.4 ``multiscales`` or 0.5 ``ome.multiscales``).

    ``shapes``: the stored shape of each level path (to tell singleton axes from real channels).
    VolumeError naming ``path`` for multi-channel / time data or no 3 spatial axes.
    """
    raise NotImplementedError


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
    (:meth:`Spatial.downsampled` with ``downsample``), which is also recorded as the multiscale ``type``.
    """
    raise NotImplementedError


def validate_ome_zarr(location: str | Path) -> None:
    """Validate a written OME-Zarr group with ome-zarr-models; VolumeError naming it when invalid."""
    raise NotImplementedError
