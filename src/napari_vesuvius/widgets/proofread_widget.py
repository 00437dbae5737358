"""Proofread dock widget: accept a prediction as labels, correct them, save versions safely, retrain.

*Accept* turns the model's mask (a probability post-processed with the Tune settings, or a mask
layer) over the whole volume, the visible region or a box into an editable ``<image> proofread``
Labels layer that keeps the ignore (2) regions of the existing labels. Volumes too large to paint
are edited as an in-memory crop placed at its position. On that layer the keys **1 / 0 / 2** paint
surface / background / ignore. *Show changes* adds a layer colouring what was added, removed or
set to ignore against the accepted mask (computed in the background). *Save version* writes
``<id>.v001.tif`` (next free number) next to the original labels, which are never written; an
autosave (``<id>.autosave.tif``, atomic, never replaced by an older one) runs every few minutes while
there are unsaved edits, when this view is hidden and when napari closes, and *Restore autosave*
brings it back after a crash (:mod:`._proofread_saving`). Component tools and Retrain live in
:mod:`._proofread_tools` and :mod:`._proofread_retrain`. Everything that reads a volume (accept,
restore, changes, saves) runs in a worker: a lazy volume is never read on the GUI thread.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
)

from napari_vesuvius.core.errors import VesuviusError, VolumeError
from napari_vesuvius.core.labels import SURFACE
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.proofread.diff import diff_counts
from napari_vesuvius.core.proofread.naming import autosave_path
from napari_vesuvius.core.proofread.region import Box, format_box, full_box, parse_box
from napari_vesuvius.core.proofread.session import EditSession, check_target
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._docks import find_widget
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._layers import (
    LABELS_OPACITY,
    MODELS,
    label_colormap,
    layer_array,
    model_postprocess_of,
    models_of,
    placement,
    set_labels_layer,
)
from napari_vesuvius.widgets._preferences import preference
from napari_vesuvius.widgets._proofread_layers import (
    bind_paint_keys,
    default_target,
    diff_colormap,
    is_input_layer,
    visible_region,
    warm_up_labels_display,
)
from napari_vesuvius.widgets._proofread_retrain import RetrainPanel
from napari_vesuvius.widgets._proofread_saving import SavingMixin
from napari_vesuvius.widgets._proofread_tools import ProofreadTools
from napari_vesuvius.widgets._sections import Section, compact, primary_button, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings

if TYPE_CHECKING:
    import napari

WHOLE, VISIBLE, BOX = "whole volume", "visible region", "box"
#: wait this long after the last edit before recomputing the changes layer (ms)
DIFF_DELAY_MS = 300


class ProofreadWidget(SavingMixin, Container):
    """Accept → paint (1/0/2) → component tools → changes → save versions / autosave → retrain.

    On screen: the inputs, *Accept* and *Save version* and the status first; region, changes,
    component tools, autosave and retrain in collapsed sections below."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        from qtpy.QtCore import QTimer

        self.viewer = napari_viewer
        self.image = ComboBox(label="image (CT)", choices=self._image_choices, nullable=True)
        self.prediction = ComboBox(
            label="prediction", choices=self._prediction_choices, nullable=True,
            tooltip="a probability (post-processed with the Tune settings) or a mask layer",
        )  # fmt: skip
        self.existing = ComboBox(
            label="existing labels", choices=self._labels_choices, nullable=True,
            tooltip="its ignore (2) regions are kept; versions are saved next to its file",
        )  # fmt: skip
        self.target = FileEdit(
            label="versions of", mode="w", filter="*.tif *.tiff *.zarr",
            tooltip="the original labels: <id>.v001.tif … are saved next to it, it is never written",
        )  # fmt: skip
        self.accept_button = primary_button(
            "Accept prediction as labels", tooltip="the model's mask over the region becomes editable labels"
        )
        self.save_button = PushButton(text="Save version", tooltip="next <id>.vNNN file; the original stays")
        self.restore_button = PushButton(text="Restore autosave", enabled=False)
        keys = status_label(
            "keys on the proofread layer: <b>1</b> surface · <b>0</b> background · <b>2</b> ignore"
        )
        self.status = status_label("accept a prediction to start")
        self.task = TaskRunner(name="proofread_task")
        self.region = ComboBox(label="region", choices=[WHOLE, VISIBLE, BOX], value=WHOLE)
        self.box = LineEdit(label="box", value="", tooltip="z0:z1,y0:y1,x0:x1 (filled after accepting)")
        self.depth = SpinBox(label="visible depth", min=1, max=4096, value=64, tooltip="slices (2D view)")
        self.show_diff = CheckBox(text="show changes vs the model's mask")
        self.diff_summary = status_label()
        self.autosave_minutes = FloatSpinBox(
            label="every (min)", min=0.0, max=120.0, step=0.5, value=float(preference("autosave_minutes")),
            tooltip="0 = only when the view is hidden or napari closes",
        )  # fmt: skip
        autosave_note = status_label("also when this view is hidden or napari closes")
        self.autosave_task = TaskRunner(name="autosave_task", activity=False)  # housekeeping
        self.diff_task = TaskRunner(name="diff_task", activity=False)
        self.tools = ProofreadTools(self)
        self.retrain = RetrainPanel(self, persist=persist)
        self.region_section = Section("Region", [self.region, self.box, self.depth])
        self.sections = [
            self.region_section,
            Section("Changes vs the model's mask", [self.show_diff, self.diff_summary]),
            Section("Component tools", [self.tools], labels=False),
            Section("Autosave", [self.autosave_minutes, autosave_note]),
            Section("Retrain on corrected volumes", [self.retrain], labels=False),
        ]
        super().__init__(
            widgets=[
                self.image, self.prediction, self.existing, self.target, row(self.accept_button),
                row(self.save_button, self.restore_button), keys, self.status, self.task, *self.sections,
                self.autosave_task, self.diff_task,
            ]
        )  # fmt: skip
        compact(self)
        self.autosave_task.visible = self.diff_task.visible = False
        self.session: EditSession | None = None
        self.layer: Any = None
        #: the image and prediction layers the session was accepted from
        self.session_image: Any = None
        self.session_prediction: Any = None
        self._auto_target = ""
        self._confirmed_replace: Path | None = None
        self._diff_queued = False
        self._init_saving()
        self._diff_timer = QTimer(self.native)
        self._diff_timer.setSingleShot(True)
        self._diff_timer.setInterval(DIFF_DELAY_MS)
        self._diff_timer.timeout.connect(self.update_diff)
        self.settings = WidgetSettings("proofread", enabled=persist)
        self.settings.bind(self, ["region", "depth", "autosave_minutes"])
        self.accept_button.changed.connect(self.accept)
        self.restore_button.changed.connect(self.restore_autosave)
        self.save_button.changed.connect(lambda: self.save())
        self.show_diff.changed.connect(self.update_diff)
        self.autosave_minutes.changed.connect(self._restart_autosave_timer)
        self.region.changed.connect(self._show_region)
        for widget in (self.image, self.existing):
            widget.changed.connect(self._suggest_target)
        self.target.changed.connect(self._target_changed)
        self._show_region()
        self.reset_choices()

    def primary_controls(self) -> list[Any]:
        """The controls of the step's main action: inputs, Accept, Save version, progress and status."""
        return [
            self.image, self.prediction, self.existing, self.target, self.accept_button, self.save_button,
            self.status, self.task,
        ]  # fmt: skip

    def _show_region(self, *_: Any) -> None:
        """The region section's title names the region Accept will take (seen while it is collapsed)."""
        section = self.region_section
        section.title = f"Region: {self.region.value}"
        section.expanded = section.expanded
        self.box.enabled = self.region.value == BOX
        self.depth.enabled = self.region.value == VISIBLE

    # -- choices -----------------------------------------------------------------------------------
    def _layers(self, kind: str) -> list[Any]:
        viewer = getattr(self, "viewer", None)
        if viewer is None:
            return []
        return [layer for layer in viewer.layers if type(layer).__name__ == kind and is_input_layer(layer)]

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers("Image")]

    def _prediction_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers("Image") + self._layers("Labels")]

    def _labels_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers("Labels")]

    def _suggest_target(self, *_: Any) -> None:
        """Fill the target from the labels' (else the image's) file unless the user typed one."""
        current = str(self.target.value or "").strip()
        if current not in ("", ".", self._auto_target):
            return
        suggested = default_target(self.existing.value, self.image.value)
        if suggested is not None:
            self._auto_target = str(suggested)
            self.target.value = suggested

    def _target_changed(self, *_: Any) -> None:
        path = self.target_path(quiet=True)
        self.restore_button.enabled = path is not None and autosave_path(path).is_file()

    def target_path(self, quiet: bool = False) -> Path | None:
        text = str(self.target.value or "").strip()
        try:
            if text in ("", "."):
                raise VolumeError(None, "choose where corrected labels go ('versions of' the original)")
            return check_target(text)
        except VesuviusError as error:
            if not quiet:
                self.say(str(error))
            return None

    def postprocess_config(self) -> tuple[Any, str]:
        """``(config, where it came from)``: the docked Tune widget, the mask's metadata, or defaults."""
        from napari_vesuvius.core.postprocess import PostprocessConfig
        from napari_vesuvius.widgets.tune_widget import TuneWidget

        tune = find_widget(self.viewer, TuneWidget)
        if tune is not None:
            try:
                return tune.config(), "the Tune widget"
            except ValueError:
                pass
        stored = (getattr(self.prediction.value, "metadata", None) or {}).get("postprocess_config")
        if stored:
            return PostprocessConfig.from_dict(stored), "the mask's settings"
        own = model_postprocess_of(self.prediction.value)
        if own is not None:
            return own, "the model's own clean-up"
        return PostprocessConfig(), "default settings"

    @property
    def prediction_is_probability(self) -> bool:
        return type(self.prediction.value).__name__ == "Image"

    # -- accept / restore --------------------------------------------------------------------------
    def _region_box(self, shape: tuple[int, ...]) -> Box:
        if self.region.value == WHOLE:
            return full_box(shape)
        if self.region.value == VISIBLE:
            return visible_region(self.viewer, self.image.value, int(self.depth.value))
        return parse_box(self.box.value, shape)

    def accept(self) -> Any:
        """Accept the prediction over the chosen region (background job) and start editing it."""
        from napari_vesuvius.core.proofread.accept import iter_accept

        if self.image.value is None or self.prediction.value is None:
            self.say("choose the image and the prediction first")
            return None
        if self.task.running:
            self.say("busy: wait for the running job")
            return None
        target = self.target_path()
        if target is None:
            return None
        image, prediction = layer_array(self.image.value), layer_array(self.prediction.value)
        labels = None if self.existing.value is None else layer_array(self.existing.value)
        shape = tuple(int(n) for n in image.shape)
        try:
            for name, array in (("prediction", prediction), ("labels", labels)):
                if array is not None and tuple(array.shape) != shape:
                    raise ValueError(f"{name} shape {tuple(array.shape)} differs from the image's {shape}")
            box = self._region_box(shape)
        except ValueError as error:
            self.say(str(error))
            return None
        if not self._earlier_autosave_confirmed(target):
            return None
        self.autosave()  # never lose the session being replaced
        config, source = self.postprocess_config()
        is_probability = self.prediction_is_probability
        image_layer, prediction_layer = self.image.value, self.prediction.value

        def job() -> Generator[Progress, None, Any]:
            result = yield from iter_accept(
                prediction, is_probability=is_probability, labels=labels, box=box, config=config,
                scan=image if config.gate_to_scan else None,
            )  # fmt: skip
            yield Progress(3, 3, "preparing the labels display")
            warm_up_labels_display()  # napari's first Labels layer would compile on the GUI thread
            return result, EditSession.from_accepted(result, target, shape)

        def accepted(outcome: Any) -> None:
            result, session = outcome
            self.start_session(session, image_layer, prediction_layer)
            how = f"post-processed with {source}" if is_probability else "mask"
            kept = f", {count(result.ignored_voxels)} ignore voxels kept" if result.ignored_voxels else ""
            self.say(f"accepted {session.describe()} ({how}{kept})")

        return self.task.start(job, description="accept prediction", on_result=accepted)

    def _earlier_autosave_confirmed(self, target: Path) -> bool:
        """An autosave this dock did not write (an earlier, maybe crashed, session) is replaced only
        once the user presses Accept a second time."""
        path = autosave_path(target)
        if not path.is_file() or path in self.own_autosaves or self._confirmed_replace == path:
            return True
        self._confirmed_replace = path
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        self.say(
            f"{path.name} holds unsaved work from {when}: Restore autosave to continue it, "
            "or press Accept again to start over (the next autosave replaces it)"
        )
        return False

    def start_session(self, session: EditSession, image: Any, prediction: Any = None, edits: int = 0) -> None:
        """Show ``session`` as the editable ``<image> proofread`` layer and bind the paint keys.

        The layer carries the prediction's models (``metadata["models"]``), so Retrain fine-tunes the
        model that made it."""
        if self.layer is not None:
            self._disconnect_layer()
        name = f"{image.name} proofread"
        metadata = dict(self.viewer.layers[name].metadata) if name in self.viewer.layers else {}
        metadata[MODELS] = models_of(prediction)
        layer = set_labels_layer(
            self.viewer, name, session.labels, **placement(image, session.origin),
            colormap=label_colormap(), opacity=LABELS_OPACITY, metadata=metadata,
        )  # fmt: skip
        session.labels = layer.data
        bind_paint_keys(layer)
        layer.selected_label, layer.mode = SURFACE, "paint"
        self.viewer.layers.selection.active = layer
        layer.events.paint.connect(self._edited)
        layer.events.data.connect(self._edited)
        self.session, self.layer = session, layer
        self.session_image, self.session_prediction = image, prediction
        self._edits, self._saved_edits, self._autosaved_edits = edits, 0, 0
        self._autosaving_edits = -1
        self.box.value = format_box(session.box)
        self.tools.set_layer(layer)
        self._restart_autosave_timer()
        self.update_diff()
        self._watch_window()

    def _disconnect_layer(self) -> None:
        for event in (self.layer.events.paint, self.layer.events.data):
            event.disconnect(self._edited)

    # -- edits and the changes layer ---------------------------------------------------------------
    def _edited(self, *_: Any) -> None:
        self._edits += 1
        if self.show_diff.value:
            self._diff_timer.start()

    def update_diff(self, *_: Any) -> Any:
        """Show (or remove) the changes layer: added / removed / to ignore / from ignore.

        Computed in the background from the live labels; an edit meanwhile recomputes it afterwards."""
        name = None if self.layer is None else f"{self.layer.name} changes"
        if not self.show_diff.value or self.session is None:
            if name is not None and name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.diff_summary.value = ""
            return None
        if self.diff_task.running:
            self._diff_queued = True
            return None
        session, labels = self.session, self.current_labels()

        def job() -> Generator[Progress, None, Any]:
            yield Progress(0, 1, "comparing with the model's mask")
            diff = session.diff(labels)
            return diff, diff_counts(diff)

        def done(result: Any) -> None:
            if session is not self.session or not self.show_diff.value:
                return
            diff, counts = result
            layer = set_labels_layer(
                self.viewer, name, diff, **placement(self.layer),
                colormap=diff_colormap(), opacity=0.9,
            )  # fmt: skip
            layer.editable = False
            self.viewer.layers.selection.active = self.layer  # keep painting on the proofread layer
            self.diff_summary.value = " · ".join(f"{kind} {count(n)}" for kind, n in counts.items())

        def finished() -> None:
            if self._diff_queued:
                self._diff_queued = False
                self.update_diff()

        return self.diff_task.start(job, description="changes", on_result=done, on_finished=finished)

    def say(self, text: str) -> None:
        self.status.value = text
