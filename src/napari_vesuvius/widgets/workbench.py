"""The workbench: the whole loop (open → predict → tune → score → proofread → train → export) in one dock.

Each step is one of the plugin's dock widgets, shown as a tab inside a vertical scroll area, so the dock
never grows the window beyond the screen: on a 1280×800 window every step's primary controls are visible
without scrolling and its advanced options are collapsed (``_sections.Section``). The steps stay available
one by one from the Plugins menu (the ``*Dock`` classes below), each in its own scroll area as well.

Opening the workbench builds nothing: napari docks and paints it first, then (next event-loop turn) the
shown tab's step is built and the warm-up starts. A step is built when its tab is first shown or when
another dock asks for it (:meth:`Workbench.find_step`, used by ``_docks.find_widget``). Meanwhile the
remaining steps' modules (and matplotlib, for the Score and Train plots) are imported on a worker thread,
so neither opening the workbench nor a first tab switch waits for those imports on the GUI thread. The
worker and step construction never import at the same time (``_IMPORT_LOCK``: two threads importing
a package with circular imports, such as matplotlib, can each see the other's half-made module); a tab
shown while the warm-up runs says "Loading…" and is built when it ends.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._sections import fit_for_dock

if TYPE_CHECKING:
    import napari

#: width the workbench asks for: wide enough for the forms, narrow enough for a 1280 px screen
DOCK_WIDTH = 390

_PACKAGE = "napari_vesuvius.widgets"

#: (tab title, module in ``widgets``, class) in the order of the user's loop
STEPS: tuple[tuple[str, str, str], ...] = (
    ("Data", "data_widget", "DataWidget"),
    ("Predict", "inference_widget", "InferenceWidget"),
    ("Tune", "tune_widget", "TuneWidget"),
    ("Score", "score_widget", "ScoreWidget"),
    ("Proofread", "proofread_widget", "ProofreadWidget"),
    ("Train", "train_widget", "TrainWidget"),
    ("Export", "export_widget", "ExportWidget"),
)

#: imported ahead on a worker thread: what building a step would otherwise import on the GUI thread.
#: matplotlib's Qt backend is left to the GUI thread (it is quick once ``matplotlib.figure`` is loaded,
#: and importing it on a worker stalled the GUI thread for 0.5–0.9 s under Xvfb)
WARM_UP_MODULES = (
    *(f"{_PACKAGE}.{module}" for _, module, _ in STEPS[1:]),
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)


#: held by the warm-up while it imports a module and by the GUI thread while it builds a step (re-entrant:
#: a step's constructor may build another step through ``find_widget``)
_IMPORT_LOCK = threading.RLock()


def _step_class(index: int) -> type:
    _, module, name = STEPS[index]
    return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), name)


def _steps() -> list[tuple[str, type]]:
    """(tab title, widget class) in the order of the user's loop (imports every step)."""
    return [(title, _step_class(index)) for index, (title, _, _) in enumerate(STEPS)]


def _warm_up_job(modules: tuple[str, ...]) -> Generator[Progress, None, None]:
    """Import ``modules`` (on the worker thread); a module that fails to import is left to its step."""
    for done, module in enumerate(modules):
        yield Progress(done, len(modules), module)
        with _IMPORT_LOCK:
            try:
                importlib.import_module(module)
            except Exception:  # the step reports the problem when it is built
                continue
    yield Progress(len(modules), len(modules))


class StepScrollArea(QScrollArea):
    """One step widget in a vertical scroll area; napari sees the step itself (``_magic_widget``).

    A workbench tab starts with a "Loading…" line (``step`` None) and receives its step with
    :meth:`set_step`.
    """

    def __init__(self, step: Any = None) -> None:
        super().__init__()
        self.step: Any = None
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        if step is not None:
            self.set_step(step)
        else:
            placeholder = QLabel("Loading…")
            placeholder.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            self.setWidget(placeholder)

    def set_step(self, step: Any) -> None:
        self.step = step
        self._magic_widget = step  # napari's dock_widgets / inner_widget return the step widget
        fit_for_dock(step.native)  # a long layer name never widens the dock
        self.setWidget(step.native)
        self.setMinimumWidth(min(DOCK_WIDTH, step.native.minimumSizeHint().width() + 20))

    def reset_choices(self, *_: Any) -> None:
        if self.step is not None:
            self.step.reset_choices()


