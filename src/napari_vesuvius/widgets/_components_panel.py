"""Components view of the Tune dock: colour 26-connected components, list them by size, delete or keep.

Components are labelled in the background (:func:`core.postprocess.label_components`, label 1 = the
largest). Click a component in the viewer (or a row of the table) to select it, then delete it or keep
only it; the edit is computed in the background, the mask layer is updated in place and the
components are relabelled. Voxel counts read as integers with thousands separators.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, SpinBox, Table

from napari_vesuvius.core.postprocess import (
    keep_components,
    label_components,
    labelling_without_gil,
    remove_components,
)
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._layers import LABELS_OPACITY, layer_array, place_like, placement
from napari_vesuvius.widgets._sections import compact, row, status_label

if TYPE_CHECKING:
    import napari

#: rows shown in the size table (the largest components)
TABLE_ROWS = 200
TABLE_COLUMNS = ("component", "voxels")


class ComponentsPanel(Container):
    """Label, list, pick, delete and keep connected components of a mask layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        self.viewer = napari_viewer
        self.mask = ComboBox(label="mask", choices=self._mask_choices, nullable=True)
        self.label_button = PushButton(text="Show components")
        self.selected = SpinBox(label="component", min=0, max=10_000_000, value=0)
        self.delete_button = PushButton(text="Delete component")
        self.keep_button = PushButton(text="Keep only component")
        self.table = Table(value={"data": [], "index": [], "columns": list(TABLE_COLUMNS)})
        self.summary = status_label(name="summary")
        self.task = TaskRunner(name="components_task")
        super().__init__(
            widgets=[
                status_label("26-connected components of a mask, largest first"),
                self.mask,
                self.label_button,
                self.selected,
                row(self.delete_button, self.keep_button),
                self.summary,
                self.task,
                self.table,
            ],
            label="",
        )
        compact(self)
        self.table.native.setMinimumHeight(120)
        self.components: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        self.label_button.changed.connect(self.show_components)
        self.delete_button.changed.connect(lambda: self.edit(keep=False))
        self.keep_button.changed.connect(lambda: self.edit(keep=True))
        self.table.native.itemSelectionChanged.connect(self._table_selection)

    def _mask_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        viewer = getattr(self, "viewer", None)
        if viewer is None:
            return []
        return [
            (layer.name, layer)
            for layer in viewer.layers
            if isinstance(layer, Labels) and not layer.name.endswith((" components", " preview"))
        ]

    @property
    def layer_name(self) -> str:
        return f"{self.mask.value.name} components"

    def show_components(self) -> Any:
        """Label the chosen mask's components in the background and show them coloured."""
        if self.mask.value is None:
            self.summary.value = "choose a mask layer"
            return None
        data = layer_array(self.mask.value)

        def job() -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
            yield Progress(0, 1, "labelling components")
            with labelling_without_gil():  # cc3d would hold the GIL and freeze the GUI
                result = label_components(np.asarray(data) == 1)
            yield Progress(1, 1, "labelled")
            return result

        return self.task.start(job, description="components", on_result=self._show)

    def _show(self, result: tuple[np.ndarray, np.ndarray]) -> None:
        self.components, self.sizes = result
        layer = self.mask.value
        name = self.layer_name
        if name in self.viewer.layers:
            place_like(self.viewer.layers[name], layer)
            self.viewer.layers[name].data = self.components
        else:
            components_layer = self.viewer.add_labels(
                self.components,
                name=name,
                opacity=max(LABELS_OPACITY, 0.7),
                **placement(layer),
            )
            components_layer.mouse_drag_callbacks.append(self._pick)
        # voxel counts as text with thousands separators (a Table shows big numbers as 1.579e+09)
        rows = [[index + 1, count(size)] for index, size in enumerate(self.sizes[:TABLE_ROWS])]
        self.table.value = {"data": rows, "index": list(range(len(rows))), "columns": list(TABLE_COLUMNS)}
        total = int(self.sizes.sum()) if self.sizes.size else 0
        shown = "" if len(self.sizes) <= TABLE_ROWS else f"; the table lists the largest {TABLE_ROWS}"
        self.summary.value = (
            f"{count(len(self.sizes))} components, {count(total)} voxels{shown} (click one to select it)"
        )

    def _pick(self, layer: Any, event: Any) -> None:
        value = layer.get_value(event.position, world=True)
        if value:
            self.selected.value = int(value)
            layer.selected_label = int(value)

    def _table_selection(self) -> None:
        rows = sorted({index.row() for index in self.table.native.selectedIndexes()})
        if rows:
            self.selected.value = int(self.table.data[rows[0]][0])

    def edit(self, keep: bool) -> Any:
        """Delete the selected component from the mask, or keep only it; then relabel."""
        if self.components is None or self.mask.value is None or self.selected.value <= 0:
            self.summary.value = "show components and select one first"
            return None
        if self.task.running:
            self.summary.value = "wait for the components to be labelled"
            return None
        layer = self.mask.value
        if getattr(layer, "multiscale", False):
            self.summary.value = f"{layer.name!r} is multiscale: edit a single-resolution mask"
            return None
        source = layer_array(layer)
        components = self.components
        ids = [int(self.selected.value)]

        def job() -> Generator[Progress, None, np.ndarray]:
            yield Progress(0, 2, "editing the mask")
            data = np.array(source, copy=True)
            mask = data == 1
            edited = (
                keep_components(mask, components, ids) if keep else remove_components(mask, components, ids)
            )
            data[mask & ~edited] = 0
            return data

        done: list[bool] = []

        def edited(data: np.ndarray) -> None:
            layer.data = data
            self.selected.value = 0
            done.append(True)

        def finished() -> None:  # relabel once this job has released the runner
            if done:
                self.show_components()

        verb = "keep only" if keep else "delete"
        return self.task.start(
            job, description=f"{verb} component {ids[0]}", on_result=edited, on_finished=finished
        )
