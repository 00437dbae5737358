"""Inference dock widget: run built-in or nnU-Net models over an image layer in the background.

The probability layer appears at once and fills in as batches of tiles finish; Cancel stops within one
batch and the layer is renamed ``(partial)`` so an incomplete result is never taken for a finished one.
The probability stays in its layer (or a zarr store) so the Tune widget re-thresholds it without
re-running the network. *Blocks on a dask cluster* runs a zarr-backed image block by block into a
resumable OME-Zarr (see ``_scroll_run.py``), shown as a multiscale layer while it fills.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
    TextEdit,
)

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._layers import MODEL_POSTPROCESS, layer_array
from napari_vesuvius.widgets._model_picker import PERSISTED, ModelPicker
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._sliding_window_section import SlidingWindowSection

if TYPE_CHECKING:
    import napari

#: refresh the growing probability layer at most this often (seconds)
REFRESH_INTERVAL_S = 0.3
#: on cancel or failure a zarr output's partial store is removed; up to this size the layer keeps a copy
KEEP_PARTIAL_BYTES = 2**30


class InferenceWidget(Container):
    """Choose image, model(s), device and sliding-window settings; Run / Cancel; results into layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.models = ModelPicker()
        self.window = SlidingWindowSection(output_dtype=True)
        # the section's controls, under the names the dock has always had
        self.device, self.precision, self.step = self.window.device, self.window.precision, self.window.step
        self.batch_size, self.output_dtype = self.window.batch_size, self.window.output_dtype
        self.output_zarr = FileEdit(label="zarr output", mode="w", tooltip="empty = keep in memory")
        self.replace_zarr = CheckBox(text="replace an existing zarr output (never an open layer's file)")
        self.cluster = CheckBox(text="blocks on a dask cluster (zarr image → OME-Zarr, resumable)")
        self.workers = SpinBox(
            label="workers", min=0, max=256, value=0, tooltip="0 = one per GPU, else cores/4"
        )
        self.scheduler = LineEdit(
            label="scheduler", value="", tooltip="dask scheduler address; empty = local"
        )
        self.run_button = PushButton(text="Run")
        self.message = Label(value="")
        self.log = TextEdit(label="log", value="")
        self.log.native.setReadOnly(True)
        self.task = TaskRunner(name="inference_task")
        super().__init__(
            widgets=[
                self.image, self.models, self.window, self.output_zarr, self.replace_zarr, self.cluster,
                self.workers, self.scheduler, self.run_button, self.message, self.task, self.log,
            ]
        )  # fmt: skip
        self._last_refresh = 0.0
        self.last_result: Any = None
        self.settings = WidgetSettings("inference", enabled=persist)
        self.settings.bind(self.models, PERSISTED)
        self.settings.bind(self.window, self.window.persisted)
        self.models.add_button.changed.connect(self.add_member)
        self.run_button.changed.connect(self.run)
        self.reset_choices()

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

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> Any:
        """Load the model(s) and run the sliding window in the background; returns the worker."""
        if self.task.running:
            self.message.value = "inference is already running"
            return None
        if self.image.value is None:
            self.message.value = "choose an image layer first"
            return None
        try:
            specs = self.models.specs()
        except ValueError as error:
            self.message.value = str(error)
            return None
        image_layer = self.image.value
        from napari_vesuvius.core.errors import VesuviusError

        try:
            window = self.window.settings()
        except ValueError as error:  # SettingsError
            self.message.value = str(error)
            return None
        if self.cluster.value:
            from ._scroll_run import start_block_run

            return start_block_run(self, image_layer, specs, window.replace(output_dtype="uint8"))
        volume = layer_array(image_layer)
        name = f"{image_layer.name} probability"
        try:
            output, pending = self._make_output(tuple(volume.shape), window, [spec.path for spec in specs])
        except VesuviusError as error:
            self.message.value = str(error)
            return None
        layer = self._probability_layer(name, output, image_layer, _stored_clean_up(specs))
        # errors and conversion notices name the layer's file, else the layer
        source = (
            image_layer.metadata.get("path")
            or getattr(image_layer.source, "path", None)
            or f"layer {image_layer.name!r}"
        )

        def job() -> Generator[Progress, None, Any]:
            from napari_vesuvius.core.inference.engine import predict_volume
            from napari_vesuvius.core.inference.models import load_models

            members = []
            for index, spec in enumerate(specs):
                yield Progress(0, 1, f"loading model {index + 1}/{len(specs)}: {spec.path.name}")
                members += load_models([spec])
            result = yield from predict_volume(volume, members, window, output=output, source=source)
            if pending is not None:
                pending.publish()  # in the worker: a large store is renamed, never copied
            return result

        def progress(report: Progress) -> None:
            import time

            now = time.perf_counter()
            if now - self._last_refresh > REFRESH_INTERVAL_S or report.done >= report.total:
                self._last_refresh = now
                layer.refresh()

        def keep_partial() -> None:
            """A zarr output's partial store is removed: keep a copy in the layer when it is small."""
            if pending is None or pending.published:
                return
            if output.nbytes <= KEEP_PARTIAL_BYTES:
                layer.data = np.asarray(output[...])
            pending.discard()

        def done(result: Any) -> None:
            self.last_result = result
            if pending is not None:
                layer.data = pending.open_published()  # the layer showed the partial store
                result.probability = layer.data
            layer.refresh()
            layer.metadata["prediction"] = {**result.settings, "complete": result.complete}
            if not result.complete:
                layer.name = f"{name} (partial)"
            where = f" → {pending.target}" if pending is not None else ""
            self._log(
                f"{image_layer.name}: {result.elapsed_s:.1f}s, {result.tiles_run} tiles run, "
                f"{result.tiles_skipped} skipped (air), {result.voxels_per_s / 1e6:.2f} Mvox/s{where}"
            )

        def cancelled() -> None:
            keep_partial()
            layer.name = f"{name} (partial)"
            layer.metadata["prediction"] = {**window.to_dict(), "complete": False}
            self._log(f"{image_layer.name}: cancelled; the probability layer is partial")

        def failed(error: BaseException) -> None:
            keep_partial()
            self._log(f"{image_layer.name}: failed: {error}")

        return self.task.start(
            job,
            description="inference",
            on_progress=progress,
            on_result=done,
            on_cancelled=cancelled,
            on_error=failed,
        )

    def _make_output(
        self, shape: tuple[int, ...], window: Any, models: tuple[Any, ...] | list[Any] = ()
    ) -> tuple[Any, Any]:
        """The array to predict into and its pending zarr output (None: in memory).

        A zarr path is checked and created by core (``create_prediction_output``): never a file a layer
        was opened from or a model, an existing store only when *replace* is ticked; the run fills a
        partial store next to it that replaces the target only when the run finishes.
        """
        dtype = np.dtype(window.output_dtype)
        target = str(self.output_zarr.value or "").strip()
        if target in ("", "."):
            return np.zeros(shape, dtype=dtype), None
        from napari_vesuvius.core.inference.outputs import create_prediction_output

        opened = [getattr(layer.source, "path", None) for layer in self.viewer.layers]
        opened += [layer.metadata.get("path") for layer in self.viewer.layers]
        pending = create_prediction_output(
            target, shape, dtype, inputs=[*opened, *models], overwrite=self.replace_zarr.value,
            hint="tick 'replace an existing zarr output' to replace it",
            chunks=tuple(min(128, n) for n in shape),
        )  # fmt: skip
        return pending.array, pending

    def _probability_layer(
        self, name: str, output: Any, image_layer: Any, clean_up: dict[str, Any] | None = None
    ) -> Any:
        """A new probability layer; ``clean_up``: the models' own clean-up, kept in its metadata."""
        limits = (0, 255) if np.dtype(output.dtype) == np.uint8 else (0.0, 1.0)
        for stale in (name, f"{name} (partial)"):
            if stale in self.viewer.layers:
                self.viewer.layers.remove(stale)
        return self.viewer.add_image(
            output,
            name=name,
            colormap="magma",
            contrast_limits=limits,
            blending="additive",
            scale=image_layer.scale,
            translate=image_layer.translate,
            metadata={} if clean_up is None else {MODEL_POSTPROCESS: clean_up},
        )

    def _log(self, line: str) -> None:
        self.message.value = line
        self.log.value = (self.log.value + "\n" + line).strip()


def _stored_clean_up(specs: list[Any]) -> dict[str, Any] | None:
    """The clean-up all the models chose in training (``PostprocessConfig.to_dict()``), or None.

    Read from the checkpoint files without building networks, so the probability layer carries it
    from the start and the Tune / Proofread docks can begin from it.
    """
    from napari_vesuvius.core.errors import VesuviusError
    from napari_vesuvius.core.postprocess.choice import checkpoint_choice, common_config

    try:
        config = common_config([checkpoint_choice(spec.path) for spec in specs])
    except VesuviusError:  # the job reports a bad model with its own message
        return None
    return None if config is None else config.to_dict()
