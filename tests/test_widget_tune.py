"""Viewer tests for the Tune widget: background live preview, Apply, model clean-up, components view."""

from __future__ import annotations

import threading
import time

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


def _ct(fragment) -> np.ndarray:
    """The fragment's CT with an unscanned (zero) band at x < 10, so gating shows."""
    ct = np.array(fragment.image, copy=True)
    ct[..., :10] = 0
    return ct


@pytest.fixture
def tune(make_napari_viewer, fragment, qtbot):
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer = make_napari_viewer()
    viewer.add_image(_ct(fragment), name="ct")
    viewer.add_image(_probability(fragment), name="prob")
    widget = TuneWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Tune")
    widget.probability.value = viewer.layers["prob"]
    widget.ct.value = viewer.layers["ct"]
    _settle(widget, qtbot)
    return viewer, widget


def _settle(widget, qtbot) -> None:
    """Wait until no preview, refinement or scan mask is requested, pending or running."""
    qtbot.waitUntil(lambda: widget.preview.idle and not widget.preview.scan_task.running, timeout=30000)


def _exact_slice(viewer, widget, index: int) -> np.ndarray:
    scan = viewer.layers["ct"].data > 0
    return run_pipeline(viewer.layers["prob"].data, widget.config(), scan_mask=scan)[index]


def test_live_preview_follows_slice_and_sliders(tune, qtbot):
    viewer, widget = tune
    viewer.dims.set_current_step(0, 20)
    widget.t_low.value = 0.4
    _settle(widget, qtbot)
    preview = viewer.layers["prob preview"]
    assert preview.data.shape == (1, 48, 48)
    assert preview.translate[0] == 20
    # at rest the preview is refined in the background to the exact whole-volume result
    np.testing.assert_array_equal(preview.data[0].astype(bool), _exact_slice(viewer, widget, 20))
    assert "(exact)" in widget.preview_info.value
    assert not preview.data[0][:, :10].any()  # gated to the scan
    widget.threshold_mode.value = "absolute"
    widget.threshold.value = 0.95
    _settle(widget, qtbot)
    assert viewer.layers["prob preview"] is preview  # updated in place, never re-added
    np.testing.assert_array_equal(preview.data[0].astype(bool), _exact_slice(viewer, widget, 20))
    assert widget.t_low.native.isHidden() and not widget.threshold.native.isHidden()
    viewer.dims.set_current_step(0, 7)
    _settle(widget, qtbot)
    assert preview.translate[0] == 7
    np.testing.assert_array_equal(preview.data[0].astype(bool), _exact_slice(viewer, widget, 7))
    viewer.dims.ndisplay = 3  # 3D: the visible region, in the background as well
    _settle(widget, qtbot)
    assert viewer.layers["prob preview"] is preview and preview.data.ndim == 3 and preview.data.shape[0] > 1
    z0, y0, x0 = (int(v) for v in preview.translate)
    depth, height, width = preview.data.shape
    full = run_pipeline(viewer.layers["prob"].data, widget.config(), scan_mask=viewer.layers["ct"].data > 0)
    np.testing.assert_array_equal(
        preview.data.astype(bool), full[z0 : z0 + depth, y0 : y0 + height, x0 : x0 + width]
    )
    viewer.dims.ndisplay = 2
    widget.live_preview.value = False
    _settle(widget, qtbot)
    assert "prob preview" not in viewer.layers


