"""Tune step: threshold and clean-up controls with a live preview, Apply, and a components view.

The probability layer is post-processed with :mod:`napari_vesuvius.core.postprocess`; the network is
never re-run. A layer made by a model that chose its own clean-up in training (kept in the layer's
metadata by the Inference dock) sets the controls to that clean-up when it is first chosen.

Layout (fits the workbench's tab at 1280×800): inputs, threshold mode and its slider(s), live preview,
"Use the model's clean-up", Apply and its progress on top; morphology, components, filling, region,
the config file and the components view in collapsed sections. The preview is computed in workers
(:mod:`._tune_preview`); Apply runs the whole pipeline in the background into a mask layer.
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
    PushButton,
    SpinBox,
)

from napari_vesuvius.core.postprocess import PostprocessConfig
from napari_vesuvius.core.postprocess.config import THRESHOLD_MODES
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._components_panel import ComponentsPanel
from napari_vesuvius.widgets._format import count, percent
from napari_vesuvius.widgets._layers import (
    MASK_OPACITY,
    MODEL_POSTPROCESS,
    MODELS,
    label_colormap,
    layer_array,
    model_postprocess_of,
    models_of,
    place_like,
    placement,
)
from napari_vesuvius.widgets._sections import Section, compact, primary_button, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._tune_preview import LivePreview, is_preview

if TYPE_CHECKING:
    import napari

MODEL_BUTTON_TOOLTIP = (
    "Set every control to the clean-up the model behind this layer chose on its validation volumes"
)


def _image_layers(widget: Any) -> list[Any]:
    from napari.layers import Image

    viewer = getattr(widget, "_vesuvius_viewer", None)
    if viewer is None:
        return []
    return [layer for layer in viewer.layers if isinstance(layer, Image) and not is_preview(layer)]


def _shown(value: Any) -> str:
    """A setting as the controls show it: floats with 2 decimals, switches as on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value < 0.1 else f"{value:.2f}"
    return str(value)


