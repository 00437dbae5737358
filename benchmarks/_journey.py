"""The scripted user journey through the workbench at 1280×800, shared by the journey test, the
screenshot script (``scripts/make_screenshots.py``) and the GUI benchmark (``benchmarks/bench_gui.py``).

open a dataset → predict → tune → score → proofread (accept, paint a stroke, save) → retrain briefly →
export. :class:`Journey` drives the real step widgets of a docked :class:`Workbench` the way a user's
clicks do (the buttons' handlers), waiting with the Qt event loop running. Every call into a step
widget's API sits in the *adapter* section below, so a renamed control is fixed in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._journey_support import (
    STEP_TIMEOUT_S,
    JourneyInputs,
    idle,
    make_inputs,
    process_events,
    wait_until,
)

__all__ = [
    "STEPS", "STEP_TIMEOUT_S", "WINDOW", "Journey", "JourneyInputs", "make_inputs", "process_events",
    "run_step", "show_results", "wait_until",
]  # fmt: skip

WINDOW = (1280, 800)


# -- the journey -----------------------------------------------------------------------------------
class Journey:
    """Drives the workbench's steps like a user; each method returns when its action has finished."""

    def __init__(self, viewer: Any, inputs: JourneyInputs) -> None:
        self.viewer = viewer
        self.inputs = inputs
        self.workbench: Any = None
        self.image: Any = None
        self.labels: Any = None
        self.probability: Any = None
        self.mask: Any = None
        self.proofread_layer: Any = None
        self.submission = inputs.workdir / "submission.zip"

    # -- window ---------------------------------------------------------------------------------
    @property
    def qt_window(self) -> Any:
        return self.viewer.window._qt_window

    def open_workbench(self) -> Any:
        """Resize the window to 1280×800 and dock the workbench on the right, next to the layer list."""
        from napari_vesuvius.widgets.workbench import Workbench

        self.qt_window.resize(*WINDOW)
        self.workbench = Workbench(self.viewer, persist=False)
        self.viewer.window.add_dock_widget(self.workbench, name="Vesuvius", area="right")
        process_events(50)
        return self.workbench

    def window_size(self) -> tuple[int, int]:
        return self.qt_window.width(), self.qt_window.height()

    def layer_list_visible(self) -> bool:
        return bool(self.viewer.window._qt_viewer.dockLayerList.isVisible())

    def _index(self, name: str) -> int:
        tabs = self.workbench.tabs
        return [tabs.tabText(i) for i in range(tabs.count())].index(name)

    def step(self, name: str) -> Any:
        """The step widget of tab ``name`` (Data, Predict, Tune, Score, Proofread, Train, Export)."""
        area = self.workbench.tabs.widget(self._index(name))
        return area.step if area.step is not None else self.show(name)

    def show(self, name: str) -> Any:
        """Select tab ``name`` (as a click on it does), scrolled to the top; returns its step widget."""
        index = self._index(name)
        self.workbench.tabs.setCurrentIndex(index)
        area = self.workbench.tabs.widget(index)
        process_events(30)
        area.verticalScrollBar().setValue(0)
        return area.step

    def scroll_area(self, step: Any) -> Any:
        tabs = self.workbench.tabs
        return next(tabs.widget(i) for i in range(tabs.count()) if tabs.widget(i).step is step)

    def controls_out_of_view(self, name: str) -> list[str]:
        """The step's primary controls that are hidden or not wholly inside its tab's viewport at the
        top scroll position (empty: all visible without scrolling)."""
        from qtpy.QtCore import QPoint, QRect

        step = self.show(name)
        viewport = self.scroll_area(step).viewport()
        problems = []
        if not callable(getattr(step, "primary_controls", None)):
            return [f"{name}: {type(step).__name__} has no primary_controls()"]
        for control in primary_controls(step):
            native = getattr(control, "native", control)
            label = (
                getattr(control, "label", "") or getattr(control, "text", "") or getattr(control, "name", "")
            )
            what = f"{name}: {type(control).__name__} {label!r}"
            if not native.isVisible():
                problems.append(f"{what} is hidden")
                continue
            rect = QRect(native.mapTo(viewport, QPoint(0, 0)), native.size())
            if not viewport.rect().contains(rect):
                problems.append(
                    f"{what} spans x {rect.left()}..{rect.right()}, y {rect.top()}..{rect.bottom()}, "
                    f"outside the viewport {viewport.width()}×{viewport.height()}"
                )
        return problems

    def reveal(self, name: str, widget: Any) -> None:
        """Expand the collapsed sections holding ``widget`` on tab ``name`` and scroll it into view."""
        from magicgui.widgets import Container

        from napari_vesuvius.widgets._sections import Section

        step = self.show(name)
        native = getattr(widget, "native", widget)
        pending = [step]
        while pending:
            container = pending.pop()
            for child in container:
                if isinstance(child, Section) and child.body.native.isAncestorOf(native):
                    child.expanded = True
                if isinstance(child, Container):
                    pending.append(child)
        process_events(50)
        self.scroll_area(step).ensureWidgetVisible(native)
        process_events(50)

    def screenshot(self, path: Path) -> Path:
        process_events(100)
        self.viewer.window.screenshot(str(path), canvas_only=False)
        return path

    def _new_layer(self, before: list[Any], kind: str, contains: str = "") -> Any:
        for layer in self.viewer.layers:
            if layer not in before and type(layer).__name__ == kind and contains in layer.name:
                return layer
        return None

    # -- adapter: every call into the step widgets' API is below this line ----------------------
    def open_dataset(self) -> None:
        """Data: open the dataset folder and show its first training volume (image + labels)."""
        data = self.show("Data")
        data.path.value = self.inputs.root
        data.open_path(self.inputs.root)
        wait_until(lambda: idle(data) and data.dataset is not None, what="the dataset to open")
        self.show_volume(self.inputs.train_ids[0])

    def show_volume(self, volume_id: str) -> None:
        data = self.step("Data")
        if data.volume_id.value != volume_id:
            data.volume_id.value = volume_id
        wait_until(lambda: idle(data) and self._shown_id() == volume_id, what=f"volume {volume_id}")
        self._find_data_layers()

    def next_volume(self, offset: int = +1) -> str:
        """Data: ◀ previous (-1) / next ▶ (+1); returns the id shown once its layers are updated."""
        data = self.step("Data")
        choices = list(data.volume_id.choices)
        target = choices[(choices.index(data.volume_id.value) + offset) % len(choices)]
        data.step(offset)
        wait_until(lambda: idle(data) and self._shown_id() == target, what=f"volume {target}")
        self._find_data_layers()
        return target

    def _shown_id(self) -> str | None:
        from napari.layers import Image

        for layer in self.viewer.layers:
            if isinstance(layer, Image) and "vesuvius_id" in layer.metadata:
                return str(layer.metadata["vesuvius_id"])
        return None

    def _find_data_layers(self) -> None:
        from napari.layers import Image, Labels

        for layer in self.viewer.layers:
            if isinstance(layer, Image) and "vesuvius_id" in layer.metadata:
                self.image = layer
            if isinstance(layer, Labels) and "vesuvius_id" in layer.metadata:
                self.labels = layer

    def predict(self) -> Any:
        """Predict: the image with the tiny checkpoint on the CPU; returns the probability layer."""
        predict = self.show("Predict")
        predict.reset_choices()
        predict.image.value = self.image
        predict.models.model.value = self.inputs.checkpoint
        predict.device.value = "cpu"
        before = list(self.viewer.layers)
        if predict.run() is None:
            raise RuntimeError(f"Predict did not start: {predict.message.value}")
        wait_until(lambda: idle(predict), what="inference")
        self.probability = (
            self._new_layer(before, "Image", "probability")
            or self.viewer.layers[f"{self.image.name} probability"]
        )
        return self.probability

    def tune_select(self) -> Any:
        """Tune: choose the probability and CT layers (the preview appears)."""
        tune = self.show("Tune")
        tune.reset_choices()
        tune.probability.value = self.probability
        tune.ct.value = self.image
        tune.live_preview.value = True
        return tune

    def tune_slider(self) -> Any:
        """Tune: the slider of the current threshold mode (the one a user drags)."""
        tune = self.step("Tune")
        mode = tune.threshold_mode.value
        return {"absolute": tune.threshold, "percentile": tune.percentile_fraction}.get(mode, tune.t_low)

    def preview_layer(self) -> Any:
        tune = self.step("Tune")
        name = tune.preview_name
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    def tune_apply(self) -> Any:
        """Tune: Apply (full volume) → the mask layer; returns it."""
        tune = self.show("Tune")
        before = list(self.viewer.layers)
        tune.apply()
        wait_until(lambda: idle(tune), what="Apply")
        self.mask = (
            self._new_layer(before, "Labels", "mask") or self.viewer.layers[f"{self.probability.name} mask"]
        )
        return self.mask

    def score(self) -> float:
        """Score: the mask against the volume's labels; returns the score."""
        score = self.show("Score")
        score.reset_choices()
        score.volumes.value = score.volumes.choices[0]  # the current layers
        score.mask.value = self.mask
        score.labels_layer.value = self.labels
        if score.score() is None:
            raise RuntimeError(f"Score did not start: {score.message.value}")
        wait_until(lambda: idle(score), what="scoring")
        if score.last_score is None:
            raise RuntimeError(f"Score failed: {score.message.value}")
        return float(score.last_score.score)

    def proofread_accept(self) -> Any:
        """Proofread: accept the prediction as labels (keeping the volume's ignore regions)."""
        proofread = self.show("Proofread")
        proofread.reset_choices()
        proofread.image.value = self.image
        proofread.prediction.value = self.probability
        proofread.existing.value = self.labels
        proofread.autosave_minutes.value = 0.0
        if proofread.accept() is None:
            raise RuntimeError(f"Accept did not start: {proofread.status.value}")
        wait_until(lambda: idle(proofread) and proofread.layer is not None, what="accept")
        self.proofread_layer = proofread.layer
        return self.proofread_layer

    def proofread_paint(self) -> int:
        """Paint a short surface stroke (label 1) on the proofread layer; returns voxels changed."""
        layer = self.proofread_layer
        before = np.asarray(layer.data).copy()
        z = int(self.viewer.dims.current_step[0])
        z = min(max(z, 0), before.shape[0] - 1)
        layer.selected_label, layer.brush_size = 1, 3
        n = before.shape[1]
        for y in range(n // 4, 3 * n // 4, 2):
            layer.paint((z, y, n // 2), 1)
        return int(np.count_nonzero(np.asarray(layer.data) != before))

    def proofread_save(self) -> Path:
        """Save version; returns the version file written."""
        from napari_vesuvius.core.proofread.naming import version_path

        proofread = self.show("Proofread")
        proofread.save()
        wait_until(lambda: idle(proofread) and not proofread.dirty, what="save version")
        target = Path(proofread.target.value)
        versions = [version_path(target, i) for i in range(1, 100)]
        return max((v for v in versions if v.is_file()), key=lambda v: v.stat().st_mtime)

    def retrain_start(self, epochs: int = 1, iterations: int = 2) -> Any:
        """Retrain (Proofread): fine-tune briefly on the saved correction; returns once it runs."""
        proofread = self.show("Proofread")
        retrain = proofread.retrain
        retrain.model.value = self.inputs.checkpoint
        retrain.runs_folder.value = self.inputs.workdir / "runs"
        retrain.epochs.value, retrain.iterations.value, retrain.batch_size.value = epochs, iterations, 1
        retrain.device.value, retrain.threads.value = "cpu", 1
        retrain.retrain()
        wait_until(lambda: retrain.running or retrain.process is not None, what="the fine-tuning process")
        return retrain

    def retrain_finish(self) -> Any:
        """Wait for the fine-tuning to end and the new model's probability layer to appear."""
        retrain = self.step("Proofread").retrain
        wait_until(
            lambda: not retrain.running and idle(retrain) and retrain.new_layer is not None,
            what="fine-tuning and the new model's prediction",
        )
        return retrain.new_layer

    def stop_training(self) -> None:
        """Never leave a training process behind (tests and benchmarks call this on the way out)."""
        if self.workbench is None:
            return
        retrain = self.step("Proofread").retrain
        process = retrain.process
        if process is not None and process.running:
            process.kill()
            process.wait(30)
        retrain.timer.stop()

    def export(self) -> Path:
        """Export: the dataset's test volumes with the tiny model and Tune's clean-up → submission.zip."""
        export = self.show("Export")
        export.data.value = self.inputs.root
        export.models.model.value = self.inputs.checkpoint
        export.device.value = "cpu"
        export.output.value = self.submission
        if export.run() is None:
            raise RuntimeError(f"Export did not start: {export.message.value}")
        wait_until(lambda: idle(export), what="export")
        if export.last_summary is None:
            raise RuntimeError(f"Export failed: {export.message.value}")
        return self.submission


def primary_controls(step: Any) -> list[Any]:
    """The controls of the step's main action (the step widgets' ``primary_controls`` contract)."""
    return list(step.primary_controls())


#: (tab, what the journey does there) in the user's order; ``run_step`` performs each
STEPS: list[tuple[str, str]] = [
    ("Data", "open the dataset"),
    ("Predict", "predict the first training volume"),
    ("Tune", "move a threshold slider, Apply"),
    ("Score", "score the mask against the labels"),
    ("Proofread", "accept, paint a stroke, save a version"),
    ("Retrain", "fine-tune 1 epoch of 2 iterations"),
    ("Export", "write submission.zip"),
]


def show_results(journey: Journey, name: str) -> None:
    """Before a screenshot of step ``name``: bring its results into view (adapter)."""
    if name == "Retrain":
        journey.reveal("Proofread", journey.step("Proofread").retrain)


def run_step(journey: Journey, name: str) -> str:
    """Perform journey step ``name``; returns the title of the tab to look at afterwards."""
    if name == "Data":
        journey.open_dataset()
        return "Data"
    if name == "Predict":
        journey.predict()
        return "Predict"
    if name == "Tune":
        journey.tune_select()
        slider = journey.tune_slider()
        slider.value = round(min(slider.max, slider.value + 5 * slider.step), 4)
        wait_until(lambda: journey.preview_layer() is not None, what="the preview")
        journey.tune_apply()
        return "Tune"
    if name == "Score":
        journey.score()
        return "Score"
    if name == "Proofread":
        journey.proofread_accept()
        journey.proofread_paint()
        journey.proofread_save()
        return "Proofread"
    if name == "Retrain":
        journey.retrain_start()
        journey.retrain_finish()
        return "Proofread"
    if name == "Export":
        journey.export()
        return "Export"
    raise KeyError(name)
