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
    FloatSpinBox,
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

if TYPE_CHECKING:
    import napari

#: refresh the growing probability layer at most this often (seconds)
REFRESH_INTERVAL_S = 0.3


class InferenceWidget(Container):
    """Choose image, model(s), device and sliding-window settings; Run / Cancel; results into layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.models = ModelPicker()
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.precision = ComboBox(label="precision", choices=["auto", "fp32", "bf16", "fp16"], value="auto")
        self.step = FloatSpinBox(
            label="step", min=0.1, max=1.0, step=0.05, value=0.5, tooltip="0.5 = half a patch"
        )
        self.tta_z = CheckBox(text="mirror z")
        self.tta_y = CheckBox(text="mirror y")
        self.tta_x = CheckBox(text="mirror x")
        self.batch_size = SpinBox(label="batch size", min=1, max=256, value=2)
        self.output_dtype = ComboBox(
            label="output dtype", choices=["float16", "float32", "uint8"], value="float16"
        )
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
        tta = Container(widgets=[self.tta_z, self.tta_y, self.tta_x], layout="horizontal", labels=False)
        super().__init__(
            widgets=[
                self.image, self.models, self.device, self.precision, self.step, tta, self.batch_size,
                self.output_dtype, self.output_zarr, self.replace_zarr, self.cluster, self.workers,
                self.scheduler, self.run_button, self.message, self.task, self.log,
            ]
        )  # fmt: skip
        self._last_refresh = 0.0
        self.last_result: Any = None
        self.settings = WidgetSettings("inference", enabled=persist)
        self.settings.bind(self.models, PERSISTED)
        self.settings.bind(
            self,
            ["device", "precision", "step", "tta_z", "tta_y", "tta_x", "batch_size", "output_dtype"],
        )
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
    def _tta_axes(self) -> tuple[int, ...]:
        return tuple(axis for axis, box in enumerate((self.tta_z, self.tta_y, self.tta_x)) if box.value)

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
        if self.cluster.value:
            from ._scroll_run import start_block_run

            return start_block_run(self, image_layer, specs, self._block_settings())
        volume = layer_array(image_layer)
        name = f"{image_layer.name} probability"
        from napari_vesuvius.core.errors import VesuviusError

        try:
            output = self._make_output(tuple(volume.shape), [spec.path for spec in specs])
        except VesuviusError as error:
            self.message.value = str(error)
            return None
        layer = self._probability_layer(name, output, image_layer, _stored_clean_up(specs))
        settings = {
            "step": float(self.step.value),
            "tta_axes": self._tta_axes(),
            "batch_size": int(self.batch_size.value),
            "device": self.device.value,
            "precision": self.precision.value,
            # errors and conversion notices name the layer's file, else the layer
            "source": image_layer.metadata.get("path")
            or getattr(image_layer.source, "path", None)
            or f"layer {image_layer.name!r}",
        }

        def job() -> Generator[Progress, None, Any]:
            from napari_vesuvius.core.inference.engine import predict_volume
            from napari_vesuvius.core.submit import load_models

            members = []
            for index, spec in enumerate(specs):
                yield Progress(0, 1, f"loading model {index + 1}/{len(specs)}: {spec.path.name}")
                members += load_models([spec])
            return (yield from predict_volume(volume, members, output=output, **settings))

        def progress(report: Progress) -> None:
            import time

            now = time.perf_counter()
            if now - self._last_refresh > REFRESH_INTERVAL_S or report.done >= report.total:
                self._last_refresh = now
                layer.refresh()

        def done(result: Any) -> None:
            self.last_result = result
            layer.refresh()
            layer.metadata["prediction"] = {**result.settings, "complete": result.complete}
            if not result.complete:
                layer.name = f"{name} (partial)"
            self._log(
                f"{image_layer.name}: {result.elapsed_s:.1f}s, {result.tiles_run} tiles run, "
                f"{result.tiles_skipped} skipped (air), {result.voxels_per_s / 1e6:.2f} Mvox/s"
            )

        def cancelled() -> None:
            layer.name = f"{name} (partial)"
            layer.metadata["prediction"] = {**settings, "complete": False}
            self._log(f"{image_layer.name}: cancelled; the probability layer is partial")

        def failed(error: BaseException) -> None:
            self._log(f"{image_layer.name}: failed: {error}")

        return self.task.start(
            job,
            description="inference",
            on_progress=progress,
            on_result=done,
            on_cancelled=cancelled,
            on_error=failed,
        )

    def _block_settings(self) -> dict[str, Any]:
        """Sliding-window settings of a block-wise run (its output is always uint8)."""
        return {
            "step": float(self.step.value),
            "tta_axes": self._tta_axes(),
            "batch_size": int(self.batch_size.value),
            "device": self.device.value,
            "precision": self.precision.value,
        }

    def _make_output(self, shape: tuple[int, ...], models: tuple[Any, ...] | list[Any] = ()) -> Any:
        """An in-memory array, or a zarr array at the chosen path, of the output dtype.

        The path is checked first (core.outputs): never a file a layer was opened from or a model, and
        an existing store is replaced (``mode="w"`` deletes it) only when *replace* is ticked.
        """
        dtype = np.dtype(self.output_dtype.value)
        target = str(self.output_zarr.value or "").strip()
        if target in ("", "."):
            return np.zeros(shape, dtype=dtype)
        import zarr

        from napari_vesuvius.core.outputs import check_output_path

        opened = [getattr(layer.source, "path", None) for layer in self.viewer.layers]
        opened += [layer.metadata.get("path") for layer in self.viewer.layers]
        check_output_path(
            target, inputs=[*opened, *models], overwrite=self.replace_zarr.value,
            hint="tick 'replace an existing zarr output' to replace it",
        )  # fmt: skip

        chunks = tuple(min(128, n) for n in shape)
        return zarr.open_array(target, mode="w", shape=shape, dtype=dtype, chunks=chunks, fill_value=0)

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
    from napari_vesuvius.core.postprocess_choice import checkpoint_choice, common_config

    try:
        config = common_config([checkpoint_choice(spec.path) for spec in specs])
    except VesuviusError:  # the job reports a bad model with its own message
        return None
    return None if config is None else config.to_dict()
