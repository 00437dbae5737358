"""Data step: open a volume, a URL or a challenge dataset folder and browse its volumes by id.

The path line takes a local path or an ``http(s)://`` / ``s3://`` URL of a zarr / OME-Zarr; the collapsed
*Pyramid level, remote cache* section chooses the level a pyramid opens at (0 = full resolution; a
coarse level browses a remote scroll quickly) and the folder remote chunks are cached in (default: the
``remote_cache_dir`` preference; empty = no cache). The volume info shows each layer's physical
placement (voxel size, unit, origin) and what reading it adjusted.

Responsiveness: opening a dataset folder (csv reading, id listing) and reading a volume's layers (file
headers, contrast limits from the reader's metadata, napari's one-time warm-up) run in the TaskRunner's
worker; only the layer updates run on the GUI thread. Browsing updates the image and label layers in
place (:class:`~._data_layers.LayerSlots`); a test id hides and empties the label layer. A newer request
supersedes an older one: while a volume loads, further next/previous clicks keep only the latest id,
and a stale result is dropped. A failed open keeps the dataset, its ids and the layers shown.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton, SpinBox, TextEdit, Widget

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._data_layers import (
    EXPECTED,
    LayerSlots,
    describe_placement,
    open_job,
    volume_job,
)
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._preferences import preference
from napari_vesuvius.widgets._sections import Section, compact, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings

if TYPE_CHECKING:
    import napari


class DataWidget(Container):
    """Open a file, folder or URL, step through a dataset's ids, show image + labels, describe the volume."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        # a plain line, not a FileEdit: a FileEdit's value is a Path, which turns "https://" into "https:/"
        self.path = LineEdit(label="path or URL", tooltip=f"open {EXPECTED}")
        self.open_button = PushButton(text="Open", tooltip="open the path or URL above")
        self.open_folder_button = PushButton(
            text="Folder…", tooltip="choose a zarr / OME-Zarr, slice or dataset folder"
        )
        self.open_file_button = PushButton(text="File…", tooltip="choose a .tif/.tiff volume")
        self.level = SpinBox(
            label="pyramid level",
            min=0,
            max=16,
            value=0,
            tooltip="level of a pyramid to open: 0 = full resolution, each level up is coarser (faster)",
        )
        self.cache_dir = FileEdit(
            label="chunk cache",
            mode="d",
            value=str(preference("remote_cache_dir") or ""),
            tooltip="folder where chunks of a URL are kept for browsing them again; empty = no cache",
        )
        self.open_options = Section("Pyramid level, remote cache", [self.level, self.cache_dir])
        # choices come from a callable: napari calls reset_choices() on docked widgets whenever layers change
        self.volume_id = ComboBox(
            label="volume id", choices=self._id_choices, tooltip="volumes of the open dataset folder"
        )
        self.previous_button = PushButton(text="◀ previous")
        self.next_button = PushButton(text="next ▶")
        self.message = status_label()
        self.task = TaskRunner(name="data_task")
        self.info = TextEdit(value="", label="info")
        self.info.native.setReadOnly(True)
        self.info.native.setMaximumHeight(110)
        self.show_ignore = PushButton(text="hide ignore (2)", tooltip="show or hide label 2 (ignore)")
        self.count_button = PushButton(text="Count label values", tooltip="voxels per label value")
        self.counts = status_label()
        self.details = Section(
            "Volume info",
            [self.info, row(self.show_ignore, self.count_button), self.counts],
            expanded=True,
            labels=False,
        )
        super().__init__(
            widgets=[
                self.path,
                row(self.open_button, self.open_folder_button, self.open_file_button),
                self.volume_id,
                row(self.previous_button, self.next_button),
                self.message,
                self.task,
                self.open_options,
                self.details,
            ]
        )
        compact(self)
        self.native.layout().addStretch(1)  # spare height below the controls, not between them
        self.dataset: Any = None
        self.slots = LayerSlots(napari_viewer)
        self._ignore_visible = True
        # scheduling: one job at a time; of the requests that arrive meanwhile only the newest of each
        # kind waits ("open" before "show"); results of superseded requests are dropped (tokens)
        self._tokens = {"open": 0, "show": 0}
        self._pending: dict[str, Callable[[], None]] = {}
        self._job = ""  # kind of the running job: "open", "show" or "count"
        self._shown_id: str | None = None  # the dataset id whose layers are shown
        self.settings = WidgetSettings("data", enabled=persist)
        self.settings.bind(self, ["path"])

        self.open_button.changed.connect(lambda: self.open_path(self.path.value))
        self.path.native.returnPressed.connect(lambda: self.open_path(self.path.value))
        self.open_folder_button.changed.connect(self._choose_folder)
        self.open_file_button.changed.connect(self._choose_file)
        self.volume_id.changed.connect(self._on_id_changed)
        self.previous_button.changed.connect(lambda: self.step(-1))
        self.next_button.changed.connect(lambda: self.step(+1))
        self.show_ignore.changed.connect(self.toggle_ignore)
        self.count_button.changed.connect(self.count_label_values)

    def primary_controls(self) -> list[Widget]:
        """The controls of the step's main action (open, choose and browse volumes, its status)."""
        return [
            self.path,
            self.open_button,
            self.open_folder_button,
            self.open_file_button,
            self.volume_id,
            self.previous_button,
            self.next_button,
            self.message,
            self.task,
        ]

    @property
    def busy(self) -> bool:
        """True while a job runs or a request waits for the runner."""
        return self.task.running or bool(self._pending)

    @property
    def _dataset_layers(self) -> list[Any]:
        """The layers this step shows (image first, then labels)."""
        return self.slots.layers()

    # -- scheduling ------------------------------------------------------------------------------
    def _submit(self, kind: str, start: Callable[[], None]) -> None:
        """Start a job now, or (runner busy) keep it as the pending request of its kind, replacing an
        older one. An open supersedes a waiting load; a running label count is cancelled (it counts a
        volume about to be replaced)."""
        if kind == "open":
            self._pending.pop("show", None)
        if not self.task.running:
            self._job = kind
            # opening and browsing take about a second: kept out of napari's activity dock (a bar per
            # click); the inline bar shows them. Counting reads a whole volume: it goes to the dock.
            self.task.activity = kind == "count"
            start()
            return
        self._pending[kind] = start
        if self._job == "count":
            self.task.cancel()

    def _on_finished(self) -> None:
        self._job = ""
        for kind in ("open", "show"):
            start = self._pending.pop(kind, None)
            if start is not None:
                self._submit(kind, start)
                return

    @property
    def _opening(self) -> bool:
        return self._job == "open" or "open" in self._pending

    # -- opening ---------------------------------------------------------------------------------
    def _start_dir(self) -> str:
        from napari_vesuvius.core.volume.remote import is_url

        text = self.path.value.strip()
        return "" if is_url(text) else text

    def _choose_folder(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Open folder", self._start_dir())
        if folder:
            self.path.value = folder
            self.open_path(folder)

    def _choose_file(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        filename, _ = QFileDialog.getOpenFileName(
            self.native, "Open volume", self._start_dir(), "Volumes (*.tif *.tiff);;All files (*)"
        )
        if filename:
            self.path.value = filename
            self.open_path(filename)

    def _cache_dir(self) -> str | None:
        """The chunk-cache folder typed or chosen (None when empty: no cache)."""
        text = self.cache_dir.line_edit.value.strip()
        return text or None

    def open_path(self, path: str | Path) -> None:
        """Open a dataset folder (browse by id), a single volume (TIFF, slice folder, zarr / OME-Zarr) or
        a URL in the background, at the pyramid level chosen (volumes and URLs).

        A failed open keeps the dataset, id list and layers already shown; its message names the path.
        """
        from napari_vesuvius.core.volume.remote import is_url

        self._tokens["open"] += 1
        text = str(path).strip()
        token, location = self._tokens["open"], (text if is_url(text) else Path(text))
        level, cache_dir = int(self.level.value), self._cache_dir()
        shown = str(location) if isinstance(location, str) else location.name or str(location)

        def finished() -> None:
            self._on_finished()
            self._resync()

        def start() -> None:
            self.message.value = f"opening {shown} …"
            self.task.start(
                lambda: open_job(location, level, cache_dir),
                description="open",
                on_result=lambda result: self._opened(token, shown, level, *result),
                on_error=self._report_error,
                on_finished=finished,
            )

        self._submit("open", start)

    def _opened(
        self, token: int, shown: str, level: int, dataset: Any, layers: list[Any], problem: str
    ) -> None:
        if token != self._tokens["open"]:
            return  # a newer open superseded this one
        self._tokens["show"] += 1  # a load of the old dataset still under way is stale now
        self.dataset = dataset
        with self.volume_id.changed.blocked():
            self.volume_id.reset_choices()
        if dataset is None:  # a single volume: its layers replace the dataset's
            self._shown_id = None
            self._show_layers(layers)
            self.message.value = f"opened {shown}" + (f" at pyramid level {level}" if level else "")
            retries = sum(
                int(meta.get("metadata", {}).get("remote", {}).get("retries", 0)) for _, meta, _ in layers
            )
            if retries:
                self.message.value += f" ({retries} retries: the server is busy or rate-limited)"
            return
        ids = self._id_choices()
        summary = f"dataset: {len(dataset.train_ids)} train, {len(dataset.test_ids)} test"
        if ids:
            with self.volume_id.changed.blocked():
                self.volume_id.value = ids[0]
        self._shown_id = ids[0] if ids and layers else None
        self._show_layers(layers, browsing=True)
        if problem:  # the folder opened, its first volume did not: say so once (the job succeeded)
            from napari.utils.notifications import show_error

            self.message.value = f"{summary} · error: {problem}"
            show_error(problem)
        else:
            self.message.value = f"{summary} · {self._describe_id(ids[0])}" if ids else f"{summary}: empty"

    def _resync(self) -> None:
        """After an open that failed or was superseded: load the id the list shows, if it is not shown."""
        value = self.volume_id.value
        if self._opening or self._job == "show":
            return  # a newer request decides what is shown
        if self.dataset is not None and value is not None and value != self._shown_id:
            self.show_volume(value)

    # -- browsing --------------------------------------------------------------------------------
    def _id_choices(self, *_: Any) -> list[str]:
        dataset = getattr(self, "dataset", None)
        return [] if dataset is None else [str(volume_id) for volume_id in dataset.ids]

    def _on_id_changed(self, volume_id: str | None) -> None:
        if volume_id is not None and self.dataset is not None:
            self.show_volume(volume_id)

    def show_volume(self, volume_id: str) -> None:
        """Show the image (and label, for training ids) of one dataset volume; read in the background."""
        if self._opening:
            return  # the open under way replaces the id list (or, failing, reloads the chosen id)
        self._tokens["show"] += 1
        token, dataset = self._tokens["show"], self.dataset

        def shown(layers: list[Any]) -> None:
            if token != self._tokens["show"]:
                return  # the user moved on; the newest request is pending
            self._shown_id = volume_id
            self._show_layers(layers, browsing=True)
            self.message.value = self._describe_id(volume_id)

        def start() -> None:
            self.task.start(
                lambda: volume_job(dataset, volume_id),
                description=f"volume {volume_id}",
                on_result=shown,
                on_error=self._report_error,
                on_finished=self._on_finished,
            )

        self.message.value = f"loading {volume_id} …"
        self._submit("show", start)

    def _describe_id(self, volume_id: str) -> str:
        ids = self._id_choices()
        where = f"{ids.index(volume_id) + 1}/{len(ids)}" if volume_id in ids else ""
        split = "train" if self.dataset.label_path(volume_id) is not None else "test"
        scroll = self.dataset.scroll_id(volume_id)
        return " · ".join(
            part for part in (volume_id, split, f"scroll {scroll}" if scroll else "", where) if part
        )

    def step(self, offset: int) -> None:
        """Go to the previous (-1) or next (+1) volume id, wrapping around."""
        choices = list(self.volume_id.choices)
        if not choices:
            return
        current = choices.index(self.volume_id.value) if self.volume_id.value in choices else 0
        self.volume_id.value = choices[(current + offset) % len(choices)]

    # -- display ---------------------------------------------------------------------------------
    def _show_layers(self, layers: list[Any], browsing: bool = False) -> None:
        self.slots.show(layers, hide_ignore=not self._ignore_visible, browsing=browsing)
        self.describe()

    def toggle_ignore(self) -> None:
        """Show or hide the ignore label (2) in the label layers, keeping surface visible."""
        self._ignore_visible = not self._ignore_visible
        self.show_ignore.text = "hide ignore (2)" if self._ignore_visible else "show ignore (2)"
        self.slots.set_ignore_hidden(not self._ignore_visible)

    def _label_layers(self) -> list[Any]:
        return self.slots.label_layers()

    def describe(self) -> None:
        """Show shape, dtype, chunking, physical placement and reading notes of every layer just opened
        (no pixel data read)."""
        from napari.layers import Labels

        from napari_vesuvius._reader import LABELS_LEGEND

        self.counts.value = ""
        lines = []
        placed = None
        for layer in self._dataset_layers:
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            chunks = getattr(data, "chunksize", None) or getattr(data, "chunks", None)
            levels = f", {len(layer.data)} levels" if getattr(layer, "multiscale", False) else ""
            lines.append(f"{layer.name}: shape {tuple(data.shape)}, {data.dtype}, chunks {chunks}{levels}")
            placement = describe_placement(layer)
            if placement != placed:  # a label layer placed like its image says nothing new
                lines.append(f"  placement: {placement}")
                placed = placement
            lines += [f"  note: {note}" for note in layer.metadata.get("notes", ())]
            if isinstance(layer, Labels):
                lines.append(f"  labels: {LABELS_LEGEND}")
        self.info.value = "\n".join(lines)

    def count_label_values(self) -> None:
        """Count voxels per label value of the shown label layer, chunk by chunk, in the background."""
        labels = self._label_layers()
        if not labels:
            self.message.value = "no label layer to count"
            return
        if self.task.running:
            self.message.value = "wait for the volume to load, then count"
            return
        layer = labels[0]
        data = layer.data[0] if layer.multiscale else layer.data

        def job() -> Generator[Progress, None, dict[int, int]]:
            from napari_vesuvius.core.volume.io import iter_label_counts

            return (yield from iter_label_counts(data))

        def show(counts: dict[int, int]) -> None:
            if layer not in self._dataset_layers:
                return  # another volume is shown now
            total = sum(counts.values()) or 1
            text = ", ".join(
                f"{value}: {count(n)} ({100 * n / total:.1f}%)" for value, n in sorted(counts.items())
            )
            self.counts.value = f"value counts: {text}"

        self._submit(
            "count",
            lambda: self.task.start(
                job, description="count labels", on_result=show, on_finished=self._on_finished
            ),
        )

    def _report_error(self, error: BaseException) -> None:
        # the TaskRunner already showed the notification; the message line keeps it in view
        self.message.value = f"error: {error}"
