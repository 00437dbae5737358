"""Tune dock widget: threshold and clean-up sliders with a live preview, Apply, and a components view.

The probability layer is post-processed with :mod:`napari_vesuvius.core.postprocess`; the network is
never re-run. A layer made by a model that chose its own clean-up in training (kept in the layer's
metadata by the Inference dock) sets the controls to that clean-up when it is first chosen. The
preview follows the sliders and the current slice (2D) or the visible region (3D, in the background);
Apply runs the whole pipeline in the background into a mask layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    PushButton,
    SpinBox,
)

from napari_vesuvius.core.postprocess import PostprocessConfig, PreviewCache, preview_region
from napari_vesuvius.core.postprocess.config import THRESHOLD_MODES
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._components_panel import ComponentsPanel
from napari_vesuvius.widgets._layers import current_slice, layer_array, model_postprocess_of
from napari_vesuvius.widgets._settings import WidgetSettings

if TYPE_CHECKING:
    import napari

PREVIEW_COLOR = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (0.1, 1.0, 0.3, 0.8)}
#: milliseconds to wait after the last slider move before recomputing the preview
PREVIEW_DELAY_MS = 40


def _image_layers(widget: Any) -> list[Any]:
    from napari.layers import Image

    viewer = getattr(widget, "_vesuvius_viewer", None)
    return [] if viewer is None else [layer for layer in viewer.layers if isinstance(layer, Image)]


class TuneWidget(Container):
    """Sliders for every post-processing parameter, live preview, Apply and the components view."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        defaults = PostprocessConfig()
        self.probability = ComboBox(label="probability", choices=self._probability_choices, nullable=True)
        self.ct = ComboBox(label="CT (scan region)", choices=self._probability_choices, nullable=True)
        self.threshold_mode = ComboBox(
            label="threshold", choices=list(THRESHOLD_MODES), value=defaults.threshold_mode
        )
        self.threshold = FloatSlider(label="absolute t", min=0, max=1, step=0.01, value=defaults.threshold)
        self.percentile_fraction = FloatSlider(
            label="positive fraction", min=0.0, max=0.5, step=0.005, value=defaults.percentile_fraction
        )
        self.t_low = FloatSlider(label="T low", min=0, max=1, step=0.01, value=defaults.t_low)
        self.t_high = FloatSlider(label="T high", min=0, max=1, step=0.01, value=defaults.t_high)
        self.opening_z = SpinBox(label="opening z", min=0, max=5, value=defaults.opening_z)
        self.opening_xy = SpinBox(label="opening xy", min=0, max=5, value=defaults.opening_xy)
        self.closing_z = SpinBox(label="closing z", min=0, max=5, value=defaults.closing_z)
        self.closing_xy = SpinBox(label="closing xy", min=0, max=5, value=defaults.closing_xy)
        self.dust_size = SpinBox(label="dust <", min=0, max=1_000_000, step=10, value=defaults.dust_size)
        self.keep_largest = SpinBox(label="keep k largest", min=0, max=10_000, value=defaults.keep_largest)
        self.fill_holes = CheckBox(text="fill 2D holes", value=defaults.fill_holes)
        self.fill_cavities = CheckBox(text="fill 3D cavities", value=defaults.fill_cavities)
        self.margin = SpinBox(label="border margin", min=0, max=64, value=defaults.margin)
        self.gate_to_scan = CheckBox(text="gate to scan region (ct > 0)", value=defaults.gate_to_scan)
        self.model_button = PushButton(
            text="Use the model's clean-up",
            tooltip="the settings the model behind this probability layer chose on its validation volumes",
        )
        self.live_preview = CheckBox(text="live preview", value=True)
        self.apply_button = PushButton(text="Apply (full volume)")
        self.config_path = FileEdit(label="config", mode="w", filter="*.json")
        self.save_button = PushButton(text="Save config")
        self.load_button = PushButton(text="Load config")
        self.message = Label(value="")
        self.task = TaskRunner(name="tune_task")
        # refines the live preview to the exact whole-volume result once the sliders rest (not shown)
        self.refine_task = TaskRunner(name="refine_task")
        self.components = ComponentsPanel(napari_viewer)
        self._parameter_names = [
            "threshold_mode", "threshold", "percentile_fraction", "t_low", "t_high", "opening_z",
            "opening_xy", "closing_z", "closing_xy", "dust_size", "keep_largest", "fill_holes",
            "fill_cavities", "margin", "gate_to_scan",
        ]  # fmt: skip
        super().__init__(
            widgets=[
                self.probability,
                self.ct,
                *[getattr(self, name) for name in self._parameter_names],
                self.model_button,
                self.live_preview,
                self.apply_button,
                self.config_path,
                Container(widgets=[self.save_button, self.load_button], layout="horizontal", labels=False),
                self.message,
                self.task,
                self.refine_task,
                self.components,
            ]
        )
        self._vesuvius_viewer = napari_viewer
        self.cache = PreviewCache()
        self._preview_job_running = False
        self.settings = WidgetSettings("tune", enabled=persist)
        self.settings.bind(self, [*self._parameter_names, "config_path"])
        from qtpy.QtCore import QTimer

        self._timer = QTimer(self.native)  # a child timer dies with the widget
        self._timer.setSingleShot(True)
        self._timer.setInterval(PREVIEW_DELAY_MS)
        self._timer.timeout.connect(self.update_preview)
        for name in [*self._parameter_names, "probability", "ct", "live_preview"]:
            getattr(self, name).changed.connect(self._schedule_preview)
        self.threshold_mode.changed.connect(self._show_relevant_sliders)
        napari_viewer.dims.events.current_step.connect(self._schedule_preview)
        napari_viewer.dims.events.ndisplay.connect(self._schedule_preview)
        self.native.destroyed.connect(self._disconnect_viewer)
        self.apply_button.changed.connect(self.apply)
        self.save_button.changed.connect(self.save_config)
        self.load_button.changed.connect(self.load_config)
        self.model_button.changed.connect(self.use_model_postprocess)
        #: probability layers whose model's clean-up was applied when they were first selected
        self._model_config_applied: set[int] = set()
        self.probability.changed.connect(self._probability_selected)
        self.refine_task.visible = False
        self._show_relevant_sliders()
        self.reset_choices()
        self._probability_selected()

    # -- choices & config ------------------------------------------------------------------------
    def _probability_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in _image_layers(self)]

    def _show_relevant_sliders(self, *_: Any) -> None:
        mode = self.threshold_mode.value
        self.threshold.visible = mode == "absolute"
        self.percentile_fraction.visible = mode == "percentile"
        self.t_low.visible = self.t_high.visible = mode == "hysteresis"

    def config(self) -> PostprocessConfig:
        """The post-processing config the widgets currently describe (validated)."""
        values = {name: getattr(self, name).value for name in self._parameter_names}
        return dataclasses.replace(PostprocessConfig(), **values)

    def set_config(self, config: PostprocessConfig) -> None:
        for name in self._parameter_names:
            getattr(self, name).value = getattr(config, name)

    def _model_config(self) -> PostprocessConfig | None:
        layer = self.probability.value
        if layer is None:
            return None
        try:
            return model_postprocess_of(layer)
        except ValueError as error:
            self.message.value = f"error: {error}"
            return None

    def use_model_postprocess(self) -> bool:
        """Set every control to the clean-up the selected layer's model chose in training."""
        config = self._model_config()
        if config is None:
            self.message.value = "the selected probability layer's model stored no clean-up of its own"
            return False
        self.set_config(config)
        self.message.value = (
            f"the model's own clean-up: T low {config.t_low:g}, closing z{config.closing_z}/xy"
            f"{config.closing_xy} (chosen on its validation volumes in training)"
        )
        return True

    def _probability_selected(self, *_: Any) -> None:
        """Start from the model's own clean-up the first time each probability layer is chosen."""
        config = self._model_config()
        self.model_button.enabled = config is not None
        layer = self.probability.value
        if config is not None and id(layer) not in self._model_config_applied:
            self._model_config_applied.add(id(layer))
            self.use_model_postprocess()

    def save_config(self) -> None:
        from napari_vesuvius.core.errors import VesuviusError

        path = Path(self.config_path.value)
        try:
            self.config().save(path)
            self.message.value = f"saved {path}"
        except (VesuviusError, OSError) as error:
            self.message.value = f"error: {error}"

    def load_config(self) -> None:
        from napari_vesuvius.core.errors import VesuviusError

        try:
            self.set_config(PostprocessConfig.load(Path(self.config_path.value)))
            self.message.value = f"loaded {self.config_path.value}"
        except VesuviusError as error:
            self.message.value = f"error: {error}"

    def _inputs(self) -> tuple[Any, Any]:
        """The probability array and the scan mask (``ct > 0``) or None."""
        prob = layer_array(self.probability.value)
        scan = None
        if self.ct.value is not None and self.gate_to_scan.value:
            ct = layer_array(self.ct.value)
            if tuple(ct.shape) == tuple(prob.shape):
                scan = self._scan_mask_for(ct)
        return prob, scan

    def _scan_mask_for(self, ct: Any) -> np.ndarray:
        cached = getattr(self, "_scan_cache", None)
        if cached is not None and cached[0] is ct:
            return cached[1]
        scan = np.asarray(ct) > 0
        self._scan_cache = (ct, scan)
        return scan

    # -- preview ---------------------------------------------------------------------------------
    def _schedule_preview(self, *_: Any) -> None:
        self._timer.start()

    def _disconnect_viewer(self, *_: Any) -> None:
        self.viewer.dims.events.current_step.disconnect(self._schedule_preview)
        self.viewer.dims.events.ndisplay.disconnect(self._schedule_preview)

    @property
    def preview_name(self) -> str:
        return f"{self.probability.value.name} preview" if self.probability.value is not None else "preview"

    def update_preview(self) -> None:
        """Recompute the preview for the current slice (2D) or the visible region (3D, in the background)."""
        if not self.live_preview.value or self.probability.value is None:
            self._remove_preview()
            return
        try:
            config = self.config()
        except ValueError as error:
            self.message.value = f"invalid settings: {error}"
            return
        prob, scan = self._inputs()
        if self.viewer.dims.ndisplay == 2:
            axis, index = current_slice(self.viewer)
            if not 0 <= index < prob.shape[axis]:
                return
            box = [slice(0, n) for n in prob.shape]
            box[axis] = slice(index, index + 1)
            region = preview_region(prob, box, config, scan, cache=self.cache)
            self._show_preview(region, tuple(b.start for b in box))
            self._refine(prob, scan, config)
        elif not self.task.running:
            self._preview_3d(prob, scan, config)

    def _refine(self, prob: Any, scan: Any, config: PostprocessConfig) -> None:
        """Compute the exact pipeline result in the background when the preview was approximate.

        Hysteresis, dust, keep-k and 3D cavities need the whole volume (see ``core.postprocess.preview``);
        once the result is cached, previews with the same settings are exact crops of it.
        """
        if not config.uses_global_context or self.refine_task.running:
            return
        if self.cache.result(prob, config, scan) is not None:
            return

        def job() -> Generator[Progress, None, PostprocessConfig]:
            yield Progress(0, 1, "refining preview")
            self.cache.prepare_result(prob, config, scan)
            return config

        def refined(done: PostprocessConfig) -> None:
            try:
                current = self.config()
            except ValueError:
                return
            if current == done:
                self.update_preview()
            else:  # the sliders moved meanwhile: refine the new settings
                self._schedule_preview()

        self.refine_task.start(job, description="refine preview", on_result=refined)

    def _preview_3d(self, prob: Any, scan: Any, config: PostprocessConfig) -> None:
        corners = np.asarray(self.probability.value.corner_pixels, dtype=int)
        box = [slice(int(lo), int(hi) + 1) for lo, hi in zip(corners[0], corners[1], strict=True)]

        def job() -> Generator[Progress, None, np.ndarray]:
            yield Progress(0, 1, "3D preview")
            region = preview_region(prob, box, config, scan, cache=self.cache)
            yield Progress(1, 1, "3D preview")
            return region

        self.task.start(
            job,
            description="3D preview",
            on_result=lambda region: self._show_preview(region, tuple(b.start for b in box)),
        )

    def _show_preview(self, region: np.ndarray, origin: tuple[int, ...]) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        data = region.astype(np.uint8)
        scale = tuple(self.probability.value.scale)
        translate = tuple(
            np.asarray(self.probability.value.translate) + np.asarray(origin) * np.asarray(scale)
        )
        name = self.preview_name
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.translate = translate
        else:
            self.viewer.add_labels(
                data,
                name=name,
                translate=translate,
                scale=scale,
                colormap=DirectLabelColormap(color_dict=PREVIEW_COLOR),
                opacity=0.7,
            )
        positive = float(region.mean()) if region.size else 0.0
        self.message.value = f"preview: {100 * positive:.2f}% positive in view"

    def _remove_preview(self) -> None:
        for layer in list(self.viewer.layers):
            if layer.name.endswith(" preview") and layer.name == self.preview_name:
                self.viewer.layers.remove(layer)

    # -- apply -----------------------------------------------------------------------------------
    def apply(self) -> Any:
        """Run the full pipeline in the background; the result goes to the ``<probability> mask`` layer."""
        from napari_vesuvius.core.postprocess import iter_pipeline

        if self.probability.value is None:
            self.message.value = "choose a probability layer first"
            return None
        config = self.config()
        prob, scan = self._inputs()
        layer = self.probability.value
        name = f"{layer.name} mask"

        def done(mask: np.ndarray) -> None:
            from napari_vesuvius.widgets._layers import label_colormap

            data = mask.astype(np.uint8)
            if name in self.viewer.layers:
                self.viewer.layers[name].data = data
            else:
                self.viewer.add_labels(
                    data, name=name, scale=layer.scale, translate=layer.translate, colormap=label_colormap()
                )
            self.viewer.layers[name].metadata["postprocess_config"] = config.to_dict()
            self.message.value = f"{name}: {int(mask.sum())} voxels ({100 * float(mask.mean()):.2f}%)"

        return self.task.start(
            lambda: iter_pipeline(np.asarray(prob), config, scan_mask=scan, source=layer.name),
            description="post-process",
            on_result=done,
        )
