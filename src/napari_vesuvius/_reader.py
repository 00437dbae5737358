"""npe2 reader: .tif/.tiff files, folders of 2D TIFF slices, zarr arrays, OME-Zarr pyramids (local or
at a URL) and challenge dataset folders as lazy (dask) napari layers, placed at their physical scale.

What it claims (napari convention: say nothing about other paths): :func:`napari_get_reader` returns a
reader only for an existing ``.tif``/``.tiff`` file, a zarr folder holding a 3D volume (array, OME-Zarr
group, or a group of one array; see :func:`~napari_vesuvius.core.volume.io.is_volume_zarr`), a folder of
2D TIFF slices, a challenge dataset folder (``train_images/`` or ``test_images/``) or a URL whose name ends
in ``.zarr``, and None for anything else (``.png``, ``.csv``, unrelated folders, missing paths). Every
layer gets the volume's ``scale`` / ``translate`` / ``units``
(:class:`~napari_vesuvius.core.volume.spatial.Spatial`). A dataset folder opens its first volume (image,
and labels for a training id); the Data step browses the others.

Which volumes open as Labels (see :func:`napari_vesuvius.core.volume.io.is_label_volume`):

* name rule: the file or folder name contains ``label`` or ``mask``, or the parent folder's name contains
  ``labels`` (e.g. ``train_labels/1234.tif``);
* content rule: the dtype is uint8 and the middle z-slice (a central crop of at most 256×256 voxels, the
  only pixels read) holds nothing but values in {0, 1, 2} and is not all zero.

Labels use the fixed colours of :data:`napari_vesuvius.core.labels.LABEL_COLORS` (1 = surface, orange;
2 = ignore, translucent) at half opacity, so the CT shows through. Images get ``contrast_limits`` from the
dtype (8/16 bit) or one small central sample (float), never from a whole-volume scan.

Every layer is placed physically (:meth:`~napari_vesuvius.core.volume.spatial.Spatial.layer_kwargs` of the
volume: ``scale``, ``translate`` and ``units`` as the file declares them), so it lines up with other
plugins' layers of the same data. What the reading adjusted (``LazyVolume.notes``: axes squeezed, a
pyramid level chosen...) is shown once as a warning notification and kept in the layer metadata
(``notes``); the placement is kept there too (``spatial``, a :meth:`Spatial.to_dict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_vesuvius.core.dataset import ChallengeDataset, is_dataset_folder
from napari_vesuvius.core.labels import LABEL_COLORS
from napari_vesuvius.core.volume.io import (
    TIFF_SUFFIXES,
    LazyVolume,
    contrast_limits_for,
    is_label_volume,
    is_volume_zarr,
    is_zarr_path,
    open_volume,
    volume_id,
)
from napari_vesuvius.core.volume.tiff_folder import is_slice_folder
from napari_vesuvius.widgets._layers import LABELS_OPACITY

LayerData = tuple[Any, dict[str, Any], str]
#: the label values' meaning, shown with the layer (Data step info) rather than in its name, which
#: napari's layer list would truncate
LABELS_LEGEND = "1 = surface (orange), 2 = ignore (blue-grey)"


def can_read(path: str | Path) -> bool:
    """True for an existing .tif/.tiff file, a zarr folder holding a 3D volume, a dataset folder or a
    folder of 2D TIFF slices (one volume; its listing and first header are read).

    A URL (``https://…/scroll.zarr``, ``s3://…/x.ome.zarr``: ``viewer.open(url)``) is claimed by its name
    alone (no request): a name ending in ``.zarr``.

    Cheap (file names, ``is_dir`` tests and zarr metadata, no pixel data): napari calls it for every
    path a user opens.
    """
    from napari_vesuvius.core.volume.remote import is_url

    if is_url(path):
        return str(path).rstrip("/").lower().endswith(".zarr")
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in TIFF_SUFFIXES
    return is_volume_zarr(path) or is_dataset_folder(path) or is_slice_folder(path)


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 ``get_reader`` hook: a reader for the paths we open, None (silently) for any other path."""
    try:
        paths = [path] if isinstance(path, str | Path) else list(path)
        if not paths or not all(can_read(p) for p in paths):
            return None
    except (OSError, TypeError, ValueError):  # an unreadable or odd path is simply not ours
        return None
    return read_volumes


def layer_data(volume: LazyVolume, *, as_labels: bool | None = None) -> LayerData:
    """One napari layer-data tuple for an opened volume (Labels or Image, decided cheaply), placed
    physically (scale, translate, units of ``volume.spatial``) with its reading notes in the metadata."""
    levels = volume.levels
    data: Any = levels if volume.multiscale else levels[0]
    smallest = levels[-1]
    labels = is_label_volume(volume.path, smallest) if as_labels is None else as_labels
    name = volume_id(volume.path)
    metadata: dict[str, Any] = {"path": volume.location, "kind": volume.kind, "vesuvius_id": name}
    metadata["spatial"] = {**volume.spatial.to_dict(), "source": volume.spatial.source}
    if volume.notes:
        metadata["notes"] = list(volume.notes)
    meta: dict[str, Any] = {
        "multiscale": volume.multiscale,
        "metadata": metadata,
        **volume.spatial.layer_kwargs(),
    }
    if labels:
        label_name = name if "label" in name.lower() else f"{name} labels"
        meta.update(name=label_name, colormap=dict(LABEL_COLORS), opacity=LABELS_OPACITY)
        return (data, meta, "labels")
    meta.update(name=name, contrast_limits=contrast_limits_for(smallest), colormap="gray")
    return (data, meta, "image")


def dataset_volume_layers(dataset: ChallengeDataset, volume: str) -> list[LayerData]:
    """The image (and, for a training id, the label) layer data of one dataset volume.

    The image always opens as an Image and the label as Labels (no content guess); both carry the
    dataset folder and the id in their metadata.
    """
    layers = [layer_data(open_noting(dataset.image_path(volume)), as_labels=False)]
    label_path = dataset.label_path(volume)
    if label_path is not None:
        layers.append(layer_data(open_noting(label_path), as_labels=True))
    for _, meta, _ in layers:
        meta["metadata"].update(dataset=str(dataset.root), vesuvius_id=str(volume))
    return layers


def read_dataset_folder(path: str | Path) -> list[LayerData]:
    """The first volume of a challenge dataset folder (its id list is browsed in the Data step)."""
    from napari_vesuvius.core.errors import DatasetError

    dataset = ChallengeDataset.open(path)
    if not dataset.ids:
        raise DatasetError(f"{path}: the dataset folder holds no volumes (train_images/, test_images/ empty)")
    return dataset_volume_layers(dataset, dataset.ids[0])


def open_noting(path: str | Path, **kwargs: Any) -> LazyVolume:
    """:func:`open_volume`, showing each of the volume's notes once as a warning (a notification in
    napari), however the reader also warned about it while reading."""
    import warnings

    from napari_vesuvius.core.errors import VesuviusWarning, warn_user

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VesuviusWarning)
        volume = open_volume(path, **kwargs)
    for note in volume.notes:
        warn_user(volume.location, note)
    for warning in caught:  # anything else warned while reading passes on unchanged
        text = str(warning.message)
        if not (issubclass(warning.category, VesuviusWarning) and any(n in text for n in volume.notes)):
            warnings.warn(warning.message, warning.category, stacklevel=2)
    return volume


