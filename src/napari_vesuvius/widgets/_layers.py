"""Small helpers shared by the dock widgets for finding and updating layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari


#: Layer metadata key of the clean-up the model(s) behind a probability layer chose in training
#: (a ``PostprocessConfig.to_dict()``; absent when they stored none).
MODEL_POSTPROCESS = "model_postprocess"


def model_postprocess_of(layer: Any) -> Any:
    """The ``PostprocessConfig`` the model behind a probability layer chose, or None."""
    from napari_vesuvius.core.postprocess import PostprocessConfig

    stored = (getattr(layer, "metadata", None) or {}).get(MODEL_POSTPROCESS)
    if not stored:
        return None
    return PostprocessConfig.from_dict(stored, f"layer {getattr(layer, 'name', '?')!r} metadata")


def layer_array(layer: Any) -> Any:
    """The full-resolution data of a layer (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def label_colormap(hide_ignore: bool = False) -> Any:
    """The fixed surface/ignore colours as a napari label colormap."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_vesuvius.core.labels import IGNORE, LABEL_COLORS

    colors = dict(LABEL_COLORS)
    if hide_ignore:
        colors[IGNORE] = (0.0, 0.0, 0.0, 0.0)
    return DirectLabelColormap(color_dict=colors)


def set_labels_layer(viewer: napari.viewer.Viewer, name: str, data: np.ndarray, **kwargs: Any) -> Any:
    """Update the Labels layer called ``name`` in place, or add it; returns the layer."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        for key, value in kwargs.items():
            setattr(layer, key, value)
        layer.data = data
        return layer
    return viewer.add_labels(data, name=name, **kwargs)


def set_image_layer(viewer: napari.viewer.Viewer, name: str, data: Any, **kwargs: Any) -> Any:
    """Update the Image layer called ``name`` in place, or add it; returns the layer."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        for key, value in kwargs.items():
            setattr(layer, key, value)
        return layer
    return viewer.add_image(data, name=name, **kwargs)


def current_slice(viewer: napari.viewer.Viewer) -> tuple[int, int]:
    """``(axis, index)`` of the slice shown in 2D display (the first non-displayed axis)."""
    axis = int(viewer.dims.not_displayed[0])
    return axis, int(viewer.dims.current_step[axis])
