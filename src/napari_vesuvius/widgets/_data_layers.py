"""The Data step's layers: the jobs that read them (worker thread) and the slots that show them (GUI).

Reading (:func:`open_job`, :func:`volume_job`) opens the files lazily, takes contrast limits from the
reader's metadata and warms napari's one-time costs (:func:`warm_napari`), all on the worker thread.

Replacing layers (remove + add) costs napari a new vispy node, a layer-list row and a thumbnail per
volume; setting ``layer.data`` keeps all that and the user's display choices (opacity, colormap, blending,
visibility). A layer is added only when the kind of layers changes or when a layer cannot take the new
data in place (multiscale ↔ single scale, another dimensionality). While browsing a dataset, a test id
(no labels) hides the label layer and gives it empty (lazy zero) data of the image's shape instead of
removing it: napari runs a full garbage collection on every layer removal (0.2–0.7 s), and the layer
comes back in place at the next training id.
Contrast limits come from the reader's metadata (dtype range or a small sample read in the worker),
never from the lazy data on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._layers import LABELS_OPACITY, label_colormap

LayerData = tuple[Any, dict[str, Any], str]
KINDS = ("image", "labels")


class LayerSlots:
    """At most one image and one label layer, owned by the Data step and reused across volumes."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._layers: dict[str, Any] = {}
        #: the label layer holds no labels (a test id): hidden by us, left out of label_layers()
        self._labels_empty = False

    def layers(self) -> list[Any]:
        """The layers shown (image first), leaving out any the user deleted and the emptied label layer."""
        image = self._alive("image")
        return ([] if image is None else [image]) + self.label_layers()

    def label_layers(self) -> list[Any]:
        """The label layer shown, if any (not the hidden, empty one kept for a test id)."""
        layer = self._alive("labels")
        return [] if layer is None or self._labels_empty else [layer]

    def _alive(self, kind: str) -> Any:
        layer = self._layers.get(kind)
        return layer if layer is not None and layer in self.viewer.layers else None

    def show(self, layer_data: list[LayerData], *, hide_ignore: bool = False, browsing: bool = False) -> None:
        """Show these layer-data tuples (one per kind): update layers in place, add or remove as needed.

        ``browsing`` (a dataset's ids): a missing label volume hides and empties the label layer rather
        than removing it.
        """
        wanted: dict[str, tuple[Any, dict[str, Any]]] = {}
        for data, meta, kind in layer_data:
            wanted.setdefault(kind, (data, meta))
        old_extent = self._extent()
        for kind in KINDS:
            layer = self._alive(kind)
            if kind not in wanted:
                if layer is not None and browsing and kind == "labels" and "image" in wanted:
                    self._empty_labels(layer, *wanted["image"])
                    continue
                if layer is not None:
                    self.viewer.layers.remove(layer)
                self._layers.pop(kind, None)
                continue
            data, meta = wanted[kind]
            if layer is not None and _fits(layer, data, meta):
                _update(layer, data, meta)
                if kind == "labels" and self._labels_empty:
                    layer.visible = True  # we hid it for a test id
                    self._labels_empty = False
                continue
            if layer is not None:
                self.viewer.layers.remove(layer)
            self._layers[kind] = self._add(data, meta, kind, hide_ignore)
            if kind == "labels":
                self._labels_empty = False
        self._keep_labels_on_top()
        new_extent = self._extent()
        if new_extent is not None and old_extent != new_extent:  # first volume, or another size / place
            self.viewer.reset_view()

    def _empty_labels(self, layer: Any, image: Any, image_meta: dict[str, Any]) -> None:
        """Hide the label layer and give it lazy zeros shaped like the image (nothing read, nothing drawn)."""
        import dask.array as da
        import numpy as np

        levels = list(image) if image_meta.get("multiscale") else [image]
        zeros = [da.zeros(level.shape, dtype=np.uint8, chunks=level.chunksize) for level in levels]
        data = zeros if image_meta.get("multiscale") else zeros[0]
        meta = {
            "name": f"{image_meta.get('name', 'volume')} (no labels)",
            "metadata": {"no_labels": True},
            "multiscale": bool(image_meta.get("multiscale")),
            "scale": image_meta.get("scale"),
            "translate": image_meta.get("translate"),
            "units": image_meta.get("units"),
        }
        layer.visible = False  # first: a hidden layer is not sliced when its data changes
        if _fits(layer, data, meta):
            _update(layer, data, meta)
        self._labels_empty = True

    def set_ignore_hidden(self, hidden: bool) -> None:
        """Show or hide label 2 (ignore) in the label layer."""
        for layer in self.label_layers():
            layer.colormap = label_colormap(hide_ignore=hidden)

    def _add(self, data: Any, meta: dict[str, Any], kind: str, hide_ignore: bool) -> Any:
        from napari.layers import Layer

        meta = dict(meta)
        if kind == "labels":
            meta.update(opacity=LABELS_OPACITY, colormap=label_colormap(hide_ignore=hide_ignore))
        return self.viewer.add_layer(Layer.create(data, meta, kind))

    def _keep_labels_on_top(self) -> None:
        image, labels = self._alive("image"), self._alive("labels")
        if image is None or labels is None:
            return
        layers = self.viewer.layers
        if layers.index(image) > layers.index(labels):
            layers.move(layers.index(image), layers.index(labels))

    def _extent(self) -> tuple[Any, ...] | None:
        """The image's world extent (shape, scale and translate: a new placement reframes the view too)."""
        import numpy as np

        extents = tuple(
            tuple(np.round(np.asarray(layer.extent.world, dtype=float), 6).ravel().tolist())
            for layer in self.layers()[:1]
        )
        return extents or None


