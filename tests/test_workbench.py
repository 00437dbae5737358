"""The workbench: one dock at 1280×800 without growing the window, steps built when first needed,
other docks found through ``_docks`` (tab or separate dock), napari's layer hook forwarded, ``demo --gui``."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_vesuvius.widgets import workbench as workbench_module
from napari_vesuvius.widgets._docks import find_widget, open_widgets, show_widget

PLUGIN, WORKBENCH = "napari-vesuvius", "Vesuvius workbench"


def _process(qtbot, rounds: int = 5) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
        qtbot.wait(10)


def _wait_warm_up(workbench, qtbot) -> None:
    qtbot.waitUntil(lambda: workbench.ready, timeout=120000)


@pytest.fixture
def docked(make_napari_viewer, qtbot):
    """A viewer with the workbench docked from the Plugins menu entry (its first tab built)."""
    viewer = make_napari_viewer()
    _, workbench = viewer.window.add_plugin_dock_widget(PLUGIN, WORKBENCH)
    qtbot.waitUntil(lambda: workbench.is_built(0), timeout=60000)
    yield viewer, workbench
    _wait_warm_up(workbench, qtbot)


def test_opening_builds_only_the_first_tab(make_napari_viewer, qtbot):
    from napari_vesuvius.widgets.data_widget import DataWidget

    viewer = make_napari_viewer()
    _, workbench = viewer.window.add_plugin_dock_widget(PLUGIN, WORKBENCH)
    assert isinstance(workbench, workbench_module.Workbench)
    assert workbench.built_steps() == []  # napari docks (and paints) it before any step is built
    qtbot.waitUntil(lambda: workbench.is_built(0), timeout=60000)
    titles = [workbench.tabs.tabText(i) for i in range(workbench.tabs.count())]
    assert titles == ["Data", "Predict", "Tune", "Score", "Proofread", "Train", "Export"]
    assert [type(step) for step in workbench.built_steps()] == [DataWidget]
    assert open_widgets(viewer)[0] is workbench.built_steps()[0]
    # the other steps' modules are imported on a worker thread meanwhile
    _wait_warm_up(workbench, qtbot)
    assert workbench.warm_up.last_error is None
    assert all(module in sys.modules for module in workbench_module.WARM_UP_MODULES)
    workbench.tabs.setCurrentIndex(3)  # showing a tab builds its step
    assert workbench.is_built(3) and type(workbench.current_step()).__name__ == "ScoreWidget"
    assert workbench.tabs.widget(3).widget() is workbench.current_step().native


def test_a_tab_shown_during_the_warm_up_is_built_after_it(make_napari_viewer, qtbot, monkeypatch):
    import threading

    importing = threading.Event()
    warm_up_job = workbench_module._warm_up_job

    def slow_warm_up(modules):  # an import that takes until the test says so
        yield workbench_module.Progress(0, 1)
        importing.wait(30)
        yield from warm_up_job(modules)

    monkeypatch.setattr(workbench_module, "_warm_up_job", slow_warm_up)
    viewer = make_napari_viewer()
    workbench = workbench_module.Workbench(viewer)
    viewer.window.add_dock_widget(workbench, name=WORKBENCH)
    qtbot.waitUntil(lambda: workbench.is_built(0), timeout=60000)
    assert workbench.warm_up.running
    workbench.tabs.setCurrentIndex(2)
    assert not workbench.is_built(2)  # "Loading…" meanwhile: the GUI thread does not wait for imports
    assert workbench.tabs.widget(2).widget().text() == "Loading…"
    importing.set()
    _wait_warm_up(workbench, qtbot)
    assert workbench.is_built(2) and type(workbench.current_step()).__name__ == "TuneWidget"


def test_find_widget_builds_a_workbench_step_on_demand(docked):
    from napari_vesuvius.widgets.export_widget import ExportWidget
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer, workbench = docked
    assert not workbench.is_built(2)
    tune = find_widget(viewer, TuneWidget)
    assert isinstance(tune, TuneWidget) and workbench.is_built(2)
    assert find_widget(viewer, TuneWidget) is tune  # built once
    assert workbench.step(TuneWidget) is tune and workbench.tabs.currentIndex() == 0  # not shown by finding
    show_widget(viewer, tune)
    assert workbench.tabs.currentIndex() == 2 and workbench.current_step() is tune
    # a step whose constructor finds another step (Export looks for Tune) gets the same widget
    export = workbench.step(ExportWidget)
    assert find_widget(viewer, ExportWidget) is export
    assert find_widget(viewer, int) is None


def test_steps_find_each_other_through_naparis_viewer_proxy(docked, recwarn):
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    _, workbench = docked
    data = workbench.built_steps()[0]
    assert type(data.viewer).__name__ == "PublicOnlyProxy"  # what napari hands a plugin's dock widget
    tune = find_widget(data.viewer, TuneWidget)
    assert type(tune) is TuneWidget and tune is workbench.step(TuneWidget)  # the widget, not a proxy
    show_widget(data.viewer, tune)
    assert workbench.tabs.currentIndex() == 2
    assert not [w for w in recwarn if "Private attribute access" in str(w.message)]


def test_find_widget_prefers_a_built_separate_dock(docked, qtbot):
    from napari_vesuvius.widgets.score_widget import ScoreWidget

    viewer, workbench = docked
    dock, area = viewer.window.add_plugin_dock_widget(PLUGIN, "Score")
    assert isinstance(area, workbench_module.ScoreDock)  # the step in its own scroll area
    score = area.step
    assert isinstance(score, ScoreWidget)
    assert any(widget is score for widget in viewer.window.dock_widgets.values())  # napari's inner widget
    assert find_widget(viewer, ScoreWidget) is score and not workbench.is_built(3)
    dock.hide()
    assert dock.isHidden()
    show_widget(viewer, score)
    assert not dock.isHidden()  # shown again (the test window itself is not on screen)


def test_find_widget_without_any_dock(make_napari_viewer):
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    viewer = make_napari_viewer()
    assert find_widget(viewer, TuneWidget) is None and open_widgets(viewer) == []


def test_layer_changes_reach_the_built_steps(docked, monkeypatch):
    viewer, workbench = docked
    data = workbench.built_steps()[0]
    calls: list = []
    monkeypatch.setattr(data, "reset_choices", lambda *args: calls.append(args))
    viewer.add_image(np.zeros((4, 8, 8), dtype=np.uint8), name="ct")
    assert calls  # napari's hook on the dock widget, forwarded to the tab's step
    calls.clear()
    workbench.reset_choices()
    assert len(calls) == 1  # unbuilt steps are skipped: a step built later reads the layers then


@pytest.mark.slow
def test_workbench_fits_1280x800_without_growing_the_window(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    _process(qtbot)
    size = (window.width(), window.height())
    assert size == (1280, 800)
    _, workbench = viewer.window.add_plugin_dock_widget(PLUGIN, WORKBENCH)
    _process(qtbot)
    for index in range(workbench.tabs.count()):
        workbench.tabs.setCurrentIndex(index)  # builds the step
        _process(qtbot)
        area = workbench.tabs.widget(index)
        assert (window.width(), window.height()) == size, workbench.tabs.tabText(index)
        assert area.viewport().height() >= 500  # a tall step scrolls inside its tab instead
        assert workbench.width() <= 480, (workbench.tabs.tabText(index), workbench.width())
        _expand_sections(workbench.current_step())  # the tallest form: its scroll bar shows and takes width
        _process(qtbot)
        content = area.widget().minimumSizeHint().width()
        assert content <= area.viewport().width(), (workbench.tabs.tabText(index), content)  # nothing clipped
    canvas = viewer.window._qt_viewer.canvas.native
    # the canvas keeps ~45% of the window beside the layer list and the workbench (593 px measured)
    assert canvas.width() >= 0.45 * size[0]
    _wait_warm_up(workbench, qtbot)


def _expand_sections(container) -> None:
    from napari_vesuvius.widgets._sections import Section

    for widget in getattr(container, "_list", []):
        if isinstance(widget, Section):
            widget.expanded = True
        _expand_sections(widget)


def test_demo_gui_opens_the_workbench(qtbot, monkeypatch):
    import napari

    from napari_vesuvius.cli import demo

    monkeypatch.setattr(napari, "run", lambda *args, **kwargs: None)
    viewer = demo.open_gui()
    try:
        docks = dict(viewer.window.dock_widgets)
        plugin_docks = [name for name in docks if PLUGIN in name or WORKBENCH in name]
        assert len(plugin_docks) == 1 and WORKBENCH in plugin_docks[0]
        workbench = docks[plugin_docks[0]]
        assert isinstance(workbench, workbench_module.Workbench)
        assert [layer.name for layer in viewer.layers]  # the synthetic sample is loaded
        _wait_warm_up(workbench, qtbot)
    finally:
        viewer.close()
