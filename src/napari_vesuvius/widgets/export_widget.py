"""Export dock widget: predict → clean up → validated ``submission.zip`` for every test volume.

The same core job as ``napari-vesuvius submit`` (:func:`napari_vesuvius.core.export.submit.iter_submit`), run
in the background with progress and Cancel. The post-processing comes from the Tune step (so what was
tuned in the viewer is what gets submitted), a JSON config file, or the model's own clean-up (chosen on
its validation volumes when it was trained here; the built-in defaults otherwise).

Before any work a short background check reads the test ids (``core.export.submission_targets``: a
folder that is no test set — a dataset's ``train_labels/``, a folder of ``*_prob.tif`` outputs, masks,
an empty folder — is refused, naming the folder and what was expected) and the ids of an existing zip
at the output path. A zip holding a different id set is replaced only when the user says so
(:attr:`ExportWidget.confirm`); the same id set is replaced without asking. Either way the new zip is
swapped in atomically once complete and verified, so a refusal, a failure or a cancel leaves the old one
as it was. When it finishes, a table lists every id with its shape, positive fraction and time.

Layout (fits the workbench at 1280×800): test data, model, output, Run, progress and the message line
first; the ensemble / nnU-Net options, the sliding window and the post-processing choice collapse.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Table

from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._docks import find_widget, open_widgets
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._model_picker import PERSISTED, ModelPicker
from napari_vesuvius.widgets._sections import Section, compact, primary_button, status_label
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._sliding_window_section import SlidingWindowSection

if TYPE_CHECKING:
    import napari

    from napari_vesuvius.core.postprocess import PostprocessConfig
    from napari_vesuvius.core.progress import Progress

#: the last source means the model's own clean-up (chosen in training) when it stored one, else defaults
CONFIG_SOURCES = ("Tune widget", "JSON file", "model's own or defaults")
SUMMARY_COLUMNS = ["id", "shape", "positive", "seconds"]


def _tune_class() -> type:
    from napari_vesuvius.widgets.tune_widget import TuneWidget

    return TuneWidget


def _path_of(widget: FileEdit) -> Path | None:
    text = str(widget.value or "").strip()
    return None if text in ("", ".") else Path(text)


def ask_question(parent: Any, title: str, text: str) -> bool:
    """A Yes/No question box (No is the default); True when the user answers Yes."""
    from qtpy.QtWidgets import QMessageBox

    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, text, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def _fit_columns(table: Table) -> None:
    """Columns share the table's width (no horizontal scroll bar in a narrow dock)."""
    from qtpy.QtWidgets import QHeaderView

    table.native.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)


