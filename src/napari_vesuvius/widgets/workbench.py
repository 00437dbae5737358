"""The workbench: the whole loop (open → predict → tune → score → proofread → train → export) in one dock.

Each step is one of the plugin's dock widgets, shown as a tab inside a vertical scroll area, so the dock
never grows the window beyond the screen: on a 1280×800 window every step's primary controls are visible
without scrolling and its advanced options are collapsed (``_sections.Section``). The steps stay available
one by one from the Plugins menu (``*_dock`` factories below), each in its own scroll area as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari

#: width the workbench asks for: wide enough for the forms, narrow enough for a 1280 px screen
DOCK_WIDTH = 390


def _steps() -> list[tuple[str, type]]:
    """(tab title, widget class) in the order of the user's loop."""
    from napari_vesuvius.widgets.data_widget import DataWidget
    from napari_vesuvius.widgets.export_widget import ExportWidget
    from napari_vesuvius.widgets.inference_widget import InferenceWidget
    from napari_vesuvius.widgets.proofread_widget import ProofreadWidget
    from napari_vesuvius.widgets.score_widget import ScoreWidget
    from napari_vesuvius.widgets.train_widget import TrainWidget
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    return [
        ("Data", DataWidget),
        ("Predict", InferenceWidget),
        ("Tune", TuneWidget),
        ("Score", ScoreWidget),
        ("Proofread", ProofreadWidget),
        ("Train", TrainWidget),
        ("Export", ExportWidget),
    ]


class StepScrollArea(QScrollArea):
    """One step widget in a vertical scroll area; napari sees the step itself (``_magic_widget``)."""

    def __init__(self, step: Any) -> None:
        super().__init__()
        self.step = step
        self._magic_widget = step  # napari's dock_widgets / inner_widget return the step widget
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setWidget(step.native)
        self.setMinimumWidth(min(DOCK_WIDTH, step.native.minimumSizeHint().width() + 20))

    def reset_choices(self, *_: Any) -> None:
        self.step.reset_choices()


class Workbench(QWidget):
    """All steps of the loop as tabs of one dock (napari calls ``reset_choices`` when layers change)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setDocumentMode(True)
        self._steps: list[Any] = []
        for title, cls in _steps():
            step = cls(napari_viewer, persist=persist)
            self._steps.append(step)
            self.tabs.addTab(StepScrollArea(step), title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(DOCK_WIDTH)

    def steps(self) -> list[Any]:
        """The step widgets, in tab order."""
        return list(self._steps)

    def step(self, cls: type) -> Any:
        """The step widget of type ``cls``."""
        return next(step for step in self._steps if isinstance(step, cls))

    def show_step(self, step: Any) -> None:
        """Select the tab of ``step`` (a widget or a class)."""
        if isinstance(step, type):
            step = self.step(step)
        self.tabs.setCurrentIndex(self._steps.index(step))

    def current_step(self) -> Any:
        return self._steps[self.tabs.currentIndex()]

    def reset_choices(self, *_: Any) -> None:
        for step in self._steps:
            step.reset_choices()


def _single(index: int) -> Any:
    def factory(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
        cls = _steps()[index][1]
        return StepScrollArea(cls(napari_viewer))

    factory.__name__ = f"{_steps.__name__}_{index}"
    return factory


def data_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Data step alone, in a scroll area (Plugins menu)."""
    return _single(0)(napari_viewer)


def inference_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Inference step alone, in a scroll area (Plugins menu)."""
    return _single(1)(napari_viewer)


def tune_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Tune step alone, in a scroll area (Plugins menu)."""
    return _single(2)(napari_viewer)


def score_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Score step alone, in a scroll area (Plugins menu)."""
    return _single(3)(napari_viewer)


def proofread_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Proofread step alone, in a scroll area (Plugins menu)."""
    return _single(4)(napari_viewer)


def train_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Train step alone, in a scroll area (Plugins menu)."""
    return _single(5)(napari_viewer)


def export_dock(napari_viewer: napari.viewer.Viewer) -> StepScrollArea:
    """The Export step alone, in a scroll area (Plugins menu)."""
    return _single(6)(napari_viewer)
