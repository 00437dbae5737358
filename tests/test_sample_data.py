"""Tests of the npe2 sample-data contribution (no Qt needed: layers go into a ViewerModel)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_vesuvius._sample_data import (
    IMAGE_LAYER_NAME,
    LABELS_LAYER_NAME,
    SAMPLE_SEED,
    SAMPLE_SHAPE,
    make_sample_data,
)
from napari_vesuvius.core.labels import IGNORE, LABEL_COLORS, SURFACE


@pytest.fixture(scope="module")
def sample() -> list:
    return make_sample_data()


def test_sample_layer_tuples(sample: list) -> None:
    assert [kind for _, _, kind in sample] == ["image", "labels"]
    (image, image_kwargs, _), (labels, labels_kwargs, _) = sample
    assert image.shape == labels.shape == SAMPLE_SHAPE
    assert image.dtype == labels.dtype == np.uint8
    assert image_kwargs["name"] == IMAGE_LAYER_NAME and image_kwargs["contrast_limits"] == (0, 255)
    assert labels_kwargs["name"] == LABELS_LAYER_NAME
    assert set(np.unique(labels)) == {0, SURFACE, IGNORE}
    assert image_kwargs["metadata"]["synthetic"]["seed"] == SAMPLE_SEED


def test_sample_is_deterministic(sample: list) -> None:
    again = make_sample_data()
    for (first, _, _), (second, _, _) in zip(sample, again, strict=True):
        np.testing.assert_array_equal(first, second)


def test_sample_loads_into_a_viewer_with_fixed_label_colours(sample: list) -> None:
    viewer = ViewerModel()
    for data, kwargs, kind in sample:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    assert [layer.name for layer in viewer.layers] == [IMAGE_LAYER_NAME, LABELS_LAYER_NAME]
    image_layer, labels_layer = viewer.layers
    assert tuple(image_layer.contrast_limits) == (0, 255)
    assert viewer.dims.ndim == 3
    for value in (SURFACE, IGNORE):
        np.testing.assert_allclose(labels_layer.get_color(value), LABEL_COLORS[value], atol=1e-6)
    assert labels_layer.get_color(IGNORE)[3] < 1.0  # ignore is see-through
    # background stays transparent
    assert labels_layer.colormap.map(np.array([0]))[0][3] == 0


def test_sample_size_is_configurable() -> None:
    (image, _, _), (labels, _, _) = make_sample_data(shape=(32, 40, 48), seed=3)
    assert image.shape == labels.shape == (32, 40, 48)