def test_preview_and_scan_mask_are_computed_off_the_gui_thread(tune, monkeypatch, qtbot):
    """The scan mask (a whole CT read) and each preview run in workers; until the mask is ready the
    preview gates with the CT inside its own box."""
    from napari_vesuvius.widgets import _tune_preview

    viewer, widget = tune
    gui = threading.main_thread()
    threads: dict[str, list[threading.Thread]] = {"scan": [], "preview": []}
    release = threading.Event()
    real_scan, real_preview = _tune_preview.scan_mask_from_ct, _tune_preview.preview_region

    def slow_scan(ct):
        threads["scan"].append(threading.current_thread())
        release.wait(20)
        return real_scan(ct)

    def recorded_preview(*args, **kwargs):
        threads["preview"].append(threading.current_thread())
        return real_preview(*args, **kwargs)

    monkeypatch.setattr(_tune_preview, "scan_mask_from_ct", slow_scan)
    monkeypatch.setattr(_tune_preview, "preview_region", recorded_preview)
    viewer.layers["ct"].data = viewer.layers["ct"].data.copy()  # a new CT array: its mask is not cached
    widget.ct.value = None
    widget.ct.value = viewer.layers["ct"]
    try:
        widget.t_low.value = 0.45
        qtbot.waitUntil(lambda: widget.preview.up_to_date, timeout=20000)
        assert widget.preview.scan_task.running  # the scan mask is still being computed...
        preview = viewer.layers["prob preview"].data[0]
        assert not preview[:, :10].any() and preview.any()  # ...but the preview is gated already
    finally:
        release.set()
    _settle(widget, qtbot)
    assert threads["scan"] and threads["preview"]
    assert all(thread is not gui for thread in threads["scan"] + threads["preview"])
    index = int(viewer.dims.current_step[0])
    np.testing.assert_array_equal(
        viewer.layers["prob preview"].data[0].astype(bool), _exact_slice(viewer, widget, index)
    )


def test_stale_previews_are_dropped_and_the_newest_request_wins(tune, monkeypatch, qtbot):
    from napari_vesuvius.widgets import _tune_preview

    viewer, widget = tune
    widget.threshold_mode.value = "absolute"
    widget.dust_size.value = 0  # absolute without components: every preview is exact at once
    viewer.dims.set_current_step(0, 20)
    _settle(widget, qtbot)
    computed: list[float] = []
    real_preview = _tune_preview.preview_region

    def slow_preview(prob, box, config, *args, **kwargs):
        computed.append(config.threshold)
        if config.threshold == pytest.approx(0.4):
            time.sleep(0.5)  # still running when the sliders move on
        return real_preview(prob, box, config, *args, **kwargs)

    monkeypatch.setattr(_tune_preview, "preview_region", slow_preview)
    dropped = widget.preview.dropped
    widget.threshold.value = 0.4  # starts at once
    assert widget.preview.preview_task.running
    viewer.dims.set_current_step(0, 10)  # the slice moves on while slice 20 is computed
    widget.threshold.value = 0.45
    widget.update_preview()  # pending
    widget.threshold.value = 0.6
    widget.update_preview()  # replaces the pending request
    _settle(widget, qtbot)
    assert 0.4 in computed and 0.45 not in computed  # a superseded pending request is never computed
    assert widget.preview.dropped > dropped  # the slow slice-20 result was not shown on slice 10
    preview = viewer.layers["prob preview"]
    assert preview.translate[0] == 10
    np.testing.assert_array_equal(preview.data[0].astype(bool), _exact_slice(viewer, widget, 10))


def test_apply_runs_full_pipeline_into_mask_layer_with_the_models(tune, fragment, qtbot):
    from napari_vesuvius.widgets._layers import MASK_OPACITY, MODELS

    viewer, widget = tune
    models = [{"path": "/models/a.pt", "name": "a"}]
    viewer.layers["prob"].metadata[MODELS] = models
    widget.dust_size.value = 20
    assert widget.apply() is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=30000)
    mask = viewer.layers["prob mask"]
    expected = run_pipeline(viewer.layers["prob"].data, widget.config(), scan_mask=_ct(fragment) > 0)
    np.testing.assert_array_equal(mask.data.astype(bool), expected)
    assert mask.metadata["postprocess_config"]["dust_size"] == 20
    assert mask.metadata[MODELS] == models
    assert mask.opacity == pytest.approx(MASK_OPACITY)
    assert f"{int(expected.sum()):,} voxels" in widget.message.value


def test_config_save_and_load_round_trip(tune, tmp_path):
    _, widget = tune
    widget.closing_z.value = 3
    widget.config_path.value = tmp_path / "cfg.json"
    widget.save_button.clicked.emit()
    assert PostprocessConfig.load(tmp_path / "cfg.json").closing_z == 3
    widget.closing_z.value = 0
    widget.load_button.clicked.emit()
    assert widget.closing_z.value == 3


