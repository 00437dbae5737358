"""npe2 sample data: a synthetic scroll fragment (CT image + challenge-style labels), made on the fly."""

from __future__ import annotations

from typing import Any

from napari_vesuvius.core.labels import LABEL_COLORS

SAMPLE_SHAPE: tuple[int, int, int] = (128, 128, 128)
SAMPLE_SEED = 7  # a view with six sheets, converging pairs and tears
IMAGE_LAYER_NAME = "synthetic CT"
LABELS_LAYER_NAME = "synthetic labels"


def labels_colormap() -> Any:
    """napari colormap with the fixed label colours of :data:`LABEL_COLORS` (ignore translucent)."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=dict(LABEL_COLORS))


def make_sample_data(
    shape: tuple[int, int, int] = SAMPLE_SHAPE, seed: int = SAMPLE_SEED
) -> list[tuple[Any, dict[str, Any], str]]:
    """Layer data tuples for the sample: the uint8 CT image and its 0/1/2 label volume.

    Deterministic (fixed seed), so the same sample appears in every session, screenshot and test.
    """
    from napari_vesuvius.core.synthetic import make_fragment

    fragment = make_fragment(shape, seed=seed)
    meta = {"synthetic": fragment.metadata}
    image_kwargs = {
        "name": IMAGE_LAYER_NAME,
        "contrast_limits": (0, 255),
        "colormap": "gray",
        "metadata": meta,
    }
    labels_kwargs = {
        "name": LABELS_LAYER_NAME,
        "colormap": labels_colormap(),
        "opacity": 0.7,
        "metadata": meta,
    }
    return [(fragment.image, image_kwargs, "image"), (fragment.labels, labels_kwargs, "labels")]