def _level0(layer: Any) -> Any:
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _fits(layer: Any, data: Any, meta: dict[str, Any]) -> bool:
    """Can ``layer`` take ``data`` in place? (napari cannot switch a layer to or from multiscale.)"""
    multiscale = bool(meta.get("multiscale", False))
    if bool(getattr(layer, "multiscale", False)) != multiscale:
        return False
    new = data[0] if multiscale else data
    return len(new.shape) == layer.ndim


def _update(layer: Any, data: Any, meta: dict[str, Any]) -> None:
    """Set the data, name, metadata, contrast limits and placement (scale, translate, units) of an
    existing layer."""
    import numpy as np

    ndim = layer.ndim
    # each changed scale/translate re-slices the layer: set them only when they differ
    scale = meta.get("scale") or (1.0,) * ndim
    translate = meta.get("translate") or (0.0,) * ndim
    units = tuple(str(unit) for unit in (meta.get("units") or ("pixel",) * ndim))
    if tuple(str(unit) for unit in layer.units) != units:
        layer.units = units
    if not np.array_equal(np.asarray(layer.scale, float), np.asarray(scale, float)):
        layer.scale = scale
    if not np.array_equal(np.asarray(layer.translate, float), np.asarray(translate, float)):
        layer.translate = translate
    layer.data = data
    layer.metadata = dict(meta.get("metadata", {}))
    limits = meta.get("contrast_limits")
    if limits is not None and hasattr(layer, "contrast_limits_range"):
        layer.contrast_limits_range = limits
        layer.contrast_limits = limits
    layer.name = meta.get("name", layer.name)


def describe_placement(layer: Any) -> str:
    """A layer's physical placement in words (``Spatial.describe()``), naming where the reader found it."""
    from napari_vesuvius.core.volume.spatial import Spatial

    stored = layer.metadata.get("spatial")
    spatial = Spatial.from_layer(layer)
    if isinstance(stored, dict) and stored.get("source"):
        spatial = Spatial(spatial.scale, spatial.translation, spatial.unit, str(stored["source"]))
    return spatial.describe()


#: what the Data step opens, for messages about a path it cannot open
EXPECTED = (
    "a .tif/.tiff volume, a zarr / OME-Zarr folder, a folder of 2D TIFF slices, a challenge dataset "
    "folder (train_images/ or test_images/), or an http(s):// / s3:// URL of a zarr / OME-Zarr"
)


_WARMED: set[tuple[str, str, bool]] = set()