class Workbench(QWidget):
    """All steps of the loop as tabs of one dock (napari calls ``reset_choices`` when layers change)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        super().__init__()
        from napari_vesuvius.widgets._background import TaskRunner

        self.viewer = napari_viewer
        self._persist = persist
        self._built: dict[int, Any] = {}
        self._building: set[int] = set()
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self.tabs.setDocumentMode(True)
        for title, _, _ in STEPS:
            self.tabs.addTab(StepScrollArea(), title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMinimumWidth(DOCK_WIDTH)
        self.tabs.currentChanged.connect(self._tab_shown)
        # housekeeping, not the user's work: kept out of the activity dock; a child, so it stops with us
        self.warm_up = TaskRunner(name="workbench_warm_up", activity=False)
        self.warm_up.native.setParent(self)
        self.warm_up.native.hide()
        self._opened = False
        self._opener = QTimer(self)  # a child: never fires into a deleted workbench
        self._opener.setSingleShot(True)
        self._opener.timeout.connect(self._open)
        self._opener.start(0)

    def _open(self) -> None:
        """After napari has docked the workbench: build the shown tab, then import the others ahead."""
        if self._opened:
            return
        self._opened = True
        self._build(self.tabs.currentIndex())
        self.warm_up.start(
            lambda: _warm_up_job(WARM_UP_MODULES),
            description="Loading the workbench",
            on_finished=lambda: self._tab_shown(self.tabs.currentIndex()),
        )

    @property
    def ready(self) -> bool:
        """Whether the shown tab is built and the warm-up has finished (tests wait for this)."""
        return self._opened and not self.warm_up.running

    def _tab_shown(self, index: int) -> None:
        """Build the shown tab's step, unless the workbench is still opening (then when it is ready)."""
        if self.ready:
            self._build(index)

    def _build(self, index: int) -> Any:
        """The step of tab ``index``, built now if it was not (None while it is being built)."""
        if index < 0 or index in self._building:
            return self._built.get(index)
        if index not in self._built:
            self._building.add(index)
            try:
                with _IMPORT_LOCK:  # waits for the warm-up's current import at most
                    step = _step_class(index)(self.viewer, persist=self._persist)
            finally:
                self._building.discard(index)
            self._built[index] = step
            self.tabs.widget(index).set_step(step)
        return self._built[index]

    def is_built(self, index: int) -> bool:
        return index in self._built

    def built_steps(self) -> list[Any]:
        """The steps built so far, in tab order (no step is built by asking)."""
        return [self._built[index] for index in sorted(self._built)]

    def steps(self) -> list[Any]:
        """Every step widget, in tab order (builds the ones not shown yet)."""
        return [self._build(index) for index in range(len(STEPS))]

    def find_step(self, cls: type) -> Any:
        """The step of type ``cls`` (built now if it is a step class not built yet), or None."""
        for step in self.built_steps():
            if isinstance(step, cls):
                return step
        # compared by name: asking for one step does not import the others' modules
        wanted = f"{cls.__module__}.{cls.__qualname__}"
        for index, (_, module, name) in enumerate(STEPS):
            if index not in self._built and f"{_PACKAGE}.{module}.{name}" == wanted:
                return self._build(index)
        return None

    def step(self, cls: type) -> Any:
        """The step widget of type ``cls`` (built on demand)."""
        step = self.find_step(cls)
        if step is None:
            raise KeyError(f"no step of type {cls.__name__} in the workbench")
        return step

    def show_step(self, step: Any) -> None:
        """Select the tab of ``step`` (a widget or a class)."""
        if isinstance(step, type):
            step = self.step(step)
        index = next(index for index, built in self._built.items() if built is step)
        self.tabs.setCurrentIndex(index)

    def current_step(self) -> Any:
        return self._build(self.tabs.currentIndex())

    def reset_choices(self, *_: Any) -> None:
        """napari's layer-change hook, forwarded to the built steps (a step built later starts current)."""
        for step in self.built_steps():
            step.reset_choices()


class StepDock(StepScrollArea):
    """One step alone in its own dock (Plugins menu), in a scroll area; napari builds it with the viewer.

    A class (not a factory function): napari passes the viewer to a widget contribution's ``__init__``.
    """

    #: the step's index in :data:`STEPS`
    index = 0

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        with _IMPORT_LOCK:  # a workbench's warm-up may be importing
            step = _step_class(self.index)(napari_viewer)
        super().__init__(step)


class DataDock(StepDock):
    """The Data step alone (Plugins menu)."""

    index = 0


class InferenceDock(StepDock):
    """The Inference step alone (Plugins menu)."""

    index = 1


class TuneDock(StepDock):
    """The Tune step alone (Plugins menu)."""

    index = 2


class ScoreDock(StepDock):
    """The Score step alone (Plugins menu)."""

    index = 3


class ProofreadDock(StepDock):
    """The Proofread step alone (Plugins menu)."""

    index = 4


class TrainDock(StepDock):
    """The Train step alone (Plugins menu)."""

    index = 5


class ExportDock(StepDock):
    """The Export step alone (Plugins menu)."""

    index = 6
