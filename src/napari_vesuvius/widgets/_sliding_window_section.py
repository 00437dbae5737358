"""The sliding-window section shared by the Inference and Export docks.

One small form that edits a :class:`~napari_vesuvius.core.inference.settings.SlidingWindowSettings`:
device, precision, tile step, mirroring TTA per axis (z, y, x; all three is nnU-Net's full mirroring,
8× slower), Gaussian blending, batch size and, where the dock writes a probability, the output dtype.
Both docks show the same controls, so a setting means the same thing wherever it is chosen; the
object they build is validated by the core (a bad value is refused there, with one message).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox

from napari_vesuvius.core.inference.settings import (
    DEVICES,
    OUTPUT_DTYPES,
    PRECISIONS,
    SlidingWindowSettings,
)

#: the sub-widgets whose values the docks persist (``WidgetSettings.bind``)
PERSISTED = ("device", "precision", "step", "tta_z", "tta_y", "tta_x", "gaussian", "batch_size")


class SlidingWindowSection(Container):
    """Edit the sliding-window settings; ``output_dtype``: also offer the output dtype."""

    def __init__(self, *, output_dtype: bool = False) -> None:
        from napari_vesuvius.widgets._preferences import preference

        defaults = SlidingWindowSettings()
        device_choices = [DEVICES[0], "cpu", "cuda", "mps"]  # auto first, then the common choice
        # napari › Preferences › Vesuvius Surface Detection › Inference gives the defaults
        device, precision = preference("device"), preference("precision")
        device = device if device in device_choices else defaults.device
        precision = precision if precision in PRECISIONS else defaults.precision
        self.device = ComboBox(label="device", choices=device_choices, value=device)
        self.precision = ComboBox(label="precision", choices=list(PRECISIONS), value=precision)
        self.step = FloatSpinBox(
            label="step",
            min=0.1,
            max=1.0,
            step=0.05,
            value=defaults.step,
            tooltip="tile step as a fraction of the patch (0.5 = half a patch; smaller: more overlap)",
        )
        tip = "mirroring test-time augmentation over this axis (each axis doubles the run time)"
        self.tta_z = CheckBox(text="z", tooltip=tip)
        self.tta_y = CheckBox(text="y", tooltip=tip)
        self.tta_x = CheckBox(text="x", tooltip=tip)
        self.mirror = Container(
            widgets=[self.tta_z, self.tta_y, self.tta_x],
            layout="horizontal",
            labels=False,
            label="mirror TTA",
        )
        self.mirror.margins = (0, 0, 0, 0)
        self.gaussian = CheckBox(
            text="Gaussian blending", value=defaults.gaussian, tooltip="off: equal weights across a tile"
        )
        self.batch_size = SpinBox(
            label="batch size", min=1, max=256, value=defaults.batch_size, tooltip="tiles per forward pass"
        )
        self.output_dtype = ComboBox(label="output dtype", choices=list(OUTPUT_DTYPES), value="float16")
        self.output_dtype.visible = output_dtype
        super().__init__(
            widgets=[
                self.device,
                self.precision,
                self.step,
                self.mirror,
                self.gaussian,
                self.batch_size,
                self.output_dtype,
            ],
            labels=True,
        )
        self.margins = (0, 0, 0, 0)
        self._with_dtype = output_dtype

    @property
    def persisted(self) -> list[str]:
        """Names of the sub-widgets to persist (the dtype only where it is shown)."""
        return [*PERSISTED, *(["output_dtype"] if self._with_dtype else [])]

    def tta_axes(self) -> tuple[int, ...]:
        return tuple(axis for axis, box in enumerate((self.tta_z, self.tta_y, self.tta_x)) if box.value)

    def settings(self, **overrides: Any) -> SlidingWindowSettings:
        """The settings shown (``overrides`` replace fields, e.g. a fixed output dtype)."""
        values: dict[str, Any] = {
            "step": float(self.step.value),
            "gaussian": bool(self.gaussian.value),
            "tta_axes": self.tta_axes(),
            "batch_size": int(self.batch_size.value),
            "device": self.device.value,
            "precision": self.precision.value,
        }
        if self._with_dtype:
            values["output_dtype"] = self.output_dtype.value
        values.update(overrides)
        return SlidingWindowSettings(**values)

    def set_settings(self, settings: SlidingWindowSettings) -> None:
        """Show ``settings`` (e.g. those stored with a probability layer)."""
        base = settings.device.partition(":")[0]
        self.device.value = base if base in self.device.choices else "auto"
        self.precision.value = settings.precision
        self.step.value = settings.step
        for axis, box in enumerate((self.tta_z, self.tta_y, self.tta_x)):
            box.value = axis in settings.tta_axes
        self.gaussian.value = settings.gaussian
        self.batch_size.value = min(max(settings.batch_size, 1), 256)
        if self._with_dtype:
            self.output_dtype.value = settings.output_dtype
