"""Inference dock widget: run built-in or nnU-Net models over an image layer in the background.

The form holds what a run needs (image, model, Run, progress); the ensemble, sliding-window settings,
zarr output, block-wise cluster options and the log sit in collapsed sections. Everything slow happens
in the job, on the worker thread: importing torch, reading the checkpoints' own clean-up, creating the
(zarr) output and removing a cancelled partial store. The job allocates the output first and the
probability layer is added from the first progress report, then refreshed every two seconds while
the engine writes finished slabs and a preview of the row of tiles in progress. Cancel stops within
one batch and the layer is renamed ``(partial)`` so an incomplete result is never taken for a finished
one. The layer records the models that made it (``_layers.MODELS``), so Retrain fine-tunes those.
Before predicting, the job compares a sample of the image with each model's training intensities and the
dock shows a ⚠ warning (and a notification) when it looks different; the run goes on (``_inference_ood.py``).
*Blocks on a dask cluster* runs a zarr-backed image block by block into a resumable OME-Zarr (see
``_scroll_run.py``), shown as a multiscale layer while it fills.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit, SpinBox, TextEdit

from napari_vesuvius.core.progress import Progress, relay
from napari_vesuvius.core.volume.spatial import Spatial
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._inference_ood import IntensityWarning, checked
from napari_vesuvius.widgets._inference_output import REPLACE_HINT, make_output, stored_clean_up
from napari_vesuvius.widgets._layers import (
    MODEL_POSTPROCESS,
    MODELS,
    layer_array,
    place_like,
    placement,
    probability_style,
)
from napari_vesuvius.widgets._model_picker import PERSISTED, ModelPicker
from napari_vesuvius.widgets._sections import Section, compact, primary_button, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._sliding_window_section import SlidingWindowSection

if TYPE_CHECKING:
    import napari

#: refresh the growing probability layer at most this often (seconds); each refresh redraws the canvas
REFRESH_INTERVAL_S = 2.0
#: the engine writes a preview of the row of tiles in progress at most this often (seconds)
PREVIEW_INTERVAL_S = 2.0
#: pass the engine's per-batch reports on to the GUI at most this often (each one repaints the dock)
REPORT_INTERVAL_S = 1.0
#: on cancel or failure a zarr output's partial store is removed; up to this size the layer keeps a copy
KEEP_PARTIAL_BYTES = 2**30


class InferenceWidget(Container):
    """Choose image, model(s), device and sliding-window settings; Run / Cancel; results into layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.models = ModelPicker()
        # model path, nnU-Net folder, folds and checkpoint are primary inputs: they sit in the form; the
        # picker keeps weight, Add/Clear and the ensemble list, in the collapsed Ensemble section
        self.model, self.folds, self.checkpoint = self.models.model, self.models.folds, self.models.checkpoint
        for widget in (self.model, self.models.model_folder, self.folds, self.checkpoint):
            self.models.remove(widget)
        self.models.ensemble.native.setMaximumHeight(80)
        self.window = SlidingWindowSection(output_dtype=True)
        # the section's controls, under the names the dock has always had
        self.device, self.precision, self.step = self.window.device, self.window.precision, self.window.step
        self.batch_size, self.output_dtype = self.window.batch_size, self.window.output_dtype
        self.output_zarr = FileEdit(
            label="zarr output",
            mode="w",
            tooltip="empty = keep in memory; .zarr = a zarr array, .ome.zarr = an OME-Zarr pyramid (zarr "
            "format: Preferences › napari-vesuvius), placed like the image",
        )
        self.replace_zarr = CheckBox(
            text="replace an existing output",
            tooltip="replace an existing zarr store at this path (never a file a layer was opened from)",
        )
        self.cluster = CheckBox(
            text="run block-wise on a dask cluster",
            tooltip="a zarr-backed image → a resumable OME-Zarr at the zarr output, block by block",
        )
        self.workers = SpinBox(
            label="workers", min=0, max=256, value=0, tooltip="0 = one per GPU, else cores/4"
        )
        self.scheduler = LineEdit(
            label="scheduler", value="", tooltip="dask scheduler address; empty = local"
        )
        self.run_button = primary_button("Run", tooltip="predict the surface probability of the image")
        self.message = status_label()
        self.log = TextEdit(value="")
        self.log.native.setReadOnly(True)
        self.log.native.setMinimumHeight(60)
        self.task = TaskRunner(name="inference_task")
        self.intensity = IntensityWarning(
            lambda: getattr(self.viewer, "theme", None),
            lambda message: any(message in shown for shown in self.task.warnings),
        )
        self.form = compact(
            Container(
                widgets=[
                    self.image, self.model, row(self.models.model_folder), self.folds, self.checkpoint,
                ]
            )
        )  # fmt: skip
        self.ensemble_section = Section(
            "Ensemble", [self.models], labels=False, tooltip="several models with weights, averaged"
        )
        self.window_section = Section(
            "Sliding window (device, precision, step, TTA)", [self.window], labels=False
        )
        self.output_section = Section("Zarr output", [self.output_zarr, self.replace_zarr])
        self.cluster_section = Section(
            "Block-wise (dask cluster)", [self.cluster, self.workers, self.scheduler]
        )
        self.log_section = Section("Log", [self.log], labels=False)
        super().__init__(
            widgets=[
                self.form, self.run_button, self.task, self.message, self.intensity.label,
                self.ensemble_section, self.window_section, self.output_section, self.cluster_section,
                self.log_section,
            ],
            labels=False,
        )  # fmt: skip
        self.native.layout().addStretch(1)  # spare height at the bottom, not between the controls
        self._last_refresh = 0.0
        self.last_result: Any = None
        #: the probability layer of the latest in-memory run (None until the job has allocated it)
        self.layer: Any = None
        self.settings = WidgetSettings("inference", enabled=persist)
        self.settings.bind(self.models, PERSISTED)
        self.settings.bind(self.window, self.window.persisted)
        self.models.add_button.changed.connect(self.add_member)
        self.models.clear_button.changed.connect(self._show_ensemble_size)
        self.run_button.changed.connect(self.run)
        for choice in (self.image, self.model, self.models.model_folder, self.models.clear_button):
            choice.changed.connect(self.intensity.clear)  # the warning was about another image or model
        self.reset_choices()

    def primary_controls(self) -> list[Any]:
        """What a run needs: image, model (nnU-Net folds, checkpoint), Run, progress and the message.

        The intensity warning sits right under the message, outside the sections, but is hidden while
        there is nothing to warn about, so it is not listed."""
        return [self.image, self.model, self.folds, self.checkpoint, self.run_button, self.task, self.message]

    # -- choices & models ------------------------------------------------------------------------
    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Image

        viewer = getattr(self, "viewer", None)
        if viewer is None:
            return []
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]

    def add_member(self) -> None:
        """Add the current model (with folds, checkpoint and weight) to the ensemble list."""
        try:
            self.models.add_member()
        except ValueError as error:
            self.message.value = str(error)
        self._show_ensemble_size()

    def _show_ensemble_size(self, *_: Any) -> None:
        count = len(self.models.members)
        section = self.ensemble_section
        section.title = f"Ensemble ({count} models)" if count else "Ensemble"
        section.expanded = section.expanded  # redraw the header
        if count:
            self.message.value = f"the ensemble of {count} models runs instead of the model above"

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run the model(s) over the image in the background; returns the worker (None: message set).

        Only cheap checks happen here; the job imports torch, reads the checkpoints and creates the
        output, and the probability layer is added when the job reports the output exists.
        """
        if self.task.running:
            self.message.value = "inference is already running"
            return None
        if self.image.value is None:
            self.message.value = "choose an image layer first"
            return None
        try:
            specs = self.models.specs()
            window = self.window.settings()  # SettingsError is a ValueError
        except ValueError as error:
            self.message.value = str(error)
            return None
        image_layer = self.image.value
        if self.cluster.value:
            from ._scroll_run import start_block_run

            return start_block_run(self, image_layer, specs, window.replace(output_dtype="uint8"))
        self.message.value = ""
        volume = layer_array(image_layer)
        name = f"{image_layer.name} probability"
        target = str(self.output_zarr.value or "").strip()
        target = "" if target == "." else target
        # files the zarr output may not replace: every layer's file and the models (checked in the job)
        opened = [getattr(layer.source, "path", None) for layer in self.viewer.layers]
        opened += [layer.metadata.get("path") for layer in self.viewer.layers]
        inputs = [*opened, *(spec.path for spec in specs)]
        replace = bool(self.replace_zarr.value)
        if target:  # refused before any work (cheap path checks); the job checks again as it creates
            from napari_vesuvius.core.errors import VesuviusError
            from napari_vesuvius.core.outputs import check_output_path

            try:
                check_output_path(Path(target), inputs=inputs, overwrite=replace, hint=REPLACE_HINT)
            except (VesuviusError, OSError) as error:
                self.message.value = str(error)
                return None
        # errors and conversion notices name the layer's file, else the layer
        source = (
            image_layer.metadata.get("path")
            or getattr(image_layer.source, "path", None)
            or f"layer {image_layer.name!r}"
        )
        described = [spec.describe() for spec in specs]
        spatial = Spatial.from_layer(image_layer)  # the output is placed like its image
        state: dict[str, Any] = {}
        self.layer = None

        def job() -> Generator[Progress, None, Any]:
            output, pending = make_output(
                target, tuple(volume.shape), window.output_dtype, inputs, replace, spatial
            )
            state["output"] = output
            try:
                yield Progress(0, 1, "loading the model(s)")  # the GUI adds the layer now
                state["clean_up"] = stored_clean_up(specs)
                from napari_vesuvius.core.inference.engine import predict_volume
                from napari_vesuvius.core.inference.models import load_models

                members = []
                for index, spec in enumerate(specs):
                    yield Progress(0, 1, f"loading model {index + 1}/{len(specs)}: {spec.path.name}")
                    members += load_models([spec])
                yield Progress(0, 1, "checking the image's intensities against the model(s)")
                state["intensity"] = checked(members, volume, image_layer.name)  # informs, never stops
                yield Progress(1, 1, "intensity checked")  # a finished step: always passed on to the GUI
                result = yield from predict_volume(
                    volume, members, window, output=output, source=source, preview_s=PREVIEW_INTERVAL_S
                )
                if pending is not None:  # in the worker: a large store is renamed, never copied
                    yield from pending.iter_publish()  # (an OME-Zarr gets its pyramid first)
                    result.probability = pending.open_published()
                    state["where"] = f" → {pending.target}"
                return result
            finally:  # cancelled or failed: a zarr output's partial store goes, a small copy stays
                if pending is not None and not pending.published:
                    if output.nbytes <= KEEP_PARTIAL_BYTES:
                        state["partial"] = np.asarray(output[...])
                    pending.discard()

        def layer() -> Any:
            """The probability layer, added once the job has allocated the output."""
            if self.layer is None and "output" in state:
                self.layer = self._probability_layer(name, state["output"], image_layer, described)
            current = self.layer
            if current is not None and state.get("clean_up") and MODEL_POSTPROCESS not in current.metadata:
                current.metadata[MODEL_POSTPROCESS] = state["clean_up"]
            return current

        def intensity() -> None:
            self.show_intensity(state.pop("intensity", None), image_layer)

        def progress(report: Progress) -> None:
            intensity()
            now = time.perf_counter()
            current = layer()
            if current is not None and now - self._last_refresh > REFRESH_INTERVAL_S:
                self._last_refresh = now
                current.refresh()

        def keep_partial(current: Any) -> None:
            if current is not None and "partial" in state:
                current.data = state.pop("partial")  # the partial store was removed in the job

        def done(result: Any) -> None:
            intensity()
            self.last_result = result
            current = layer()
            if current is None:  # pragma: no cover - the job reports before returning
                return
            if isinstance(result.probability, np.ndarray):
                current.refresh()
            else:
                current.data = result.probability  # the published store (the layer showed the partial one)
            current.metadata["prediction"] = {**result.settings, "complete": result.complete}
            if not result.complete:
                current.name = f"{name} (partial)"
            self._log(
                f"{image_layer.name}: {result.elapsed_s:.1f}s, {result.tiles_run} tiles run, "
                f"{result.tiles_skipped} skipped (air), {result.voxels_per_s / 1e6:.2f} Mvox/s"
                f"{state.get('where', '')}"
            )

        def cancelled() -> None:
            intensity()
            current = layer()
            if current is not None:
                keep_partial(current)
                current.refresh()
                current.name = f"{name} (partial)"
                current.metadata["prediction"] = {**window.to_dict(), "complete": False}
                self._log(f"{image_layer.name}: cancelled; the probability layer is partial")
            else:
                self._log(f"{image_layer.name}: cancelled before the output was made")

        def failed(error: BaseException) -> None:
            intensity()
            current = layer()
            if current is not None:
                keep_partial(current)
                current.name = f"{name} (partial)"
            self._log(f"{image_layer.name}: failed: {error}")

        self._last_refresh = time.perf_counter()
        started: list[Any] = []  # the worker, to see a Cancel between two reports passed on
        worker = self.task.start(
            lambda: _coalesced(job(), lambda: bool(started) and started[0].abort_requested),
            description="inference",
            on_progress=progress,
            on_result=done,
            on_cancelled=cancelled,
            on_error=failed,
        )
        started.append(worker)
        return worker

    def show_intensity(self, found: Any, image_layer: Any) -> None:
        """A run's intensity check outcome, once it is in (GUI thread): None = not yet, a str = it failed
        (logged), else the findings (``[]``: quiet, clears the line) about ``image_layer``."""
        if isinstance(found, str):
            self._log(found)
        elif found is not None and self.image.value is image_layer:  # else: about another image
            self.intensity.show(found)

    def _probability_layer(
        self, name: str, output: Any, image_layer: Any, models: list[dict[str, Any]]
    ) -> Any:
        """The probability layer over ``image_layer``; ``models``: the specs that make it.

        A previous run's layer of the same name is reused in place (napari takes about a second to add
        a layer and build its controls, on the GUI thread); a second one is removed.
        """
        from napari.layers import Image

        old = [self.viewer.layers[n] for n in (name, f"{name} (partial)") if n in self.viewer.layers]
        for stale in old[1:] + [layer for layer in old[:1] if not isinstance(layer, Image)]:
            self.viewer.layers.remove(stale)
        reuse = old[0] if old and old[0] in self.viewer.layers else None
        if reuse is not None and reuse.ndim == output.ndim and not reuse.multiscale:
            reuse.name = name
            reuse.metadata = {MODELS: models}
            place_like(reuse, image_layer)
            reuse.data = output
            for key, value in probability_style(output.dtype).items():
                setattr(reuse, key, value)
            return reuse
        if reuse is not None:
            self.viewer.layers.remove(reuse)
        return self.viewer.add_image(
            output,
            name=name,
            metadata={MODELS: models},
            **placement(image_layer),
            **probability_style(output.dtype),
        )

    def _log(self, line: str) -> None:
        self.message.value = line
        self.log.value = (self.log.value + "\n" + line).strip()


def _coalesced(job: Generator[Progress, None, Any], stopping: Any) -> Generator[Progress, None, Any]:
    """``job``'s reports, passed on at most every ``REPORT_INTERVAL_S`` (each one redraws the dock and
    costs the GUI thread a repaint), but always the first of a new total, the last, and any once
    ``stopping()`` (Cancel): the worker stops at a report it receives, so Cancel still acts within a batch.
    """
    last, total = -float("inf"), None

    def due(report: Progress) -> Progress | None:
        nonlocal last, total
        now = time.perf_counter()
        late = now - last >= REPORT_INTERVAL_S or report.total != total or report.done >= report.total
        if not (late or stopping()):
            return None
        last, total = now, report.total
        return report

    return relay(job, due)
