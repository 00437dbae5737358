"""Viewer tests for the Tune widget: live preview, Apply in the background, components view."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_vesuvius.core.postprocess import PostprocessConfig, run_pipeline


@pytest.fixture(scope="module")
def fragment():
    from napari_vesuvius.core.synthetic import make_fragment

    return make_fragment((40, 48, 48), seed=5)


def _probability(fragment) -> np.ndarray:
    """A plausible network output: the blurred surface plus a little noise, in [0, 1]."""
    rng = np.random.default_rng(0)
    prob = ndimage.gaussian_filter(fragment.surface.astype(np.float32), 1.0)
    prob = np.clip(prob * 1.4 + rng.normal(0, 0.05, prob.shape).astype(np.float32), 0, 1)
    return prob.astype(np.float32)


@pytest.fixture
def tune(make_napari_viewer, fragment):
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer = make_napari_viewer()
    viewer.add_image(fragment.image, name="ct")
    viewer.add_image(_probability(fragment), name="prob")
    widget = TuneWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Tune")
    widget.probability.value = viewer.layers["prob"]
    widget.ct.value = viewer.layers["ct"]
    return viewer, widget


def test_live_preview_follows_slice_and_sliders(tune, fragment, qtbot):
    viewer, widget = tune
    prob = viewer.layers["prob"].data
    scan = fragment.image > 0
    viewer.dims.set_current_step(0, 20)
    widget.t_low.value = 0.4
    widget.update_preview()
    preview = viewer.layers["prob preview"]
    assert preview.data.shape == (1, 48, 48)
    assert preview.translate[0] == 20
    expected = run_pipeline(prob, widget.config(), scan_mask=scan)[20]
    agreement = (preview.data[0].astype(bool) == expected).mean()
    assert agreement > 0.99
    widget.threshold_mode.value = "absolute"
    widget.threshold.value = 0.95
    widget.update_preview()
    assert preview.data.sum() < expected.sum()
    assert widget.t_low.native.isHidden() and not widget.threshold.native.isHidden()
    # with the sliders at rest the preview is refined in the background to the exact 3D result
    widget.threshold_mode.value = "hysteresis"
    widget.update_preview()
    qtbot.waitUntil(lambda: not widget.refine_task.running, timeout=20000)
    exact = run_pipeline(prob, widget.config(), scan_mask=scan)[20]
    np.testing.assert_array_equal(viewer.layers["prob preview"].data[0].astype(bool), exact)


def test_apply_runs_full_pipeline_into_mask_layer(tune, fragment, qtbot):
    viewer, widget = tune
    widget.dust_size.value = 20
    assert widget.apply() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=30000)
    mask = viewer.layers["prob mask"].data
    expected = run_pipeline(viewer.layers["prob"].data, widget.config(), scan_mask=fragment.image > 0)
    np.testing.assert_array_equal(mask.astype(bool), expected)
    assert viewer.layers["prob mask"].metadata["postprocess_config"]["dust_size"] == 20


def test_config_save_and_load_round_trip(tune, tmp_path):
    _, widget = tune
    widget.closing_z.value = 3
    widget.config_path.value = tmp_path / "cfg.json"
    widget.save_button.clicked.emit()
    assert PostprocessConfig.load(tmp_path / "cfg.json").closing_z == 3
    widget.closing_z.value = 0
    widget.load_button.clicked.emit()
    assert widget.closing_z.value == 3


def test_components_view_lists_and_deletes_a_component(make_napari_viewer, qtbot):
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer = make_napari_viewer()
    mask = np.zeros((10, 20, 20), np.uint8)
    mask[2:4, 2:12, 2:12] = 1  # 200 voxels: the largest
    mask[7, 15:18, 15:18] = 1  # 9 voxels
    viewer.add_labels(mask, name="m")
    widget = TuneWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Tune")
    panel = widget.components
    panel.mask.value = viewer.layers["m"]
    assert panel.show_components() is not None
    qtbot.waitUntil(lambda: not panel.task.running, timeout=20000)
    assert panel.table.data.to_list() == [[1, 200], [2, 9]]
    assert "m components" in viewer.layers
    panel.selected.value = 1
    assert panel.edit(keep=False) is not None
    qtbot.waitUntil(lambda: not panel.task.running, timeout=20000)
    assert viewer.layers["m"].data.sum() == 9
    assert panel.table.data.to_list() == [[1, 9]]


def test_a_layer_from_a_model_with_its_own_clean_up_sets_the_controls(tune, fragment):
    from napari_vesuvius.widgets._layers import MODEL_POSTPROCESS

    viewer, widget = tune
    assert not widget.model_button.enabled  # "prob" came from no model
    own = PostprocessConfig(t_low=0.6, closing_z=0, closing_xy=0)
    layer = viewer.add_image(
        _probability(fragment), name="model prob", metadata={MODEL_POSTPROCESS: own.to_dict()}
    )
    widget.probability.value = layer
    assert widget.config() == own and widget.model_button.enabled
    assert "model's own clean-up" in widget.message.value
    widget.t_low.value = 0.35  # the user's change survives switching layers back and forth
    widget.probability.value = viewer.layers["prob"]
    widget.probability.value = layer
    assert widget.t_low.value == pytest.approx(0.35)
    assert widget.use_model_postprocess() and widget.config() == own
