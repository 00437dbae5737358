"""Viewer tests for the Score widget: score breakdown, sweeps with plot and best value, cancel, datasets."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_vesuvius.core.metric import score_volume
from napari_vesuvius.core.postprocess import PostprocessConfig, run_pipeline
from napari_vesuvius.core.postprocess.sweep import run_sweep


@pytest.fixture(scope="module")
def fragment():
    from napari_vesuvius.core.synthetic import make_fragment

    return make_fragment((24, 40, 40), seed=5)


def _probability(fragment) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    prob = ndimage.gaussian_filter(fragment.surface.astype(np.float32), 1.0)
    return np.clip(prob * 1.4 + rng.normal(0, 0.1, prob.shape), 0, 1).astype(np.float32)


@pytest.fixture
def score(make_napari_viewer, fragment):
    from napari_vesuvius.widgets.score_widget import ScoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(fragment.image, name="ct")
    viewer.add_image(_probability(fragment), name="prob")
    viewer.add_labels(fragment.labels, name="labels")
    widget = ScoreWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Score")
    widget.labels_layer.value = viewer.layers["labels"]
    widget.probability.value = viewer.layers["prob"]
    widget.ct.value = viewer.layers["ct"]
    return viewer, widget


def _wait(qtbot, widget, worker, timeout=60000):
    """Wait until the started job has finished (its callbacks ran on the GUI thread)."""
    assert worker is not None, widget.message.value
    qtbot.waitUntil(lambda: not widget.task.running, timeout=timeout)


def test_score_shows_the_metric_breakdown(score, fragment, qtbot):
    viewer, widget = score
    mask = run_pipeline(viewer.layers["prob"].data, PostprocessConfig(), scan_mask=fragment.scan_mask)
    viewer.add_labels(mask.astype(np.uint8), name="mask")
    widget.mask.value = viewer.layers["mask"]
    _wait(qtbot, widget, widget.score())
    expected = score_volume(mask, fragment.labels)
    assert widget.last_score.to_dict() == expected.to_dict()
    text = widget.report.value
    assert f"score         {expected.score:.4f}" in text
    assert f"SurfaceDice   {expected.surface_dice:.4f}" in text
    assert f"split {expected.voi_split:.4f}   merge {expected.voi_merge:.4f}" in text
    counts = expected.topo_counts[0]
    assert f"dim 0: m={counts['m']:<4} p={counts['p']:<4} g={counts['g']:<4}" in text


def test_sweep_plots_scores_and_use_best_sets_the_tune_widget(score, fragment, qtbot, tmp_path):
    from napari_vesuvius.widgets.score_widget import BASE_TUNE
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer, widget = score
    tune = TuneWidget(viewer, persist=False)
    tune.live_preview.value = False
    viewer.window.add_dock_widget(tune, name="Tune")
    tune.t_high.value = 0.8
    widget.base.value = BASE_TUNE
    widget.parameter.value = "t_low"
    widget.start.value, widget.stop.value, widget.step.value = 0.2, 0.5, 0.1
    _wait(qtbot, widget, widget.sweep())
    expected = run_sweep(
        [("prob", viewer.layers["prob"].data, fragment.labels, fragment.image > 0)],
        tune.config(),
        "t_low",
        [0.2, 0.3, 0.4, 0.5],
    )
    assert widget.plot.x == [0.2, 0.3, 0.4, 0.5]
    assert widget.plot.curves["score"] == expected.mean_scores
    assert widget.plot.best_index == expected.best_index
    assert widget.best.value.startswith(f"best t_low = {expected.best_value:g}")
    widget.use_best_button.clicked.emit()
    assert tune.t_low.value == pytest.approx(expected.best_value)
    assert tune.t_high.value == pytest.approx(0.8)
    viewer.window.screenshot(str(tmp_path / "score_widget.png"), canvas_only=False)


def test_use_best_without_tune_widget_saves_the_config_file(score, qtbot, tmp_path):
    _, widget = score
    widget.parameter.value = "dust_size"
    widget.start.value, widget.stop.value, widget.step.value = 0, 2000, 1000
    _wait(qtbot, widget, widget.sweep())
    assert widget.plot.x == [0, 1000, 2000]
    # integers read as integers: in the report, the plot's ticks and its best-value note
    assert "     1,000  " in widget.report.value and "e+03" not in widget.report.value
    widget.plot.figure.canvas.draw()
    ticks = [label.get_text() for label in widget.plot.axes.get_xticklabels()]
    assert "1,000" in ticks and not any("." in tick or "e" in tick for tick in ticks)
    widget.config_path.value = tmp_path / "best.json"
    widget.use_best_button.clicked.emit()
    saved = PostprocessConfig.load(tmp_path / "best.json")
    assert saved.dust_size == widget.last_sweep.best_value


def test_bad_settings_are_reported_without_starting(score):
    _, widget = score
    widget.parameter.value = "threshold"  # the default config uses hysteresis
    assert widget.sweep() is None
    assert "threshold_mode is 'absolute'" in widget.message.value
    assert not widget.task.running


def test_cancel_a_sweep(score, qtbot):
    _, widget = score
    widget.parameter.value = "t_low"
    widget.start.value, widget.stop.value, widget.step.value = 0.05, 0.8, 0.01
    worker = widget.sweep()
    widget.task.cancel_button.clicked.emit()
    _wait(qtbot, widget, worker)
    assert widget.last_sweep is None
    assert "cancelled" in widget.message.value


@pytest.mark.slow
def test_sweep_over_all_training_volumes_of_a_dataset(make_napari_viewer, tmp_path, qtbot):
    from napari_vesuvius.core.synthetic import write_challenge_dataset
    from napari_vesuvius.widgets.data_widget import DataWidget
    from napari_vesuvius.widgets.score_widget import TRAINING_VOLUMES, ScoreWidget

    layout = write_challenge_dataset(tmp_path / "ds", n_train=2, n_test=0, shape=(24, 32, 32), seed=4)
    probs = tmp_path / "probs"
    probs.mkdir()
    for volume_id in layout.train_ids:
        label = tifffile.imread(layout.train_label(volume_id))
        prob = np.where(label == 1, 200, 20).astype(np.uint8)
        tifffile.imwrite(probs / f"{volume_id}.tif", prob)
    viewer = make_napari_viewer()
    data = DataWidget(viewer, persist=False)
    viewer.window.add_dock_widget(data, name="Data")
    data.open_path(layout.root)
    qtbot.waitUntil(lambda: data.dataset is not None, timeout=60000)  # the Data step opens in the background
    widget = ScoreWidget(viewer, persist=False)
    viewer.window.add_dock_widget(widget, name="Score")
    widget.volumes.value = TRAINING_VOLUMES
    widget.prob_folder.value = probs
    widget.base.value = "defaults"
    widget.parameter.value = "closing_z"
    widget.start.value, widget.stop.value, widget.step.value = 0, 2, 1
    _wait(qtbot, widget, widget.sweep())
    result = widget.last_sweep
    assert sorted(result.case_names) == sorted(str(i) for i in layout.train_ids)
    table = widget.table.data.to_list()
    assert len(table) == 3 and table[-1] == [f"{s:.4f}" for s in result.mean_scores]  # fixed decimals
    _wait(qtbot, widget, widget.score())
    assert "mean over 2 volume(s)" in widget.report.value
    assert widget.last_sweep.values == [PostprocessConfig().margin]


def test_primary_controls_first_and_the_sweep_collapsed(score):
    from napari_vesuvius.widgets.score_widget import TRAINING_VOLUMES

    _, widget = score
    assert not widget.sweep_section.expanded
    controls = widget.primary_controls()
    assert controls[:3] == [widget.volumes, widget.mask, widget.labels_layer]
    assert widget.score_button in controls and widget.task in controls and widget.message in controls
    assert all(control.native.isVisibleTo(widget.native) for control in controls)
    assert widget.base in widget.sweep_form  # the base config is a sweep setting for layers ...
    widget.volumes.value = TRAINING_VOLUMES  # ... and Score's clean-up for probability files
    assert widget.base in widget.inputs and widget.config_path in widget.inputs
    assert widget.prob_folder in widget.primary_controls() and widget.base in widget.primary_controls()
    assert all(control.native.isVisibleTo(widget.native) for control in widget.primary_controls())
    widget.volumes.value = widget.volumes.choices[0]
    assert widget.base in widget.sweep_form and widget.base not in widget.inputs


def test_score_breakdown_counts_are_integers():
    import dataclasses

    from napari_vesuvius.widgets._plot import value_text
    from napari_vesuvius.widgets.score_widget import format_score

    assert value_text(1000.0) == "1,000" and value_text(0.25) == "0.25" and value_text(5) == "5"
    result = score_volume(np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), np.uint8))
    counts = {0: {"m": 1200.0, "p": 3, "g": 1234}}
    text = format_score(dataclasses.replace(result, topo_counts=counts))
    assert "dim 0: m=1,200 p=3    g=1,234" in text
