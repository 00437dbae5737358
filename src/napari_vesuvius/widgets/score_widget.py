"""Score dock widget: the leaderboard score of a mask, and parameter sweeps with a score-vs-value plot.

* **Score** scores a mask layer (Labels or Image holding 0/1) against a label layer (0/1/2) in the
  background and shows the breakdown (TopoScore per dimension, SurfaceDice, VOI split/merge). Inputs
  are checked like ``napari-vesuvius score`` checks them (a probability Image is refused: threshold it
  first); the reason shows in the message line.
* **Sweep** post-processes a probability layer with each value of one parameter (base config from a
  docked Tune widget, the defaults or a JSON file), scores each mask, plots score vs value and offers
  to put the best value into the Tune widget (or into the config file when no Tune widget is docked).
* **All training volumes**: with a dataset folder open in the Data widget and a folder of
  probability files (``<id>.tif``/``.zarr`` as ``napari-vesuvius predict`` writes them), Score and
  Sweep run over every training id that has both, reporting the mean and a per-volume table.

Layout (fits the workbench at 1280×800): the inputs of Score, its button, progress and result come first;
the sweep sits in a collapsed section below. The base clean-up config sits with Score's inputs when
Score post-processes probability files (all training volumes), else in the sweep section.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, PushButton, Table, TextEdit

from napari_vesuvius.core.metric.score import ScoreResult
from napari_vesuvius.core.postprocess import PostprocessConfig
from napari_vesuvius.core.postprocess.sweep import SWEEP_PARAMETERS, SweepResult, value_range
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._docks import find_widget
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._layers import layer_array
from napari_vesuvius.widgets._plot import value_text
from napari_vesuvius.widgets._score_report import dataset_cases, format_mean, format_score, format_sweep
from napari_vesuvius.widgets._sections import Section, compact, primary_button, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings

if TYPE_CHECKING:
    import napari

CURRENT_LAYERS = "current layers"
TRAINING_VOLUMES = "all training volumes"
BASE_TUNE, BASE_DEFAULTS, BASE_FILE = "Tune widget", "defaults", "JSON file"
#: (start, stop, step) offered when a parameter is picked.
DEFAULT_RANGES: dict[str, tuple[float, float, float]] = {
    "t_low": (0.10, 0.60, 0.05),
    "t_high": (0.50, 0.95, 0.05),
    "threshold": (0.20, 0.80, 0.05),
    "percentile_fraction": (0.01, 0.10, 0.01),
    "closing_z": (0, 4, 1),
    "closing_xy": (0, 3, 1),
    "opening_z": (0, 3, 1),
    "opening_xy": (0, 3, 1),
    "dust_size": (0, 500, 50),
    "keep_largest": (0, 10, 1),
    "margin": (0, 8, 1),
    "max_hole_size": (0, 200, 20),
    "max_cavity_size": (0, 200, 20),
}


class ScoreWidget(Container):
    """Score a mask against labels; sweep a post-processing parameter and plot score vs value."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        from napari_vesuvius.widgets._plot import SweepPlot

        self.viewer = napari_viewer
        self.volumes = ComboBox(label="volumes", choices=[CURRENT_LAYERS, TRAINING_VOLUMES])
        self.mask = ComboBox(label="mask", choices=self._mask_choices, nullable=True)
        self.labels_layer = ComboBox(label="labels (0/1/2)", choices=self._label_choices, nullable=True)
        self.probability = ComboBox(label="probability", choices=self._image_choices, nullable=True)
        self.ct = ComboBox(label="CT (scan region)", choices=self._image_choices, nullable=True)
        self.prob_folder = FileEdit(
            label="probabilities",
            mode="d",
            tooltip="folder of <id>.tif / <id>.zarr probabilities (predict's output)",
        )
        self.score_button = primary_button("Score", tooltip="score the mask against the labels")
        self.parameter = ComboBox(label="parameter", choices=list(SWEEP_PARAMETERS), value="t_low")
        self.start = FloatSpinBox(label="start", min=0, max=1e6, step=0.01, value=0.1)
        self.stop = FloatSpinBox(label="stop", min=0, max=1e6, step=0.01, value=0.6)
        self.step = FloatSpinBox(label="step", min=0.001, max=1e6, step=0.01, value=0.05)
        self.base = ComboBox(
            label="base config",
            choices=[BASE_TUNE, BASE_DEFAULTS, BASE_FILE],
            tooltip="the clean-up applied to probabilities (and the starting point of a sweep)",
        )
        self.config_path = FileEdit(label="config file", mode="w", filter="*.json")
        self.sweep_button = PushButton(text="Sweep")
        self.plot = SweepPlot(theme=getattr(napari_viewer, "theme", None))
        self.best = status_label()
        self.use_best_button = PushButton(text="Use best value", enabled=False)
        self.report = TextEdit(value="", label="result")
        self.report.native.setReadOnly(True)
        self.report.native.setStyleSheet("font-family: monospace;")  # the tables line up
        self.report.native.setMinimumHeight(120)
        self.report.native.setMaximumHeight(260)  # a breakdown is ~14 lines; the sweep header stays close
        self.table = Table(value=[], label="per volume")
        self.table.visible = False
        self.message = status_label()
        self.task = TaskRunner(name="score_task")
        for spin in (self.start, self.stop, self.step):
            # narrower than napari's 70 px + padding minimum: the three fit one row of a narrow dock
            spin.native.setStyleSheet("min-width: 48px; padding: 1px 2px;")
        range_row = row(self.start, self.stop, self.step)
        range_row.label = "range"
        range_row.tooltip = "start, stop and step of the swept values"
        #: the sweep's labelled inputs (the base config moves to Score's inputs for all training volumes)
        self.sweep_form = compact(
            Container(
                widgets=[self.probability, self.ct, self.base, self.config_path, self.parameter, range_row]
            )
        )
        self.sweep_section = Section(
            "Sweep a clean-up parameter",
            [self.sweep_form, self.sweep_button, row(self.best, self.use_best_button), self.plot],
            labels=False,
            tooltip="post-process with each value of one parameter, score each, plot score vs value",
        )
        #: Score's labelled inputs (the buttons, results and the sweep section span the full width)
        self.inputs = compact(
            Container(widgets=[self.volumes, self.mask, self.labels_layer, self.prob_folder])
        )
        super().__init__(
            widgets=[
                self.inputs,
                self.score_button,
                self.task,
                self.message,
                self.report,
                self.table,
                self.sweep_section,
            ],
            labels=False,
        )
        self.native.layout().addStretch(1)  # spare height below the sections, not between the controls
        self._vesuvius_viewer = napari_viewer
        self.last_score: ScoreResult | None = None
        self.last_sweep: SweepResult | None = None
        self.settings = WidgetSettings("score", enabled=persist)
        self.settings.bind(
            self, ["volumes", "prob_folder", "parameter", "start", "stop", "step", "base", "config_path"]
        )
        self.parameter.changed.connect(self._default_range)
        self.volumes.changed.connect(self._show_relevant)
        self.score_button.changed.connect(self.score)
        self.sweep_button.changed.connect(self.sweep)
        self.use_best_button.changed.connect(self.use_best)
        self._show_relevant()
        self.reset_choices()

    def primary_controls(self) -> list[Any]:
        """Score's inputs (for the chosen volumes), its button, progress and result."""
        if self.volumes.value == TRAINING_VOLUMES:
            inputs = [self.volumes, self.prob_folder, self.base, self.config_path]
        else:
            inputs = [self.volumes, self.mask, self.labels_layer]
        return [*inputs, self.score_button, self.task, self.message, self.report]

    # -- choices ---------------------------------------------------------------------------------
    def _layers(self, kind: str) -> list[Any]:
        from napari import layers

        viewer = getattr(self, "_vesuvius_viewer", None)
        types = {"image": (layers.Image,), "labels": (layers.Labels,), "mask": (layers.Labels, layers.Image)}
        return [] if viewer is None else [layer for layer in viewer.layers if isinstance(layer, types[kind])]

    def _mask_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers("mask")]

    def _label_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers("labels")]

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers("image")]

    def _show_relevant(self, *_: Any) -> None:
        folder = self.volumes.value == TRAINING_VOLUMES
        self.prob_folder.visible = folder
        for widget in (self.mask, self.labels_layer, self.probability, self.ct):
            widget.visible = not folder
        # Score post-processes probability files with the base config: it belongs to Score's inputs then
        home, other = (self.inputs, self.sweep_form) if folder else (self.sweep_form, self.inputs)
        if self.base not in home:
            for widget in (self.base, self.config_path):
                other.remove(widget)
            at = len(home) if folder else home.index(self.ct) + 1
            home.insert(at, self.base)
            home.insert(at + 1, self.config_path)

    def _default_range(self, parameter: str) -> None:
        start, stop, step = DEFAULT_RANGES.get(parameter, (0, 1, 0.1))
        self.start.value, self.stop.value, self.step.value = start, stop, step

    # -- inputs ----------------------------------------------------------------------------------
    def tune_widget(self) -> Any:
        from napari_vesuvius.widgets.tune_widget import TuneWidget

        return find_widget(self.viewer, TuneWidget)

    def data_widget(self) -> Any:
        from napari_vesuvius.widgets.data_widget import DataWidget

        return find_widget(self.viewer, DataWidget)

    def base_config(self) -> PostprocessConfig:
        """The sweep's base config: the docked Tune widget's, a JSON file's, or the defaults."""
        if self.base.value == BASE_TUNE:
            tune = self.tune_widget()
            return tune.config() if tune is not None else PostprocessConfig()
        if self.base.value == BASE_FILE:
            return PostprocessConfig.load(Path(self.config_path.value))
        return PostprocessConfig()

    def _sweep_values(self) -> list[float]:
        step = self.step.value
        if SWEEP_PARAMETERS[self.parameter.value] is int:
            return value_range(round(self.start.value), round(self.stop.value), max(1, round(step)))
        return value_range(self.start.value, self.stop.value, step)

    def _dataset_inputs(self) -> tuple[Any, Path]:
        """The open dataset (Data step) and the probability folder; the files are listed in the job."""
        from napari_vesuvius.core.errors import VesuviusError

        data = self.data_widget()
        dataset = None if data is None else data.dataset
        if dataset is None:
            raise VesuviusError("open a challenge dataset folder in the Data widget first")
        text = str(self.prob_folder.value or "").strip()
        if text in ("", "."):
            raise VesuviusError("choose the folder of probability files (<id>.tif / <id>.zarr)")
        return dataset, Path(text)

    def _layer_cases(self, need_probability: bool) -> list[Any]:
        from napari_vesuvius.core.errors import VesuviusError

        if self.labels_layer.value is None:
            raise VesuviusError("choose a label layer (0 background, 1 surface, 2 ignore)")
        if need_probability and self.probability.value is None:
            raise VesuviusError("choose a probability layer to sweep")
        layer = self.probability.value
        scan = None
        if self.ct.value is not None:
            ct = layer_array(self.ct.value)
            scan = lambda: ct > 0  # noqa: E731  (computed in the worker)
        return [(layer.name, layer_array(layer), layer_array(self.labels_layer.value), scan)]

    # -- actions ---------------------------------------------------------------------------------
    def _fail(self, error: BaseException) -> None:
        self.message.value = f"error: {error}"

    def score(self) -> Any:
        """Score the mask layer against the label layer (or every training volume) in the background."""
        from napari_vesuvius.core.errors import VesuviusError

        try:
            if self.volumes.value == TRAINING_VOLUMES:
                from napari_vesuvius.core.postprocess.sweep import iter_score_cases

                (dataset, folder), config = self._dataset_inputs(), self.base_config()
                return self._start_sweep(
                    lambda: iter_score_cases(dataset_cases(dataset, folder), config), "score volumes"
                )
            if self.mask.value is None or self.labels_layer.value is None:
                raise VesuviusError("choose a mask layer and a label layer")
        except (VesuviusError, OSError) as error:
            self._fail(error)
            return None
        pred, label = layer_array(self.mask.value), layer_array(self.labels_layer.value)
        names = (self.mask.value.name, self.labels_layer.value.name)
        title = f"{names[0]} vs {names[1]}"

        def job() -> Any:
            from napari_vesuvius.core.metric import score_volume
            from napari_vesuvius.core.progress import Progress

            yield Progress(0, 1, "scoring")
            result = score_volume(pred, label, names=names)  # refusals name the layer
            yield Progress(1, 1, f"score {result.score:.4f}")
            return result

        def done(result: ScoreResult) -> None:
            self.last_score = result
            self.report.value = format_score(result, title)
            self.message.value = f"{title}: score {result.score:.4f}"

        return self.task.start(job, description="score", on_result=done, on_error=self._fail)

    def sweep(self) -> Any:
        """Sweep the chosen parameter over start:stop:step in the background, then plot."""
        from napari_vesuvius.core.errors import VesuviusError
        from napari_vesuvius.core.postprocess.sweep import iter_sweep, sweep_configs

        try:
            parameter, values, base = self.parameter.value, self._sweep_values(), self.base_config()
            sweep_configs(base, parameter, values)  # report bad settings now, not from the worker
            if self.volumes.value == TRAINING_VOLUMES:
                dataset, folder = self._dataset_inputs()
                cases: Any = lambda: dataset_cases(dataset, folder)  # noqa: E731  (listed in the worker)
            else:
                layer_cases = self._layer_cases(need_probability=True)
                cases = lambda: layer_cases  # noqa: E731
        except (VesuviusError, ValueError, OSError) as error:
            self._fail(error)
            return None
        return self._start_sweep(lambda: iter_sweep(cases(), base, parameter, values), f"sweep {parameter}")

    def _start_sweep(self, job: Any, description: str) -> Any:
        self.message.value = ""
        return self.task.start(
            job,
            description=description,
            on_result=self.show_sweep,
            on_error=self._fail,
            on_cancelled=lambda: setattr(self.message, "value", f"{description} cancelled"),
        )

    def show_sweep(self, result: SweepResult) -> None:
        """Plot a sweep, summarise it, fill the per-volume table and enable "Use best value"."""
        self.last_sweep = result
        single = len(result.values) == 1
        volumes = f"{count(len(result.case_names))} volume(s)"
        if single:
            self.message.value = f"mean score {result.best_score:.4f} over {volumes}"
        else:
            self.plot.plot(result)
            best = value_text(result.best_value)
            self.best.value = f"best {result.parameter} = {best} ({result.best_score:.4f})"
            self.message.value = f"sweep of {result.parameter} over {volumes}: {self.best.value}"
        self.use_best_button.enabled = not single
        self.report.value = format_sweep(result) if not single else format_mean(result)
        show_table = len(result.case_names) > 1
        self.table.visible = show_table
        if show_table:
            columns = [value_text(v) for v in result.values]
            rows = [[f"{r.score:.4f}" for r in row] for row in result.results]
            rows.append([f"{s:.4f}" for s in result.mean_scores])
            self.table.value = {"data": rows, "index": [*result.case_names, "mean"], "columns": columns}

    def use_best(self) -> None:
        """Put the best value into the docked Tune widget, or save it to the config file."""
        from napari_vesuvius.core.errors import VesuviusError

        result = self.last_sweep
        if result is None:
            self.message.value = "run a sweep first"
            return
        parameter, value = result.parameter, result.best_value
        try:
            tune = self.tune_widget()
            if tune is not None:
                tune.set_config(dataclasses.replace(tune.config(), **{parameter: value}))
                self.message.value = f"Tune widget: {parameter} = {value_text(value)}"
                return
            path = self.config_path.value
            if path is None or not str(path) or Path(path).is_dir():
                self.message.value = "no Tune widget docked: choose a config file to store the best value"
                return
            base = PostprocessConfig.load(path) if Path(path).is_file() else result.base_config
            dataclasses.replace(base, **{parameter: value}).save(path)
            self.message.value = f"saved {parameter} = {value_text(value)} to {path}"
        except (VesuviusError, OSError) as error:
            self._fail(error)