class TuneWidget(Container):
    """Threshold and clean-up controls, live preview, Apply and the components view."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        self.viewer = napari_viewer
        defaults = PostprocessConfig()
        self.probability = ComboBox(label="probability", choices=self._probability_choices, nullable=True)
        self.ct = ComboBox(
            label="CT (scan)",
            choices=self._probability_choices,
            nullable=True,
            tooltip="the CT volume: voxels where it is 0 lie outside the scan (see Region below)",
        )
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
        self.model_button = PushButton(text="Use the model's clean-up", tooltip=MODEL_BUTTON_TOOLTIP)
        self.live_preview = CheckBox(text="live preview", value=True)
        self.preview_info = status_label(name="preview_info")
        self.apply_button = primary_button(
            "Apply (full volume)", tooltip="run the clean-up on the whole volume into a mask layer"
        )
        self.config_path = FileEdit(label="config", mode="w", filter="*.json")
        self.save_button = PushButton(text="Save config")
        self.load_button = PushButton(text="Load config")
        self.message = status_label(name="message")
        self.task = TaskRunner(name="tune_task")
        self.components = ComponentsPanel(napari_viewer)
        self._parameter_names = [
            "threshold_mode", "threshold", "percentile_fraction", "t_low", "t_high", "opening_z",
            "opening_xy", "closing_z", "closing_xy", "dust_size", "keep_largest", "fill_holes",
            "fill_cavities", "margin", "gate_to_scan",
        ]  # fmt: skip
        self.sections = {
            "morphology": Section(
                "Morphology (opening, closing)",
                [self.opening_z, self.opening_xy, self.closing_z, self.closing_xy],
                tooltip="ellipsoid radii in voxels; 0 switches a step off",
            ),
            "components": Section("Components (dust, keep k largest)", [self.dust_size, self.keep_largest]),
            "filling": Section("Fill holes and cavities", [self.fill_holes, self.fill_cavities]),
            "region": Section("Region (scan gating, border margin)", [self.gate_to_scan, self.margin]),
            "config": Section(
                "Config file (save, load)", [self.config_path, row(self.save_button, self.load_button)]
            ),
            "view": Section("Components view (pick, delete, keep)", [self.components], labels=False),
        }
        self._section_of = {
            **dict.fromkeys(["opening_z", "opening_xy", "closing_z", "closing_xy"], "morphology"),
            **dict.fromkeys(["dust_size", "keep_largest"], "components"),
            **dict.fromkeys(["fill_holes", "fill_cavities"], "filling"),
            **dict.fromkeys(["gate_to_scan", "margin"], "region"),
        }
        inputs = Container(
            widgets=[
                self.probability,
                self.ct,
                self.threshold_mode,
                self.threshold,
                self.percentile_fraction,
                self.t_low,
                self.t_high,
            ],
            name="inputs",
        )
        compact(inputs)
        # labels only on the inputs: the rows and sections below span the dock's whole width
        super().__init__(
            labels=False,
            widgets=[
                inputs,
                row(self.live_preview, self.model_button),
                self.preview_info,
                self.apply_button,
                self.task,
                self.message,
                *self.sections.values(),
            ],
        )
        compact(self)
        self.preview = LivePreview(self)
        self.extend([self.preview.preview_task, self.preview.refine_task, self.preview.scan_task])
        self.native.layout().addStretch(1)  # extra height of a tall tab stays below the controls
        self._vesuvius_viewer = napari_viewer
        self._readout_decimals(self.percentile_fraction, 3)
        self.settings = WidgetSettings("tune", enabled=persist)
        self.settings.bind(self, [*self._parameter_names, "config_path"])
        #: probability layers whose model's clean-up was applied when they were first selected
        self._model_config_applied: set[int] = set()
        # first the model's clean-up of a newly chosen layer, then the preview (of the settings it set)
        self.probability.changed.connect(self._probability_selected)
        for name in [*self._parameter_names, "probability", "ct", "live_preview"]:
            getattr(self, name).changed.connect(self.preview.schedule)
        for name in ("probability", "ct", "gate_to_scan"):
            getattr(self, name).changed.connect(self.preview.ensure_scan_mask)
        self.threshold_mode.changed.connect(self._show_relevant_sliders)
        napari_viewer.dims.events.current_step.connect(self.preview.schedule)
        napari_viewer.dims.events.ndisplay.connect(self.preview.schedule)
        self.native.destroyed.connect(self._disconnect_viewer)
        self.apply_button.changed.connect(self.apply)
        self.save_button.changed.connect(self.save_config)
        self.load_button.changed.connect(self.load_config)
        self.model_button.changed.connect(self.use_model_postprocess)
        self._show_relevant_sliders()
        self.reset_choices()
        self._probability_selected()
        self.preview.ensure_scan_mask()

    @staticmethod
    def _readout_decimals(slider: FloatSlider, decimals: int) -> None:
        from qtpy.QtWidgets import QDoubleSpinBox

        readout = slider.native.findChild(QDoubleSpinBox)
        if readout is not None:
            readout.setDecimals(decimals)

    def primary_controls(self) -> list[Any]:
        """The controls of the step's main action: inputs, the relevant threshold(s), Apply, progress."""
        return [
            self.probability,
            self.ct,
            self.threshold_mode,
            *self.threshold_sliders(),
            self.live_preview,
            self.model_button,
            self.apply_button,
            self.task,
            self.message,
        ]

    # -- choices & config ------------------------------------------------------------------------
    def _probability_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in _image_layers(self)]

    def threshold_sliders(self) -> list[FloatSlider]:
        """The slider(s) of the current threshold mode (the others are hidden)."""
        return {
            "absolute": [self.threshold],
            "percentile": [self.percentile_fraction],
            "hysteresis": [self.t_low, self.t_high],
        }[self.threshold_mode.value]

    def _show_relevant_sliders(self, *_: Any) -> None:
        relevant = self.threshold_sliders()
        for slider in (self.threshold, self.percentile_fraction, self.t_low, self.t_high):
            slider.visible = slider in relevant

    def config(self) -> PostprocessConfig:
        """The post-processing config the widgets currently describe (validated)."""
        values = {name: getattr(self, name).value for name in self._parameter_names}
        return dataclasses.replace(PostprocessConfig(), **values)

    def set_config(self, config: PostprocessConfig) -> None:
        """Set every control to ``config`` (one preview follows, of the whole new config)."""
        with self.preview.held():
            for name in self._parameter_names:
                getattr(self, name).value = getattr(config, name)

    def _model_config(self) -> tuple[PostprocessConfig | None, str]:
        """The selected layer's model clean-up, or None and why there is none."""
        layer = self.probability.value
        if layer is None:
            return None, "choose a probability layer first"
        try:
            config = model_postprocess_of(layer)
        except ValueError as error:
            return None, f"the clean-up stored with {layer.name!r} is invalid: {error}"
        if config is None:
            return None, (
                f"the model behind {layer.name!r} stored no clean-up of its own "
                f"(no {MODEL_POSTPROCESS!r} in the layer's metadata; models trained with validation "
                "volumes choose one)"
            )
        return config, ""

    def use_model_postprocess(self) -> bool:
        """Set every control to the clean-up the selected layer's model chose in training.

        The message line lists what changed, and the sections holding changed controls open.
        """
        config, why = self._model_config()
        if config is None:
            self.message.value = f"Not set: {why}."
            return False
        before = self.config() if self._config_valid() else None
        self.set_config(config)
        changed = [
            name
            for name in self._parameter_names
            if before is None or getattr(before, name) != getattr(config, name)
        ]
        for name in changed:
            section = self._section_of.get(name)
            if section is not None:
                self.sections[section].expanded = True
        if changed and before is not None:
            details = ", ".join(
                f"{getattr(self, name).label or name} {_shown(getattr(before, name))} → "
                f"{_shown(getattr(config, name))}"
                for name in changed
            )
            self.message.value = f"Set the model's clean-up (chosen on its validation volumes): {details}."
        else:
            self.message.value = (
                "The controls already hold the model's clean-up (chosen on its validation volumes)."
            )
        return True

    def _config_valid(self) -> bool:
        try:
            self.config()
        except ValueError:
            return False
        return True

    def _probability_selected(self, *_: Any) -> None:
        """Start from the model's own clean-up the first time each probability layer is chosen."""
        config, why = self._model_config()
        self.model_button.enabled = config is not None
        self.model_button.tooltip = MODEL_BUTTON_TOOLTIP if config is not None else f"Disabled: {why}."
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
        except (VesuviusError, OSError, ValueError) as error:
            self.message.value = f"error: {error}"

    def load_config(self) -> None:
        from napari_vesuvius.core.errors import VesuviusError

        try:
            self.set_config(PostprocessConfig.load(Path(self.config_path.value)))
            self.message.value = f"loaded {self.config_path.value}"
        except VesuviusError as error:
            self.message.value = f"error: {error}"

    # -- preview ---------------------------------------------------------------------------------
    def _disconnect_viewer(self, *_: Any) -> None:
        self.viewer.dims.events.current_step.disconnect(self.preview.schedule)
        self.viewer.dims.events.ndisplay.disconnect(self.preview.schedule)

    @property
    def preview_name(self) -> str:
        return f"{self.probability.value.name} preview" if self.probability.value is not None else "preview"

    def update_preview(self) -> None:
        """Ask for the preview of the current settings now (computed in the background)."""
        self.preview.request()

    # -- apply -----------------------------------------------------------------------------------
    def apply(self) -> Any:
        """Run the full pipeline in the background; the result goes to the ``<probability> mask`` layer."""
        from napari_vesuvius.core.postprocess import (
            as_probability_array,
            iter_pipeline,
            labelling_without_gil,
        )

        if self.probability.value is None:
            self.message.value = "choose a probability layer first"
            return None
        if self.task.running:
            self.message.value = "Apply is already running"
            return None
        try:
            config = self.config()
        except ValueError as error:
            self.message.value = f"invalid settings: {error}"
            return None
        layer = self.probability.value
        prob = layer_array(layer)
        ct = self.preview._ct_array(prob)
        scans = self.preview.scans
        name = f"{layer.name} mask"

        def job() -> Generator[Progress, None, np.ndarray]:
            yield Progress(0, 1, "reading the probabilities")
            array = as_probability_array(prob, layer.name)
            scan = None
            if ct is not None:
                yield Progress(0, 1, "scan mask (ct > 0)")
                scan = scans.get(ct)
            with labelling_without_gil():  # the GUI stays responsive while components are labelled
                return (yield from iter_pipeline(array, config, scan_mask=scan, source=layer.name))

        def done(mask: np.ndarray) -> None:
            data = mask.astype(np.uint8)
            if name in self.viewer.layers:
                place_like(self.viewer.layers[name], layer)
                self.viewer.layers[name].data = data
            else:
                self.viewer.add_labels(
                    data,
                    name=name,
                    colormap=label_colormap(),
                    opacity=MASK_OPACITY,
                    **placement(layer),
                )
            metadata = self.viewer.layers[name].metadata
            metadata["postprocess_config"] = config.to_dict()
            models = models_of(layer)
            if models:
                metadata[MODELS] = models
            else:
                metadata.pop(MODELS, None)
            positive = int(np.count_nonzero(mask))
            self.message.value = (
                f"{name}: {count(positive)} voxels ({percent(positive / max(mask.size, 1))}) positive"
            )

        return self.task.start(job, description="post-process", on_result=done)