def read_volumes(path: str | Sequence[str], *, level: int = 0, remote: Any = None) -> list[LayerData]:
    """Open each path (or URL) lazily and return its layer-data tuples (errors name the file).

    A dataset folder gives the layers of its first volume. A block-wise output whose run was
    interrupted opens for viewing (commands refuse it) with a warning notification and
    ``incomplete N/M blocks`` in its layer name, so it is never taken for a result. ``level``: the
    pyramid level to start from (0 = full resolution); ``remote``: the
    :class:`~napari_vesuvius.core.volume.remote.RemoteOptions` of a URL (the Data step's; napari's
    reader uses the defaults).
    """
    from napari_vesuvius.core.errors import warn_user
    from napari_vesuvius.core.scroll.record import output_progress
    from napari_vesuvius.core.volume.remote import is_url

    paths = [path] if isinstance(path, str | Path) else list(path)
    layers = []
    for item in paths:
        if is_url(item):
            volume = open_noting(str(item), allow_incomplete=True, level=level, remote=remote)
            data, meta, kind = layer_data(volume)
            if volume.remote is not None:  # retries and cache use while opening (header, sample)
                meta["metadata"]["remote"] = volume.remote.to_dict()
            layers.append((data, meta, kind))
            continue
        if not is_zarr_path(item) and is_dataset_folder(item):
            layers.extend(read_dataset_folder(item))
            continue
        data, meta, kind = layer_data(open_noting(item, allow_incomplete=True, level=level))
        progress = output_progress(item) if is_zarr_path(item) else None
        if progress is not None:
            done, total = progress
            warn_user(item, f"incomplete block-wise output ({done} of {total} blocks done): shown as it is")
            meta["name"] = f"{meta['name']} (incomplete {done}/{total} blocks)"
            meta["metadata"]["incomplete"] = [done, total]
        layers.append((data, meta, kind))
    return layers
