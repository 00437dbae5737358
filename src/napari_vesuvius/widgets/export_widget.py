"""Export dock widget: predict → clean up → validated ``submission.zip`` for every test volume.

The same core job as ``napari-vesuvius submit`` (:func:`napari_vesuvius.core.export.submit.iter_submit`), run
in the background with progress and Cancel. The post-processing comes from a docked Tune widget (so
what was tuned in the viewer is what gets submitted), a JSON config file, or the model's own clean-up
(chosen on its validation volumes when it was trained here; the built-in defaults otherwise).
When it finishes, a table lists every id with its shape, positive fraction and time; a validation
problem is shown in plain words and the earlier zip, if any, is left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, Table

from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._model_picker import PERSISTED, ModelPicker
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._sliding_window_section import SlidingWindowSection

if TYPE_CHECKING:
    import napari

    from napari_vesuvius.core.postprocess import PostprocessConfig

#: the last source means the model's own clean-up (chosen in training) when it stored one, else defaults
CONFIG_SOURCES = ("Tune widget", "JSON file", "model's own or defaults")
SUMMARY_COLUMNS = ["id", "shape", "positive", "seconds"]


def find_tune_widget(viewer: Any) -> Any:
    """The first Tune widget docked in ``viewer``'s window, or None."""
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    window = getattr(viewer, "window", None)
    docked = getattr(window, "dock_widgets", {}) if window is not None else {}
    for widget in docked.values():
        if isinstance(widget, TuneWidget):
            return widget
    return None


def _path_of(widget: FileEdit) -> Path | None:
    text = str(widget.value or "").strip()
    return None if text in ("", ".") else Path(text)


class ExportWidget(Container):
    """Dataset, model(s), post-processing and output; Run / Cancel; a summary table of the submission."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        self.data = FileEdit(
            label="test data", mode="d", tooltip="challenge dataset folder (test.csv + test_images/) "
            "or a folder of test images",
        )  # fmt: skip
        self.models = ModelPicker()
        tune_docked = find_tune_widget(napari_viewer) is not None
        self.config_source = ComboBox(
            label="post-processing",
            choices=list(CONFIG_SOURCES),
            value=CONFIG_SOURCES[0] if tune_docked else CONFIG_SOURCES[2],
        )
        self.config_file = FileEdit(label="config JSON", mode="r", filter="*.json")
        self.window = SlidingWindowSection()  # the probability stays float16 in memory: no dtype
        # the section's controls, under the names the dock has always had
        self.device, self.precision, self.step = self.window.device, self.window.precision, self.window.step
        self.batch_size = self.window.batch_size
        self.output = FileEdit(label="output", mode="w", filter="*.zip", value="submission.zip")
        self.run_button = PushButton(text="Run (write submission.zip)")
        self.message = Label(value="")
        self.message.native.setWordWrap(True)
        self.task = TaskRunner(name="export_task")
        self.summary = Table(value={"data": [], "index": [], "columns": SUMMARY_COLUMNS}, label="summary")
        super().__init__(
            widgets=[
                self.data, self.models, self.config_source, self.config_file, self.window, self.output,
                self.run_button, self.message, self.task, self.summary,
            ]
        )  # fmt: skip
        self.last_summary: Any = None
        self.last_error: BaseException | None = None
        self.settings = WidgetSettings("export", enabled=persist)
        self.settings.bind(self.models, PERSISTED)
        self.settings.bind(self, ["data", "config_file", "output"])
        self.settings.bind(self.window, self.window.persisted)
        self.config_source.changed.connect(self._show_config_file)
        self.models.add_button.changed.connect(self.add_member)
        self.run_button.changed.connect(self.run)
        self._show_config_file()

    # -- inputs ----------------------------------------------------------------------------------
    def _show_config_file(self, *_: Any) -> None:
        self.config_file.visible = self.config_source.value == "JSON file"

    def add_member(self) -> None:
        """Add the current model (folds, checkpoint, weight) to the ensemble."""
        try:
            self.models.add_member()
        except ValueError as error:
            self.message.value = str(error)

    def postprocess_config(self) -> PostprocessConfig | None:
        """The config to submit with: from the docked Tune widget, a JSON file, or None: the model's own
        clean-up when training stored one, else the built-in defaults (decided by ``iter_submit``)."""
        from napari_vesuvius.core.postprocess import PostprocessConfig

        source = self.config_source.value
        if source == "Tune widget":
            tune = find_tune_widget(self.viewer)
            if tune is None:
                raise ValueError("no Tune widget is docked: open it, or choose a JSON config file")
            return tune.config()
        if source == "JSON file":
            path = _path_of(self.config_file)
            if path is None:
                raise ValueError("choose a post-processing config JSON file")
            return PostprocessConfig.load(path)
        return None

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> Any:
        """Start predict → clean-up → export in the background; returns the worker (None on bad input)."""
        from napari_vesuvius.core.errors import VesuviusError
        from napari_vesuvius.core.export.submit import iter_submit

        if self.task.running:
            self.message.value = "an export is already running"
            return None
        data, out = _path_of(self.data), _path_of(self.output)
        try:
            if data is None:
                raise ValueError("choose the test data folder")
            if out is None:
                raise ValueError("choose the output .zip path")
            specs = self.models.specs()
            config = self.postprocess_config()
            window = self.window.settings()
        except (ValueError, VesuviusError) as error:
            self.message.value = str(error)
            return None
        self._set_rows([])
        self.last_summary, self.last_error = None, None
        self.message.value = f"exporting to {out} ({self.config_source.value} post-processing)"

        job = iter_submit(data, specs, out, config, window)

        def cancelled() -> None:
            # superqt's worker stops at a yield without closing the generator; close it now so its
            # finally blocks remove the temporary zip at once (not whenever the worker is collected)
            job.close()
            self._cancelled(out)

        return self.task.start(
            lambda: job,
            description="export",
            on_result=self._done,
            on_error=self._failed,
            on_cancelled=cancelled,
        )

    def _set_rows(self, rows: list[tuple[str, ...]]) -> None:
        self.summary.value = {
            "data": [list(row) for row in rows],
            "index": list(range(len(rows))),
            "columns": SUMMARY_COLUMNS,
        }

    def _done(self, summary: Any) -> None:
        self.last_summary = summary
        self._set_rows(summary.rows())
        self.message.value = (
            f"wrote {summary.path}: {len(summary.volumes)} volume(s), {summary.zip_bytes / 1e6:.2f} MB; "
            "verified (every id present, uint8 {0,1}, shapes match, re-read identically); clean-up: "
            f"{summary.settings.get('postprocess_source', 'given')}"
        )

    def _failed(self, error: BaseException) -> None:
        from napari_vesuvius.core.errors import VesuviusError

        self.last_error = error
        what = str(error) if isinstance(error, VesuviusError) else f"{type(error).__name__}: {error}"
        self.message.value = f"Submission not written — {what}. Any earlier zip was left unchanged."

    def _cancelled(self, out: Path) -> None:
        self.message.value = f"cancelled; {out} was not changed"
