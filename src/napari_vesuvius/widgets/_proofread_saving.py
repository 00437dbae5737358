"""Saving in the Proofread dock: versions in the background, the autosave timer, autosave on close.

A mixin of :class:`~.proofread_widget.ProofreadWidget` (it uses the dock's session, layer, task
runners and status). Edits are counted (paint strokes, tool results); a version save or an autosave
remembers the count it covered, so the autosave runs only while there are edits in neither.
Autosaves run on their own hidden task runner from a snapshot (painting goes on meanwhile); closing
the dock, the main window or the application autosaves synchronously.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._proofread_layers import make_close_watcher


class SavingMixin:
    """Version saves, autosave and close handling for the Proofread dock."""

    session: Any
    layer: Any
    _edits: int
    _saved_edits: int
    _autosaved_edits: int

    def _init_saving(self) -> None:
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication

        self._edits = self._saved_edits = self._autosaved_edits = 0
        #: autosave files this dock wrote (others come from an earlier, perhaps crashed, session)
        self.own_autosaves: set[Path] = set()
        self._window_watcher: Any = None
        self._autosave_timer = QTimer(self.native)
        self._autosave_timer.timeout.connect(lambda: self.autosave())
        self.native.destroyed.connect(self._on_destroyed)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.final_autosave)

    @property
    def dirty(self) -> bool:
        """True when edits are not in a saved version yet."""
        return self.session is not None and self._edits != self._saved_edits

    def current_labels(self) -> np.ndarray:
        """The proofread layer's labels (tools replace the array: keep the session pointing at it)."""
        labels = np.asarray(self.layer.data)
        self.session.labels = labels
        return labels

    def save(self, on_saved: Callable[[Path], Any] | None = None) -> Any:
        """Save the labels as the next version (background job); the original is never written."""
        from napari_vesuvius.core.proofread.autosave import discard_autosave

        if self.session is None:
            self.say("nothing to save: accept a prediction first")
            return None
        if self.task.running:
            self.say("busy: wait for the running job")
            return None
        session, image = self.session, self.session_image
        labels, edits = np.array(self.current_labels(), copy=True), self._edits

        def saved(path: Path) -> None:
            self._saved_edits = edits
            if self._edits == edits and session is self.session:
                discard_autosave(session.target)  # its contents are in the version now
                self._autosaved_edits = edits
                self._target_changed()
            self.say(f"saved {path.name} in {path.parent} (the original is untouched)")
            self.retrain.add_corrected(session, path, image)
            if on_saved is not None:
                on_saved(path)

        return self.task.start(lambda: session.iter_save(labels), description="save version", on_result=saved)

    def _needs_autosave(self) -> bool:
        return self.session is not None and self._edits not in (self._saved_edits, self._autosaved_edits)

    def autosave(self) -> Any:
        """Timer tick: write the autosave file in the background when there are unsaved edits."""
        if not self._needs_autosave() or self.autosave_task.running or self.task.running:
            return None
        session, labels, edits = self.session, np.array(self.current_labels(), copy=True), self._edits

        def job() -> Generator[Progress, None, Path]:
            yield Progress(0, 1, "autosaving")
            return session.autosave(labels)

        def done(path: Path) -> None:
            self._autosaved_edits = edits
            self.own_autosaves.add(path)
            self.restore_button.enabled = True
            self.status.value = f"autosaved {time.strftime('%H:%M:%S')} → {path.name}"

        return self.autosave_task.start(job, description="autosave", on_result=done)

    def final_autosave(self) -> None:
        """Autosave now, synchronously (closing napari or the dock, replacing the session)."""
        if not self._needs_autosave():
            return
        try:
            self.own_autosaves.add(self.session.autosave(np.asarray(self.layer.data)))
            self._autosaved_edits = self._edits
        except Exception as error:  # closing: report, never raise into Qt
            print(f"napari-vesuvius: autosave failed: {error}", file=sys.stderr)

    def _restart_autosave_timer(self, *_: Any) -> None:
        minutes = float(self.autosave_minutes.value)
        if self.session is None or minutes <= 0:
            self._autosave_timer.stop()
            return
        self._autosave_timer.setInterval(max(100, int(minutes * 60_000)))
        self._autosave_timer.start()

    def _watch_window(self) -> None:
        """Autosave when the main window closes (dock widgets may outlive its close event)."""
        window = self.native.window()
        if self._window_watcher is None and window is not None and window is not self.native:
            self._window_watcher = make_close_watcher(self.final_autosave)
            window.installEventFilter(self._window_watcher)

    def _on_destroyed(self, *_: Any) -> None:
        from qtpy.QtWidgets import QApplication

        self.final_autosave()
        app = QApplication.instance()
        if app is not None:
            with contextlib.suppress(TypeError, RuntimeError):
                app.aboutToQuit.disconnect(self.final_autosave)
