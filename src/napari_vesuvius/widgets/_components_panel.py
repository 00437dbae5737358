"""Components view of the Tune dock: colour 26-connected components, list them by size, delete or keep.

Components are labelled in the background (:func:`core.postprocess.label_components`, label 1 = the
largest). Click a component in the viewer (or a row of the table) to select it, then delete it or keep
only it; the mask layer is edited in place and the components are relabelled.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, Table

from napari_vesuvius.core.postprocess import keep_components, label_components, remove_components
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._layers import layer_array

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
        self.summary = Label(value="")
        self.task = TaskRunner(name="components_task")
        super().__init__(
            widgets=[
                Label(value="<b>Connected components</b> (26-connected)"),
                self.mask,
                self.label_button,
                self.selected,
                Container(widgets=[self.delete_button, self.keep_button], layout="horizontal", labels=False),
                self.summary,
                self.table,
                self.task,
            ],
            label="",
        )
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
        mask = np.asarray(layer_array(self.mask.value)) == 1

        def job() -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
            yield Progress(0, 1, "labelling components")
            result = label_components(mask)
            yield Progress(1, 1, "labelled")
            return result

        return self.task.start(job, description="components", on_result=self._show)

    def _show(self, result: tuple[np.ndarray, np.ndarray]) -> None:
        self.components, self.sizes = result
        layer = self.mask.value
        name = self.layer_name
        if name in self.viewer.layers:
            self.viewer.layers[name].data = self.components
        else:
            components_layer = self.viewer.add_labels(
                self.components, name=name, scale=layer.scale, translate=layer.translate, opacity=0.8
            )
            components_layer.mouse_drag_callbacks.append(self._pick)
        rows = [[index + 1, int(size)] for index, size in enumerate(self.sizes[:TABLE_ROWS])]
        self.table.value = {"data": rows, "index": list(range(len(rows))), "columns": list(TABLE_COLUMNS)}
        total = int(self.sizes.sum()) if self.sizes.size else 0
        self.summary.value = f"{len(self.sizes)} components, {total} voxels (click one to select it)"

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
        layer = self.mask.value
        mask = np.asarray(layer_array(layer)) == 1
        ids = [int(self.selected.value)]
        edited = (
            keep_components(mask, self.components, ids)
            if keep
            else remove_components(mask, self.components, ids)
        )
        data = np.asarray(layer.data).copy()
        data[mask & ~edited] = 0
        layer.data = data
        self.selected.value = 0
        return self.show_components()
