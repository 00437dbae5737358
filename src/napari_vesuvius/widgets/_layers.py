"""Small helpers shared by the dock widgets for finding and updating layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari


#: Layer metadata key of the clean-up the model(s) behind a probability layer chose in training
#: (a ``PostprocessConfig.to_dict()``; absent when they stored none).
MODEL_POSTPROCESS = "model_postprocess"


#: Layer metadata key of the models that made a probability layer (a list of ``ModelSpec.describe()``
#: dicts, written by the Inference dock in memory and block-wise). Masks made from it (Tune's Apply,
#: Proofread's accepted labels) copy it, so Retrain fine-tunes the model that made the prediction.
MODELS = "models"

#: Default display of each kind of layer, so CT, labels, probabilities and masks read together:
#: CT grey underneath; labels and masks half transparent; probability transparent where low.
LABELS_OPACITY = 0.5
MASK_OPACITY = 0.6
PREVIEW_OPACITY = 0.7


def models_of(layer: Any) -> list[dict[str, Any]]:
    """The ``ModelSpec.describe()`` dicts of the models behind a layer (empty when unknown)."""
    stored = (getattr(layer, "metadata", None) or {}).get(MODELS) or []
    return [dict(entry) for entry in stored if isinstance(entry, dict) and entry.get("path")]


def probability_colormap() -> Any:
    """Orange to yellow, transparent at 0 and opaque at 1: shows over CT and labels without saturating."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[[1.0, 0.35, 0.0, 0.0], [1.0, 0.6, 0.0, 0.55], [1.0, 0.95, 0.2, 0.9]],
        controls=[0.0, 0.5, 1.0],
        name="vesuvius probability",
    )


def probability_style(dtype: Any) -> dict[str, Any]:
    """``add_image`` keyword arguments of a probability layer (uint8 0–255 or float 0–1)."""
    limits = (0, 255) if np.dtype(dtype) == np.uint8 else (0.0, 1.0)
    return {"colormap": probability_colormap(), "contrast_limits": limits, "blending": "translucent"}


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


def placement(layer: Any, origin: Any = None) -> dict[str, Any]:
    """``scale``, ``translate`` and ``units`` that put a new layer exactly over ``layer``.

    ``origin``: the voxel index (along ``layer``'s axes) where the new layer's data starts, for a crop
    (a proofreading box, a preview region); None for data covering the whole of ``layer``. Every layer a
    step makes from another one (probabilities, masks, previews, proofreading, components, comparisons)
    is placed through this, so CT, labels, probabilities and masks line up in physical units too.
    """
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    if origin is not None:
        translate = translate + np.asarray(origin, dtype=float) * scale
    kwargs: dict[str, Any] = {"scale": tuple(scale.tolist()), "translate": tuple(translate.tolist())}
    units = getattr(layer, "units", None)
    if units is not None:
        kwargs["units"] = tuple(str(unit) for unit in units)
    return kwargs


def place_like(target: Any, layer: Any, origin: Any = None) -> None:
    """Move an existing layer ``target`` over ``layer`` (see :func:`placement`), touching only what
    differs: each changed scale or translate re-slices the layer."""
    for key, value in placement(layer, origin).items():
        current = getattr(target, key)
        same = (
            tuple(str(u) for u in current) == tuple(value)
            if key == "units"
            else np.array_equal(np.asarray(current, dtype=float), np.asarray(value, dtype=float))
        )
        if not same:
            setattr(target, key, value)


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


def current_slice(viewer: napari.viewer.Viewer, layer: Any = None) -> tuple[int, int]:
    """``(axis, index)`` of the slice shown in 2D display (the first non-displayed axis).

    ``index`` is ``layer``'s voxel index at the viewer's position (its scale and translate applied: the
    viewer's step counts world steps, which differ from a layer's voxels when layers are placed
    differently); the viewer's step when no layer is given.
    """
    axis = int(viewer.dims.not_displayed[0])
    if layer is None:
        return axis, int(viewer.dims.current_step[axis])
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    return axis, int(np.round(point[axis - viewer.dims.ndim + layer.ndim]))
