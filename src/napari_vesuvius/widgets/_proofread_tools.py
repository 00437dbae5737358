"""Component tools of the Proofread dock: the Tune dock's components panel plus split and bridge removal.

The components panel (:class:`~._components_panel.ComponentsPanel`: show, click to select, delete,
keep) is reused as is, pointed at the proofread layer; its delete/keep are wrapped so they can be
undone. *Split component* raises the threshold inside the selected component until it falls apart
(:func:`~napari_vesuvius.core.proofread.tools.split_component`); *Remove diagonal bridges* cuts
sheets that touch only along edges or corners
(:func:`~napari_vesuvius.core.proofread.tools.remove_diagonal_bridges`). Every tool changes surface
voxels only and can be undone once (*Undo last tool*); painting has napari's own undo (Ctrl+Z).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, PushButton, SpinBox

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._components_panel import ComponentsPanel
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._proofread_layers import run_while_visible
from napari_vesuvius.widgets._sections import compact, row, status_label


class ProofreadTools(Container):
    """Components panel (show / pick / delete / keep) + split + diagonal bridges + undo."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.components = ComponentsPanel(owner.viewer)
        self.split_threshold = FloatSpinBox(
            label="split threshold", min=0.0, max=1.0, step=0.01, value=0.0, tooltip="0 = find the lowest"
        )
        self.min_part = SpinBox(label="min part voxels", min=1, max=10_000_000, value=50)
        self.split_button = PushButton(text="Split component")
        self.min_sheet = SpinBox(label="min sheet voxels", min=1, max=10_000_000, value=100)
        self.bridges_button = PushButton(
            text="Remove diagonal bridges", tooltip="voxels joining two sheets only along edges or corners"
        )
        self.undo_button = PushButton(text="Undo last tool", enabled=False)
        self.message = status_label()
        self.task = TaskRunner(name="proofread_tools_task")
        settings = compact(Container(widgets=[self.split_threshold, self.min_part, self.min_sheet], label=""))
        super().__init__(
            widgets=[
                self.components, settings, row(self.split_button, self.bridges_button), row(self.undo_button),
                self.message, self.task,
            ],
            labels=False,
            label="",
        )  # fmt: skip
        compact(self)
        self.task.visible = False
        self._undo: np.ndarray | None = None
        for button, keep in ((self.components.delete_button, False), (self.components.keep_button, True)):
            button.changed.disconnect()
            button.changed.connect(lambda *_, keep=keep: self.delete_or_keep(keep))
        self.split_button.changed.connect(self.split)
        self.bridges_button.changed.connect(self.remove_bridges)
        self.undo_button.changed.connect(self.undo)

    def set_layer(self, layer: Any) -> None:
        """Point the components panel at the (new) proofread layer."""
        self.components.reset_choices()
        self.components.mask.value = layer
        self.components.components = None
        self._undo = None
        self.undo_button.enabled = False

    def _snapshot(self) -> np.ndarray | None:
        if self.owner.layer is None:
            self.message.value = "accept a prediction first"
            return None
        return np.array(self.owner.layer.data, copy=True)

    def delete_or_keep(self, keep: bool) -> Any:
        """The components panel's delete / keep (a background job), undoable once it has landed."""
        before = self._snapshot()
        if before is None:
            return None
        layer = self.owner.layer

        def landed(*_: Any) -> None:  # the next replacement of the labels: the panel's edit, if it still runs
            layer.events.data.disconnect(landed)
            if self.components.task.running:
                self._remember(before)

        worker = self.components.edit(keep=keep)
        if worker is not None:  # its result reaches the GUI thread only after this returns: no race
            layer.events.data.connect(landed)
        return worker

    def _remember(self, before: np.ndarray) -> None:
        self._undo = before
        self.undo_button.enabled = True

    def _run(self, compute: Callable[[np.ndarray], Any], description: str, done: Callable[[Any], str]) -> Any:
        labels = self._snapshot()
        if labels is None or self.task.running:
            return None

        def job() -> Generator[Progress, None, Any]:
            yield Progress(0, 1, description)
            return compute(labels)

        def finished(result: Any) -> None:
            self._remember(labels)
            self.owner.layer.data = result.labels
            self.message.value = done(result)
            if self.components.components is not None:
                self.components.show_components()

        def failed(error: BaseException) -> None:
            self.message.value = str(error)

        return run_while_visible(self.task, job, description=description, on_result=finished, on_error=failed)

    def split(self) -> Any:
        """Split the selected component by raising the threshold inside it (background job)."""
        from napari_vesuvius.core.proofread.tools import split_component

        session, components = self.owner.session, self.components.components
        selected = int(self.components.selected.value)
        if session is None or components is None or selected <= 0:
            self.message.value = "Show components and click the component to split"
            return None
        if components.shape != np.shape(self.owner.layer.data):
            self.message.value = "the components are out of date: Show components again"
            return None
        if session.probability is None:
            self.message.value = "splitting needs the probability: accept from a probability layer"
            return None
        threshold = float(self.split_threshold.value) or None
        min_part, probability = int(self.min_part.value), session.probability

        def compute(labels: np.ndarray) -> Any:
            return split_component(
                labels, components, selected, probability, threshold=threshold, min_part=min_part
            )

        return self._run(
            compute,
            "split component",
            lambda r: (
                f"component {selected}: threshold {r.threshold:.3f} → {r.parts} parts, "
                f"{count(r.removed)} voxels cut"
            ),
        )

    def remove_bridges(self) -> Any:
        """Remove voxels that only join two sheets diagonally (background job)."""
        from napari_vesuvius.core.proofread.tools import remove_diagonal_bridges

        min_sheet = int(self.min_sheet.value)
        return self._run(
            lambda labels: remove_diagonal_bridges(labels, min_sheet=min_sheet),
            "remove diagonal bridges",
            lambda r: (
                f"{count(r.removed)} voxels removed; "
                f"components {count(r.components_before)} → {count(r.components_after)}"
            ),
        )

    def undo(self) -> None:
        """Restore the labels as they were before the last tool."""
        if self._undo is None or self.owner.layer is None:
            return
        if self._undo.shape == np.shape(self.owner.layer.data):
            self.owner.layer.data = self._undo
            self.message.value = "last tool undone"
        self._undo = None
        self.undo_button.enabled = False