class ExportWidget(Container):
    """Test data, model(s), output; Run / Cancel; collapsed options; a summary table of the submission."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        self.data = FileEdit(
            label="test data", mode="d", tooltip="challenge dataset folder (test.csv + test_images/) "
            "or a folder of test images",
        )  # fmt: skip
        self.models = ModelPicker()
        # the model path is a primary input: it sits in the form; the ensemble / nnU-Net options collapse
        self.model = self.models.model
        if self.model in self.models:
            self.models.remove(self.model)
        tune_open = any(isinstance(w, _tune_class()) for w in open_widgets(napari_viewer))
        self.config_source = ComboBox(
            label="clean-up from",
            choices=list(CONFIG_SOURCES),
            value=CONFIG_SOURCES[0] if tune_open else CONFIG_SOURCES[2],
            tooltip="the post-processing applied to every probability before it is zipped",
        )
        self.config_file = FileEdit(label="config JSON", mode="r", filter="*.json")
        self.window = SlidingWindowSection()  # the probability stays float16 in memory: no dtype
        # the section's controls, under the names the dock has always had
        self.device, self.precision, self.step = self.window.device, self.window.precision, self.window.step
        self.batch_size = self.window.batch_size
        self.output = FileEdit(label="output", mode="w", filter="*.zip", value="submission.zip")
        self.run_button = primary_button("Run: write submission.zip", tooltip="predict, clean up, zip")
        self.message = status_label()
        self.task = TaskRunner(name="export_task")
        self.summary = Table(value={"data": [], "index": [], "columns": SUMMARY_COLUMNS}, label="summary")
        self.summary.native.setMinimumHeight(90)
        self.summary.visible = False  # shown once there is a submission to list
        _fit_columns(self.summary)
        self.form = compact(Container(widgets=[self.data, self.model, self.output]))
        self.ensemble_section = Section(
            "Ensemble, nnU-Net folds",
            [self.models],
            labels=False,
            tooltip="add several models with weights; nnU-Net folds and checkpoint",
        )
        self.window_section = Section("Sliding window", [self.window], labels=False)
        self.postprocess_section = Section("Post-processing", [self.config_source, self.config_file])
        super().__init__(
            widgets=[
                self.form, self.run_button, self.task, self.message, self.ensemble_section,
                self.window_section, self.postprocess_section, self.summary,
            ],
            labels=False,
        )  # fmt: skip
        self.native.layout().addStretch(1)  # spare height at the bottom, not between the controls
        self.last_summary: Any = None
        self.last_error: BaseException | None = None
        #: which job runs: "check" (test ids, existing zip), "export", or None
        self.phase: str | None = None
        #: asks a Yes/No question before replacing a zip holding other ids; tests replace it
        self.confirm: Callable[[str], bool] = lambda text: ask_question(
            self.native, "Replace the submission?", text
        )
        self.settings = WidgetSettings("export", enabled=persist)
        self.settings.bind(self.models, PERSISTED)
        self.settings.bind(self, ["data", "config_file", "output"])
        self.settings.bind(self.window, self.window.persisted)
        self.config_source.changed.connect(self._show_config_file)
        self.models.add_button.changed.connect(self.add_member)
        self.run_button.changed.connect(self.run)
        self._show_config_file()

    def primary_controls(self) -> list[Any]:
        """What exporting needs: test data, model, output, Run, progress and the message line."""
        return [self.data, self.model, self.output, self.run_button, self.task, self.message]

    # -- inputs ----------------------------------------------------------------------------------
    def _show_config_file(self, *_: Any) -> None:
        self.config_file.visible = self.config_source.value == "JSON file"
        section = self.postprocess_section
        section.title = f"Post-processing: {self.config_source.value}"  # the choice shows while collapsed
        section.expanded = section.expanded

    def add_member(self) -> None:
        """Add the current model (folds, checkpoint, weight) to the ensemble."""
        try:
            self.models.add_member()
        except ValueError as error:
            self.message.value = str(error)

    def postprocess_config(self) -> PostprocessConfig | None:
        """The config to submit with: from the Tune step, a JSON file, or None: the model's own
        clean-up when training stored one, else the built-in defaults (decided by ``iter_submit``)."""
        from napari_vesuvius.core.postprocess import PostprocessConfig

        source = self.config_source.value
        if source == "Tune widget":
            tune = find_widget(self.viewer, _tune_class())
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
        """Check the test set and the existing zip in the background, then (after asking, if the zip
        holds other ids) predict → clean up → export. Returns the check's worker (None on bad input)."""
        from napari_vesuvius.core.errors import VesuviusError
        from napari_vesuvius.core.outputs import check_output_path

        if self.task.running:
            self.message.value = "an export is already running"
            return None
        data, out = _path_of(self.data), _path_of(self.output)
        try:
            if data is None:
                raise ValueError("choose the test data folder")
            if out is None:
                raise ValueError("choose the output .zip path")
            if out.suffix.lower() != ".zip":
                raise ValueError(f"{out}: the submission file must end in .zip")
            specs = self.models.specs()
            config = self.postprocess_config()
            window = self.window.settings()
            config_file = _path_of(self.config_file) if self.config_source.value == "JSON file" else None
            # never an input, never a folder; an existing zip is handled after the check (asked first)
            check_output_path(out, inputs=[data, config_file, *(spec.path for spec in specs)], overwrite=True)
        except (ValueError, VesuviusError) as error:
            self.message.value = str(error)
            return None
        self._set_rows([])
        self.last_summary, self.last_error = None, None
        self.message.value = f"checking the test set in {data} …"
        checked: list[tuple[list[str], bool, set[str] | None]] = []

        def check() -> Generator[Progress, None, tuple[list[str], bool, set[str] | None]]:
            from napari_vesuvius.core.export import submission_ids, submission_targets
            from napari_vesuvius.core.progress import Progress

            yield Progress(0, 1, f"checking {data.name or data}")
            ids = [target.volume_id for target in submission_targets(data)]
            exists = out.exists()
            return ids, exists, (submission_ids(out) if exists else None)

        def export() -> None:
            self.phase = None
            if checked:  # the check passed (not failed, not cancelled)
                self._export(data, out, specs, config, window, *checked[0])

        self.phase = "check"
        return self.task.start(
            check,
            description="check test set",
            on_result=checked.append,
            on_error=self._failed,
            on_cancelled=lambda: self._cancelled(out),
            on_finished=export,
        )

    def _export(
        self, data: Path, out: Path, specs: list[Any], config: Any, window: Any,
        ids: list[str], exists: bool, old: set[str] | None,
    ) -> Any:  # fmt: skip
        """After the check: ask before replacing a zip holding other ids, then start the export job."""
        from napari_vesuvius.core.export import replace_question
        from napari_vesuvius.core.export.submit import iter_submit

        question = replace_question(out, old, ids) if exists else None
        if question is not None and not self.confirm(question):
            self.message.value = f"not exported: {out} was kept as it was"
            return None
        source = self.config_source.value
        self.message.value = f"exporting {count(len(ids))} test volume(s) to {out} (clean-up: {source})"
        self.phase = "export"
        return self.task.start(
            lambda: iter_submit(data, specs, out, config, window),
            description="export",
            on_result=self._done,
            on_error=self._failed,
            on_cancelled=lambda: self._cancelled(out),
            on_finished=lambda: setattr(self, "phase", None),
        )

    def _set_rows(self, rows: list[tuple[str, ...]]) -> None:
        self.summary.value = {
            "data": [list(row) for row in rows],
            "index": list(range(len(rows))),
            "columns": SUMMARY_COLUMNS,
        }
        self.summary.visible = bool(rows)

    def _done(self, summary: Any) -> None:
        self.last_summary = summary
        self._set_rows(summary.rows())
        volumes, size = count(len(summary.volumes)), f"{summary.zip_bytes / 1e6:.2f} MB"
        self.message.value = (
            f"wrote {summary.path}: {volumes} volume(s), {size}; "
            "verified (every id present, uint8 {0,1}, shapes match, re-read identically); clean-up: "
            f"{_clean_up_text(summary.settings.get('postprocess_source'), self.config_source.value)}"
        )

    def _failed(self, error: BaseException) -> None:
        from napari_vesuvius.core.errors import VesuviusError

        self.last_error = error
        what = str(error) if isinstance(error, VesuviusError) else f"{type(error).__name__}: {error}"
        self.message.value = f"Submission not written — {what}. Any earlier zip was left unchanged."

    def _cancelled(self, out: Path) -> None:
        self.message.value = f"cancelled; {out} was not changed"


def _clean_up_text(source: str | None, choice: str) -> str:
    """Which clean-up the submission used, in the words of the dock (core says ``given`` for a passed one)."""
    if source in (None, "given"):
        return "the Tune step's settings" if choice == "Tune widget" else f"the {choice}"
    return source
