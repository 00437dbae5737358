"""npe2 reader: .tif/.tiff files, zarr arrays and OME-Zarr pyramids as lazy (dask) napari layers.

Which volumes open as Labels (see :func:`napari_vesuvius.core.volume.io.is_label_volume`):

* name rule: the file or folder name contains ``label`` or ``mask``, or the parent folder's name contains
  ``labels`` (e.g. ``train_labels/1234.tif``);
* content rule: the dtype is uint8 and the middle z-slice (a central crop of at most 256×256 voxels, the
  only pixels read) holds nothing but values in {0, 1, 2} and is not all zero.

Labels use the fixed colours of :data:`napari_vesuvius.core.labels.LABEL_COLORS` (1 = surface, opaque
orange; 2 = ignore, translucent). Images get ``contrast_limits`` from the dtype (8/16 bit) or one small
central sample (float), never from a whole-volume scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_vesuvius.core.labels import LABEL_COLORS
from napari_vesuvius.core.volume.io import (
    TIFF_SUFFIXES,
    LazyVolume,
    contrast_limits_for,
    is_label_volume,
    is_zarr_path,
    open_volume,
    volume_id,
)

LayerData = tuple[Any, dict[str, Any], str]
LABELS_SUFFIX = "(1=surface, 2=ignore)"


def can_read(path: str | Path) -> bool:
    """True for an existing .tif/.tiff file or a zarr (array or group) directory."""
    path = Path(path)
    return (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES) or is_zarr_path(path)


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader`` hook: a reader for volumes we handle, None for any other path."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(can_read(p) for p in paths):
        return None
    return read_volumes


def layer_data(volume: LazyVolume, *, as_labels: bool | None = None) -> LayerData:
    """One napari layer-data tuple for an opened volume (Labels or Image, decided cheaply)."""
    levels = volume.levels
    data: Any = levels if volume.multiscale else levels[0]
    smallest = levels[-1]
    labels = is_label_volume(volume.path, smallest) if as_labels is None else as_labels
    name = volume_id(volume.path)
    meta: dict[str, Any] = {
        "multiscale": volume.multiscale,
        "metadata": {"path": str(volume.path), "kind": volume.kind, "vesuvius_id": name},
    }
    if labels:
        label_name = name if "label" in name.lower() else f"{name} labels"
        meta.update(name=f"{label_name} {LABELS_SUFFIX}", colormap=dict(LABEL_COLORS), opacity=1.0)
        return (data, meta, "labels")
    meta.update(name=name, contrast_limits=contrast_limits_for(smallest), colormap="gray")
    return (data, meta, "image")


def read_volumes(path: str | Sequence[str]) -> list[LayerData]:
    """Open each path lazily and return its layer-data tuple (errors name the file).

    A block-wise output whose run was interrupted opens for viewing (commands refuse it) with a warning
    notification and ``incomplete N/M blocks`` in its layer name, so it is never taken for a result.
    """
    from napari_vesuvius.core.errors import warn_user
    from napari_vesuvius.core.scroll.store import output_progress

    paths = [path] if isinstance(path, str | Path) else list(path)
    layers = []
    for item in paths:
        data, meta, kind = layer_data(open_volume(item, allow_incomplete=True))
        progress = output_progress(item) if is_zarr_path(item) else None
        if progress is not None:
            done, total = progress
            warn_user(item, f"incomplete block-wise output ({done} of {total} blocks done): shown as it is")
            meta["name"] = f"{meta['name']} (incomplete {done}/{total} blocks)"
            meta["metadata"]["incomplete"] = [done, total]
        layers.append((data, meta, kind))
    return layers
