"""Data dock widget: open a volume or a challenge dataset folder and browse its volumes by id."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, TextEdit

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._settings import WidgetSettings

if TYPE_CHECKING:
    import napari


class DataWidget(Container):
    """Open a file or dataset folder, step through ids, show image + labels, describe the volume."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        self.path = FileEdit(
            label="path", mode="d", tooltip="a .tif/.zarr volume or a challenge dataset folder"
        )
        self.open_file_button = PushButton(text="Open file…")
        self.open_button = PushButton(text="Open")
        # choices come from a callable: napari calls reset_choices() on docked widgets whenever layers change
        self.volume_id = ComboBox(
            label="volume id", choices=self._id_choices, tooltip="volumes of the open dataset folder"
        )
        self.previous_button = PushButton(text="◀ previous")
        self.next_button = PushButton(text="next ▶")
        self.show_ignore = PushButton(text="hide ignore (2)")
        self.info = TextEdit(value="", label="info")
        self.info.native.setReadOnly(True)
        self.count_button = PushButton(text="Count label values")
        self.message = Label(value="")
        self.task = TaskRunner(name="data_task")
        browse = Container(
            widgets=[self.previous_button, self.next_button], layout="horizontal", labels=False
        )
        super().__init__(
            widgets=[
                self.path,
                Container(
                    widgets=[self.open_button, self.open_file_button], layout="horizontal", labels=False
                ),
                self.volume_id,
                browse,
                self.show_ignore,
                self.info,
                self.count_button,
                self.message,
                self.task,
            ]
        )
        self.dataset: Any = None
        self._dataset_layers: list[Any] = []
        self._ignore_visible = True
        self.settings = WidgetSettings("data", enabled=persist)
        self.settings.bind(self, ["path"])

        self.open_button.changed.connect(lambda: self.open_path(self.path.value))
        self.open_file_button.changed.connect(self._choose_file)
        self.volume_id.changed.connect(self._on_id_changed)
        self.previous_button.changed.connect(lambda: self.step(-1))
        self.next_button.changed.connect(lambda: self.step(+1))
        self.show_ignore.changed.connect(self.toggle_ignore)
        self.count_button.changed.connect(self.count_label_values)

    # -- opening ---------------------------------------------------------------------------------
    def _choose_file(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        filename, _ = QFileDialog.getOpenFileName(
            self.native, "Open volume", str(self.path.value or ""), "Volumes (*.tif *.tiff);;All files (*)"
        )
        if filename:
            self.path.value = filename
            self.open_path(filename)

    def open_path(self, path: str | Path) -> None:
        """Open a dataset folder (browse by id) or a single volume (TIFF / zarr / OME-Zarr)."""
        from napari_vesuvius.core.dataset import ChallengeDataset, is_dataset_folder
        from napari_vesuvius.core.errors import VesuviusError

        path = Path(path)
        try:
            if path.is_dir() and is_dataset_folder(path):
                self.dataset = ChallengeDataset.open(path)
                ids = self._id_choices()
                self.volume_id.reset_choices()
                self.message.value = (
                    f"dataset: {len(self.dataset.train_ids)} train, {len(self.dataset.test_ids)} test"
                )
                if ids:
                    if self.volume_id.value == ids[0]:
                        self.show_volume(ids[0])
                    else:
                        self.volume_id.value = ids[0]
            else:
                self.dataset = None
                self.volume_id.reset_choices()
                self._replace_layers(self._read_layers(path))
        except (VesuviusError, OSError) as error:
            self._report_error(error)

    def _read_layers(self, path: Path) -> list[Any]:
        from napari.layers import Layer

        from napari_vesuvius._reader import napari_get_reader
        from napari_vesuvius.core.errors import VolumeError

        reader = napari_get_reader(str(path))
        if reader is None:
            raise VolumeError(
                path, "not a volume this plugin can open (expected .tif/.tiff, zarr or OME-Zarr)"
            )
        return [Layer.create(data, meta, layer_type) for data, meta, layer_type in reader(str(path))]

    def _replace_layers(self, layers: list[Any]) -> None:
        for layer in self._dataset_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._dataset_layers = []
        for layer in layers:
            self._dataset_layers.append(self.viewer.add_layer(layer))
        self._apply_ignore_visibility()
        self.describe()

    # -- browsing --------------------------------------------------------------------------------
    def _id_choices(self, *_: Any) -> list[str]:
        dataset = getattr(self, "dataset", None)
        return [] if dataset is None else [str(volume_id) for volume_id in dataset.ids]

    def _on_id_changed(self, volume_id: str | None) -> None:
        if volume_id is not None and self.dataset is not None:
            self.show_volume(volume_id)

    def show_volume(self, volume_id: str) -> None:
        """Show the image (and label, for training ids) of one dataset volume."""
        from napari_vesuvius.core.errors import VesuviusError

        try:
            layers = self._read_layers(Path(self.dataset.image_path(volume_id)))
            label_path = self.dataset.label_path(volume_id)
            if label_path is not None:
                layers += self._read_layers(Path(label_path))
            self._replace_layers(layers)
            split = "train" if label_path is not None else "test"
            self.message.value = f"{volume_id} ({split}, scroll {self.dataset.scroll_id(volume_id)})"
        except (VesuviusError, OSError) as error:
            self._report_error(error)

    def step(self, offset: int) -> None:
        """Go to the previous (-1) or next (+1) volume id, wrapping around."""
        choices = list(self.volume_id.choices)
        if not choices:
            return
        current = choices.index(self.volume_id.value) if self.volume_id.value in choices else 0
        self.volume_id.value = choices[(current + offset) % len(choices)]

    # -- display ---------------------------------------------------------------------------------
    def toggle_ignore(self) -> None:
        """Show or hide the ignore label (2) in the label layers, keeping surface visible."""
        self._ignore_visible = not self._ignore_visible
        self.show_ignore.text = "hide ignore (2)" if self._ignore_visible else "show ignore (2)"
        self._apply_ignore_visibility()

    def _apply_ignore_visibility(self) -> None:
        from napari.layers import Labels
        from napari.utils.colormaps import DirectLabelColormap

        from napari_vesuvius.core.labels import IGNORE, LABEL_COLORS

        for layer in self._label_layers():
            colors = dict(LABEL_COLORS)
            if not self._ignore_visible:
                colors[IGNORE] = (0.0, 0.0, 0.0, 0.0)
            if isinstance(layer, Labels):
                layer.colormap = DirectLabelColormap(color_dict=colors)

    def _label_layers(self) -> list[Any]:
        from napari.layers import Labels

        return [layer for layer in self._dataset_layers if isinstance(layer, Labels)]

    def describe(self) -> None:
        """Show shape, dtype and chunking of every layer just opened (no pixel data read)."""
        lines = []
        for layer in self._dataset_layers:
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            chunks = getattr(data, "chunksize", None) or getattr(data, "chunks", None)
            levels = f", {len(layer.data)} levels" if getattr(layer, "multiscale", False) else ""
            lines.append(f"{layer.name}: shape {tuple(data.shape)}, {data.dtype}, chunks {chunks}{levels}")
        self.info.value = "\n".join(lines)

    def count_label_values(self) -> None:
        """Count voxels per label value of the shown label layer, chunk by chunk, in the background."""
        labels = self._label_layers()
        if not labels:
            self.message.value = "no label layer to count"
            return
        layer = labels[0]
        data = layer.data[0] if layer.multiscale else layer.data

        def job() -> Generator[Progress, None, dict[int, int]]:
            from napari_vesuvius.core.volume.io import label_counts

            yield Progress(0, 1, f"counting {layer.name}")
            counts = label_counts(data)
            yield Progress(1, 1, "counted")
            return counts

        def show(counts: dict[int, int]) -> None:
            total = sum(counts.values()) or 1
            text = ", ".join(
                f"{value}: {count} ({100 * count / total:.1f}%)" for value, count in sorted(counts.items())
            )
            self.info.value = self.info.value + f"\n{layer.name} value counts: {text}"

        self.task.start(job, description="count labels", on_result=show)

    def _report_error(self, error: BaseException) -> None:
        from napari.utils.notifications import show_error

        self.message.value = f"error: {error}"
        show_error(str(error))