def test_primary_controls_sit_outside_the_collapsed_sections(tune):
    _, widget = tune
    primary = widget.primary_controls()
    assert widget.apply_button in primary and widget.probability in primary and widget.task in primary
    assert widget.t_low in primary and widget.threshold not in primary  # the current mode's sliders
    assert all(not section.expanded for section in widget.sections.values())
    for control in primary:
        assert not control.native.isHidden()
        assert all(
            not section.body.native.isAncestorOf(control.native) for section in widget.sections.values()
        )
    widget.threshold_mode.value = "percentile"
    assert widget.percentile_fraction in widget.primary_controls()
    assert widget.t_low not in widget.primary_controls()
    assert widget.dust_size.parent is not None and not widget.sections["components"].expanded


def test_components_view_lists_and_deletes_a_component(make_napari_viewer, qtbot):
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer = make_napari_viewer()
    mask = np.zeros((10, 40, 40), np.uint8)
    mask[2:4, 2:32, 2:32] = 1  # 1,800 voxels: the largest
    mask[7, 35:38, 35:38] = 1  # 9 voxels
    viewer.add_labels(mask, name="m")
    widget = TuneWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Tune")
    panel = widget.components
    panel.mask.value = viewer.layers["m"]
    assert panel.show_components() is not None
    qtbot.waitUntil(lambda: not panel.task.running, timeout=20000)
    assert panel.table.data.to_list() == [[1, "1,800"], [2, "9"]]  # integers, thousands separated
    assert "2 components, 1,809 voxels" in panel.summary.value
    assert "m components" in viewer.layers
    panel.selected.value = 1
    assert panel.edit(keep=False) is not None
    qtbot.waitUntil(lambda: not panel.task.running, timeout=20000)
    assert viewer.layers["m"].data.sum() == 9
    assert panel.table.data.to_list() == [[1, "9"]]


def test_a_layer_from_a_model_with_its_own_clean_up_sets_the_controls(tune, fragment):
    from napari_vesuvius.widgets._layers import MODEL_POSTPROCESS

    viewer, widget = tune
    assert not widget.model_button.enabled  # "prob" came from no model
    assert "stored no clean-up" in widget.model_button.tooltip
    own = PostprocessConfig(t_low=0.6, closing_z=0, closing_xy=0)
    layer = viewer.add_image(
        _probability(fragment), name="model prob", metadata={MODEL_POSTPROCESS: own.to_dict()}
    )
    widget.probability.value = layer
    assert widget.config() == own and widget.model_button.enabled
    # the confirmation says what was set, and the section holding changed controls opens
    assert "Set the model's clean-up" in widget.message.value
    assert "T low 0.30 → 0.60" in widget.message.value and "closing z 2 → 0" in widget.message.value
    assert widget.sections["morphology"].expanded
    widget.t_low.value = 0.35  # the user's change survives switching layers back and forth
    widget.probability.value = viewer.layers["prob"]
    widget.probability.value = layer
    assert widget.t_low.value == pytest.approx(0.35)
    widget.model_button.clicked.emit()
    assert widget.config() == own and "T low 0.35 → 0.60" in widget.message.value
    assert widget.use_model_postprocess() and "already hold" in widget.message.value


def test_a_drag_shows_interim_previews_of_the_same_slice(tune, monkeypatch, qtbot):
    """A result for older settings of the same slice is shown while the newest is computed."""
    from napari_vesuvius.widgets import _tune_preview

    viewer, widget = tune
    widget.threshold_mode.value = "absolute"
    widget.dust_size.value = 0
    _settle(widget, qtbot)
    real_preview = _tune_preview.preview_region
    release = threading.Event()

    def held_preview(prob, box, config, *args, **kwargs):
        if config.threshold == pytest.approx(0.6):
            release.wait(20)  # the newest request is still being computed
        return real_preview(prob, box, config, *args, **kwargs)

    monkeypatch.setattr(_tune_preview, "preview_region", held_preview)
    shown = widget.preview.shown
    try:
        widget.threshold.value = 0.4
        widget.update_preview()
        widget.threshold.value = 0.6
        widget.update_preview()  # pending while 0.4 is computed
        qtbot.waitUntil(lambda: widget.preview.shown > shown, timeout=20000)
        assert "updating" in widget.preview_info.value  # the 0.4 preview, shown as interim
    finally:
        release.set()
    _settle(widget, qtbot)
    index = int(viewer.dims.current_step[0])
    np.testing.assert_array_equal(
        viewer.layers["prob preview"].data[0].astype(bool), _exact_slice(viewer, widget, index)
    )
