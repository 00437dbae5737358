"""Helpers of the Proofread dock that deal with layers and the viewer (no widgets of their own).

Paint shortcuts bound on the proofread Labels layer, the diff colours, the region on screen, the
default place for corrected labels, and an event watcher (autosave when the proofreading view is
hidden or the main window closes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.labels import BACKGROUND, IGNORE, SURFACE
from napari_vesuvius.core.proofread.region import Box, visible_box
from napari_vesuvius.widgets._layers import layer_array

if TYPE_CHECKING:
    import napari

#: key → label value painted: 1 surface, 0 background, 2 ignore
PAINT_KEYS = {"1": SURFACE, "0": BACKGROUND, "2": IGNORE}
#: suffixes of layers this dock (or the Tune dock) makes: never offered as inputs
DERIVED_SUFFIXES = (" proofread", " changes", " components", " preview", " fine-tuned")


def paint_action(value: int) -> Callable[[Any], None]:
    """A key action: paint ``value`` with the brush (selected label + paint mode)."""

    def paint(layer: Any) -> None:
        layer.selected_label = value
        layer.mode = "paint"

    paint.__name__ = f"paint_label_{value}"
    paint.__doc__ = f"Paint label {value}"
    return paint


def bind_paint_keys(layer: Any) -> None:
    """Bind 1 / 0 / 2 on ``layer`` (over napari's mode keys) to painting surface / background / ignore."""
    for key, value in PAINT_KEYS.items():
        layer.bind_key(key, paint_action(value), overwrite=True)


def diff_colormap() -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    from napari_vesuvius.core.proofread.diff import DIFF_COLORS

    return DirectLabelColormap(color_dict=dict(DIFF_COLORS))


_labels_warm = False


def warm_up_labels_display() -> None:
    """Compile napari's label-colour mapping (numba; 1–15 s the first time in a process) on the calling
    worker thread, so adding the first Labels layer does not freeze the GUI thread. Runs once."""
    global _labels_warm
    if _labels_warm:
        return
    from napari.layers import Labels

    from napari_vesuvius.widgets._layers import label_colormap

    for colormap in (label_colormap(), diff_colormap()):
        Labels(np.zeros((2, 2, 2), np.uint8), colormap=colormap)
    _labels_warm = True


def is_input_layer(layer: Any) -> bool:
    return not layer.name.endswith(DERIVED_SUFFIXES)


def visible_region(viewer: napari.viewer.Viewer, layer: Any, depth: int) -> Box:
    """The part of ``layer`` on screen (full-resolution voxels): ``depth`` slices around the current one
    in 2D display, the visible box in 3D."""
    shape = tuple(int(n) for n in layer_array(layer).shape)
    corners = np.asarray(layer.corner_pixels, dtype=float)
    if getattr(layer, "multiscale", False):
        corners = corners * np.asarray(layer.downsample_factors[layer.data_level])
    current = np.round(np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)).astype(int)
    return visible_box(corners[0], corners[1], list(viewer.dims.displayed), current, depth, shape)


def layer_path(layer: Any) -> Path | None:
    """The file a layer was read from (the reader stores it in the metadata), else None."""
    if layer is None:
        return None
    path = (getattr(layer, "metadata", None) or {}).get("path")
    return Path(path) if path else None


def default_target(labels_layer: Any, image_layer: Any) -> Path | None:
    """Where corrected labels go: the labels' file, else beside the image (``*_labels/<id>.tif`` of a
    challenge-style ``*_images/`` folder when that exists, else ``<id>_labels.tif``/``.zarr``)."""
    from napari_vesuvius.core.proofread.naming import split_name

    labels = layer_path(labels_layer)
    if labels is not None:
        return labels
    image = layer_path(image_layer)
    if image is None:
        return None
    stem, ext = split_name(image)
    ext = ".zarr" if ext.lower().endswith(".zarr") else ".tif"
    folder = image.parent
    if folder.name.endswith("_images"):
        sibling = folder.with_name(folder.name[: -len("_images")] + "_labels")
        if sibling.is_dir():
            return sibling / f"{stem}{ext}"
    return folder / f"{stem}_labels{ext}"


def viewer_grid(viewer: napari.viewer.Viewer) -> Any:
    """The grid settings (``viewer.canvas.grid`` since napari 0.9, ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None)
    return grid if grid is not None else viewer.grid


def wrap_text(*labels: Any) -> None:
    """Message labels: use the dock's width and wrap long text instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    for label in labels:
        label.native.setWordWrap(True)
        label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)


def run_while_visible(task: Any, job: Any, **kwargs: Any) -> Any:
    """Start ``job`` on a TaskRunner that is shown only while it runs (keeps the dock short)."""
    on_finished = kwargs.pop("on_finished", None)

    def finished() -> None:
        task.visible = False
        if on_finished is not None:
            on_finished()

    task.visible = True
    return task.start(job, on_finished=finished, **kwargs)


def find_dock_widget(viewer: napari.viewer.Viewer, kind: type) -> Any:
    """The open widget of class ``kind`` (a workbench tab or a dock), else None: see ``_docks``."""
    from napari_vesuvius.widgets._docks import find_widget

    return find_widget(viewer, kind)


def make_event_watcher(callbacks: dict[str, Callable[[], Any]]) -> Any:
    """A QObject event filter calling ``callbacks[name]`` when the watched object gets the QEvent
    ``name`` (``"Close"``, ``"Hide"``); the event goes on to the object as usual."""
    from qtpy.QtCore import QEvent, QObject

    wanted = {getattr(QEvent.Type, name): callback for name, callback in callbacks.items()}

    class EventWatcher(QObject):
        def eventFilter(self, watched: Any, event: Any) -> bool:
            callback = wanted.get(event.type())
            if callback is not None:
                callback()
            return False

    return EventWatcher()