def warm_napari(layers: list[Any]) -> None:
    """Make napari's one-time work for these kinds of layers happen here, on the worker thread.

    The first layer of a kind a session shows costs napari 3–10 s on the GUI thread: importing pandas
    (a Labels layer's features table), scikit-image and dask.distributed, setting up pint's unit
    registry, and JIT-compiling (numba) the label colormap for the data's dtype. Creating a throwaway
    layer of each new (kind, dtype) here does all of that off the GUI thread (napari layers are plain
    models; only adding them to the viewer must happen on the GUI thread). A few ms once warm.
    """
    import numpy as np
    from napari.layers import Layer

    from napari_vesuvius.widgets._layers import label_colormap

    for data, meta, kind in layers:
        level = data[0] if meta.get("multiscale") else data
        key = (kind, np.dtype(level.dtype).str, bool(meta.get("multiscale")))
        if key in _WARMED:
            continue
        options = dict(meta)
        if kind == "labels":
            options["colormap"] = label_colormap()
        Layer.create(data, options, kind)
        _WARMED.add(key)


def volume_job(dataset: Any, volume_id: str) -> Generator[Progress, None, list[LayerData]]:
    """Job: the layer data of one dataset id (image, and labels for a training id)."""
    from napari_vesuvius._reader import dataset_volume_layers

    yield Progress(0, 1, f"reading {volume_id}")
    layers = dataset_volume_layers(dataset, volume_id)
    warm_napari(layers)
    yield Progress(1, 1, "read")
    return layers


def open_url_job(
    url: str, level: int = 0, cache_dir: str | Path | None = None
) -> Generator[Progress, None, tuple[Any, list[LayerData], str]]:
    """Job: ``(None, layers, "")`` of a remote zarr / OME-Zarr at ``url``, from pyramid ``level`` on,
    its chunks cached in ``cache_dir`` (None: no cache). Any failure (unreachable, 404, not a volume)
    is a VolumeError naming the URL."""
    from napari_vesuvius._reader import read_volumes
    from napari_vesuvius.core.errors import VesuviusError, VolumeError
    from napari_vesuvius.core.volume.remote import RemoteOptions

    yield Progress(0, 2, f"opening {url}")
    remote = RemoteOptions(cache_dir=Path(cache_dir) if cache_dir else None)
    try:
        layers = read_volumes(url, level=level, remote=remote)
    except VesuviusError as error:
        if url in str(error):
            raise
        raise VolumeError(url, str(error)) from error
    except Exception as error:  # network and store errors vary widely; name the URL
        raise VolumeError(url, f"cannot open ({type(error).__name__}: {error})") from error
    warm_napari(layers)
    yield Progress(2, 2, "read")
    return None, layers, ""


def open_job(
    path: str | Path, level: int = 0, cache_dir: str | Path | None = None
) -> Generator[Progress, None, tuple[Any, list[LayerData], str]]:
    """Job: ``(dataset, layers of its first id, problem)`` for a dataset folder, ``(None, layers, "")``
    for a volume or a URL (:func:`open_url_job`). A dataset whose first volume cannot be read still
    opens (``problem`` says why). ``level``: the pyramid level a volume opens at (0 = full resolution);
    ``cache_dir``: the chunk cache of a URL."""
    from napari_vesuvius._reader import can_read, dataset_volume_layers, read_volumes
    from napari_vesuvius.core.dataset import ChallengeDataset, is_dataset_folder
    from napari_vesuvius.core.errors import VesuviusError, VolumeError
    from napari_vesuvius.core.volume.io import is_zarr_path
    from napari_vesuvius.core.volume.remote import is_url

    if is_url(path):
        return (yield from open_url_job(str(path), level, cache_dir))
    path = Path(path)
    if str(path) in ("", "."):
        raise VolumeError(None, f"choose {EXPECTED}")
    if not path.exists():
        raise VolumeError(path, "does not exist")
    yield Progress(0, 2, f"opening {path.name}")
    if path.is_dir() and is_dataset_folder(path):
        dataset = ChallengeDataset.open(path)
        yield Progress(1, 2, f"{len(dataset.ids)} ids")
        layers: list[LayerData] = []
        try:
            layers = dataset_volume_layers(dataset, dataset.ids[0]) if dataset.ids else []
        except (VesuviusError, OSError) as error:
            return dataset, [], str(error)
        warm_napari(layers)
        yield Progress(2, 2, "read")
        return dataset, layers, ""
    if not (can_read(path) or is_zarr_path(path)):  # a zarr folder: open_volume says what is wrong
        kind = "folder" if path.is_dir() else f"{path.suffix or 'extensionless'} file"
        raise VolumeError(path, f"a {kind} this plugin does not open; expected {EXPECTED}")
    layers = read_volumes(str(path), level=level)
    warm_napari(layers)
    yield Progress(2, 2, "read")
    return None, layers, ""
