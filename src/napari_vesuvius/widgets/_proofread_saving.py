"""Saving in the Proofread dock: versions and autosaves in the background, restore, nothing lost on close.

A mixin of :class:`~.proofread_widget.ProofreadWidget` (it uses the dock's session, layer, task
runners and status). Edits are counted (paint strokes, tool results); a version save or an autosave
remembers the count it covered, so an autosave runs only while there are edits in neither.

When autosaves happen (only with unsaved edits):

* every few minutes (the timer; the interval's default is the ``autosave_minutes`` preference);
* when the proofreading view is hidden: napari's × only hides a dock, and switching the workbench
  to another tab hides it too — both autosave in the background;
* before another session replaces this one (Accept, Restore);
* when napari's window closes, the application quits or the dock is destroyed: synchronously, so the
  file is complete before the process exits (bounded by ``autosave.LOCK_TIMEOUT_S``).

Background autosaves write a snapshot on their own hidden task runner (painting goes on meanwhile);
a request while one runs queues the newest snapshot. Each snapshot carries a generation
(:func:`~napari_vesuvius.core.proofread.autosave.next_generation`), and the core never lets an older
snapshot replace a newer one, whatever order the writes finish in.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VesuviusError, VolumeError
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.proofread.naming import autosave_path
from napari_vesuvius.widgets._layers import layer_array
from napari_vesuvius.widgets._proofread_layers import make_event_watcher, warm_up_labels_display


@dataclass(frozen=True)
class Snapshot:
    """The labels of ``session`` after ``edits`` edits, copied at ``generation``."""

    session: Any
    labels: np.ndarray
    edits: int
    generation: int


class SavingMixin:
    """Version saves, autosaves, restore and close/hide handling for the Proofread dock."""

    session: Any
    layer: Any
    _edits: int
    _saved_edits: int
    _autosaved_edits: int

    def _init_saving(self) -> None:
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication

        self._edits = self._saved_edits = self._autosaved_edits = 0
        #: edits covered by the autosave running or queued (not yet on disk)
        self._autosaving_edits = -1
        self._queued_autosave: Snapshot | None = None
        #: autosave files this dock wrote (others come from an earlier, perhaps crashed, session)
        self.own_autosaves: set[Path] = set()
        self._window_watcher: Any = None
        self._autosave_timer = QTimer(self.native)
        self._autosave_timer.timeout.connect(lambda: self.autosave())
        self._hide_watcher = make_event_watcher({"Hide": self._view_hidden})
        self.native.installEventFilter(self._hide_watcher)
        self.native.destroyed.connect(self._on_destroyed)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.final_autosave)
        self._watch_window()

    @property
    def dirty(self) -> bool:
        """True when edits are not in a saved version yet."""
        return self.session is not None and self._edits != self._saved_edits

    def current_labels(self) -> np.ndarray:
        """The proofread layer's labels (tools replace the array: keep the session pointing at it)."""
        labels = np.asarray(self.layer.data)
        self.session.labels = labels
        return labels

    def _snapshot(self) -> Snapshot:
        from napari_vesuvius.core.proofread.autosave import next_generation

        labels = np.array(self.current_labels(), copy=True)
        return Snapshot(self.session, labels, self._edits, next_generation())

    # -- versions ----------------------------------------------------------------------------------
    def save(self, on_saved: Callable[[Path], Any] | None = None) -> Any:
        """Save the labels as the next version (background job); the original is never written.

        The job then removes the autosave unless it holds newer edits than the version."""
        from napari_vesuvius.core.proofread.autosave import discard_autosave

        if self.session is None:
            self.say("nothing to save: accept a prediction first")
            return None
        if self.task.running:
            self.say("busy: wait for the running job")
            return None
        from napari_vesuvius.core.volume.spatial import Spatial
        from napari_vesuvius.widgets._preferences import zarr_format

        snapshot, image = self._snapshot(), self.session_image
        session = snapshot.session
        # a save with nothing to copy from is placed like the image, in the preferred zarr format
        spatial = None if image is None else Spatial.from_layer(image)
        options = {"spatial": spatial, "zarr_format": zarr_format()}

        def job() -> Generator[Progress, None, Path]:
            path = yield from session.iter_save(snapshot.labels, **options)
            discard_autosave(session.target, upto=snapshot.generation)  # its contents are in the version
            return path

        def saved(path: Path) -> None:
            if session is self.session:
                self._saved_edits = snapshot.edits
                self._autosaved_edits = max(self._autosaved_edits, snapshot.edits)
                self._target_changed()
            self.say(f"saved {path.name} in {path.parent} (the original is untouched)")
            self.retrain.add_corrected(session, path, image)
            if on_saved is not None:
                on_saved(path)

        return self.task.start(job, description="save version", on_result=saved)

    # -- autosave ----------------------------------------------------------------------------------
    def _needs_autosave(self, counting_running: bool = False) -> bool:
        """Unsaved edits not in the autosave file (``counting_running``: nor in one being written)."""
        covered = {self._saved_edits, self._autosaved_edits}
        if counting_running:
            covered.add(self._autosaving_edits)
        return self.session is not None and self.layer is not None and self._edits not in covered

    def autosave(self) -> Any:
        """Write the autosave file in the background when there are unsaved edits (timer, hide,
        replacing the session); while a write runs, the newest snapshot waits for it."""
        if not self._needs_autosave(counting_running=True):
            return None
        snapshot = self._snapshot()
        self._autosaving_edits = snapshot.edits
        if self.autosave_task.running:
            self._queued_autosave = snapshot
            return None
        return self._start_autosave(snapshot)

    def _start_autosave(self, snapshot: Snapshot) -> Any:
        def job() -> Generator[Progress, None, Path | None]:
            yield Progress(0, 1, "autosaving")
            return snapshot.session.autosave(snapshot.labels, generation=snapshot.generation)

        def finished() -> None:
            queued, self._queued_autosave = self._queued_autosave, None
            if queued is not None:
                self._start_autosave(queued)
            elif snapshot.session is self.session:
                self._autosaving_edits = -1

        return self.autosave_task.start(
            job,
            description="autosave",
            on_result=lambda path: self._autosaved(snapshot, path),
            on_finished=finished,
        )

    def _autosaved(self, snapshot: Snapshot, path: Path | None) -> None:
        if path is None:  # a newer autosave of the file is on disk (or being written)
            return
        self.own_autosaves.add(path)
        if snapshot.session is self.session:
            self._autosaved_edits = max(self._autosaved_edits, snapshot.edits)
            self.restore_button.enabled = True
            self.status.value = f"autosaved {time.strftime('%H:%M:%S')} → {path.name}"

    def final_autosave(self) -> None:
        """Autosave now and wait for it (napari closing, the dock destroyed): bounded and atomic;
        a background autosave still running can no longer replace it."""
        if not self._needs_autosave():
            return
        try:
            snapshot = self._snapshot()
            path = snapshot.session.autosave(snapshot.labels, generation=snapshot.generation)
            self._autosaved(snapshot, path)
        except Exception as error:  # closing: report, never raise into Qt
            print(f"napari-vesuvius: autosave failed: {error}", file=sys.stderr)

    def _view_hidden(self) -> None:
        """The proofreading view was hidden (dock closed with ×, another workbench tab): autosave.

        Started from the event loop's next turn, not inside Qt's hide event: starting a job runs the event
        loop (napari's progress widgets), which must not happen while Qt is hiding the dock.
        """
        from qtpy.QtCore import QTimer

        with contextlib.suppress(RuntimeError):  # Qt objects already deleted at exit
            timer = getattr(self, "_after_hide", None)
            if timer is None:  # a child of the widget: never fires into a deleted one
                timer = self._after_hide = QTimer(self.native)
                timer.setSingleShot(True)
                timer.timeout.connect(self._autosave_after_hide)
            timer.start(0)

    def _autosave_after_hide(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.autosave()

    def _restart_autosave_timer(self, *_: Any) -> None:
        minutes = float(self.autosave_minutes.value)
        if self.session is None or minutes <= 0:
            self._autosave_timer.stop()
            return
        self._autosave_timer.setInterval(max(100, int(minutes * 60_000)))
        self._autosave_timer.start()

    def _watch_window(self) -> None:
        """Autosave when napari's main window closes (dock widgets may outlive its close event)."""
        if self._window_watcher is not None:
            return
        window = self.native.window()  # napari's main window once docked (no private napari API)
        if window is not None and window is not self.native:
            self._window_watcher = make_event_watcher({"Close": self.final_autosave})
            window.installEventFilter(self._window_watcher)

    def _on_destroyed(self, *_: Any) -> None:
        from qtpy.QtWidgets import QApplication

        self.final_autosave()
        app = QApplication.instance()
        if app is not None:
            with contextlib.suppress(TypeError, RuntimeError):
                app.aboutToQuit.disconnect(self.final_autosave)

    # -- restore -----------------------------------------------------------------------------------
    def restore_autosave(self) -> Any:
        """Resume the work kept in the target's autosave file (after a crash): read in the background."""
        from napari_vesuvius.core.proofread.autosave import read_autosave
        from napari_vesuvius.core.proofread.region import read_crop
        from napari_vesuvius.core.proofread.session import EditSession

        target = self.target_path()
        if target is None or self.image.value is None:
            self.say("choose the image and the target whose autosave to restore")
            return None
        if self.session is not None and self.session.target == target and self._needs_autosave():
            self.say("the open session has unsaved edits for this file: save them first")
            return None
        if self.task.running:
            self.say("busy: wait for the running job")
            return None
        self.autosave()  # the session being replaced
        image, prediction = self.image.value, self.prediction.value
        shape = tuple(int(n) for n in layer_array(image).shape)
        probability = layer_array(prediction) if self.prediction_is_probability else None

        def job() -> Generator[Progress, None, Any]:
            yield Progress(0, 2, f"reading {autosave_path(target).name}")
            saved = read_autosave(autosave_path(target))
            if saved.full_shape != shape:
                raise VolumeError(saved.path, f"saved for a volume of shape {saved.full_shape}, not {shape}")
            session = EditSession.from_autosave(saved, target)
            if probability is not None and tuple(probability.shape) == shape:
                yield Progress(1, 2, "reading the probability of the region")
                session.probability = read_crop(probability, session.box)
            warm_up_labels_display()
            return saved, session

        def restored(result: Any) -> None:
            saved, session = result
            self.own_autosaves.add(saved.path)
            self.start_session(session, image, prediction, edits=1)  # not in a version yet
            self._autosaved_edits = 1  # ... but in the autosave file
            self.say(f"restored {saved.path.name} ({time.strftime('%H:%M:%S', time.localtime(saved.saved))})")

        def failed(error: BaseException) -> None:
            if isinstance(error, VesuviusError):
                self.say(str(error))

        return self.task.start(job, description="restore autosave", on_result=restored, on_error=failed)
