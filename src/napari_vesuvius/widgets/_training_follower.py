"""The one way a dock follows a training process: the Train dock and Proofread's Retrain both use it.

:class:`TrainingFollower` starts ``napari-vesuvius train`` as its own process
(:class:`~napari_vesuvius.core.training.process.TrainingProcess`) or re-attaches to one an earlier napari
session left running (:class:`AttachedRun`, found through ``train.pid``), then follows the run folder's
``metrics.jsonl`` on a ``QTimer``: each tick reads only the bytes appended since the last one (at most
128 KiB, the rest on the next event-loop turn) and checks the process, so the GUI thread never waits on
the run. It fills the dock's progress bar and status line with the one progress line of
:func:`~napari_vesuvius.core.training.monitor.status_line` (epoch counted from 1, rate, ETA,
"validating…" during validation), cancels gracefully (SIGTERM: the run finishes its iteration and saves a
checkpoint; a second press kills), and tells the dock how the run ended (``finished``, ``cancelled``,
``killed``, ``stopped``, ``error``). :meth:`TrainingFollower.announce` shows the end as a napari
notification too, since the user may be on another tab by then.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: how often the metrics log and the process are checked (ms)
POLL_INTERVAL_MS = 500


class AttachedRun:
    """A training process started by an earlier napari session, known only by its pid (POSIX).

    Offers the part of :class:`~napari_vesuvius.core.training.process.TrainingProcess` the follower uses.
    """

    def __init__(self, run_dir: Path, pid: int) -> None:
        self.run_dir, self.pid = run_dir, pid

    @property
    def running(self) -> bool:
        from napari_vesuvius.core.training.process import running_pid

        return running_pid(self.run_dir) == self.pid

    def poll(self) -> int | None:
        """None while it runs; the exit code is unknown to us (the metrics log says how it ended)."""
        return None if self.running else -1

    def cancel(self) -> None:
        """SIGTERM: the run saves a checkpoint and its state, then exits."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        """Signal the run only while ``train.pid`` still identifies it (pid and start time): never a
        process that reused the pid."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):  # it exited in between
                os.kill(self.pid, signum)

    def log_tail(self, max_chars: int = 4000) -> str:
        from napari_vesuvius.core.training.rundir import TRAIN_LOG

        try:
            return (self.run_dir / TRAIN_LOG).read_bytes()[-max_chars:].decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class TrainingFollower:
    """Start / attach to / follow / cancel one training process for a dock.

    ``progress`` (a magicgui ProgressBar, 0–1000) and ``status`` (a Label) are the dock's own widgets;
    the follower writes them. Callbacks run on the GUI thread: ``on_update(summary, curves_changed)``
    after new records, ``on_end(outcome, process)`` once when the process has exited, ``on_state()``
    whenever running / cancelling changed (the dock updates its buttons).
    """

    def __init__(
        self,
        parent: Any,
        *,
        progress: Any,
        status: Any,
        on_update: Callable[[Any, bool], None] | None = None,
        on_end: Callable[[str, Any], None] | None = None,
        on_state: Callable[[], None] | None = None,
        interval_ms: int = POLL_INTERVAL_MS,
    ) -> None:
        from qtpy.QtCore import QTimer

        self.progress, self.status = progress, status
        self.on_update = on_update or (lambda summary, curves: None)
        self.on_end = on_end or (lambda outcome, process: None)
        self.on_state = on_state or (lambda: None)
        self.process: Any = None  # TrainingProcess or AttachedRun while one is followed
        self.watcher: Any = None  # RunWatcher of the followed run folder
        self.run_dir: Path | None = None
        self.cancelling = False
        #: how the last followed run ended: "", finished, cancelled, killed, stopped, error
        self.outcome = ""
        self._killed = False
        self._curves_version = -1
        self.timer = QTimer(parent)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)
        self._soon = QTimer(parent)  # the rest of a long log, on the next event-loop turn
        self._soon.setSingleShot(True)
        self._soon.setInterval(0)
        self._soon.timeout.connect(self.poll)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def summary(self) -> Any:
        """The followed run's :class:`~napari_vesuvius.core.training.monitor.RunSummary` (None: none)."""
        return None if self.watcher is None else self.watcher.summary

    # -- start / attach / watch ----------------------------------------------------------------------
    def start(self, config: Any, run_dir: Path, *, resume: bool = False) -> Any:
        """Start training ``config`` (None with ``resume``: the stored one) in ``run_dir``; returns the
        process. Raises ``OSError`` / ``VesuviusError`` when it cannot start (nothing is followed then)."""
        from napari_vesuvius.core.training.process import TrainingProcess

        process = TrainingProcess.start(config, run_dir, resume=resume)
        self.watch(run_dir)
        self.process, self.cancelling, self._killed, self.outcome = process, False, False, ""
        self.status.value = "starting: checking the training data…"
        self.timer.start()
        self.on_state()
        return process

    def watch(self, run_dir: Path | None, *, attach: bool = False) -> int | None:
        """Show the run in ``run_dir`` (its progress and curves so far); with ``attach``, also follow a
        training an earlier session left running there. Returns that training's pid, else None."""
        from napari_vesuvius.core.training.monitor import RunWatcher

        self.run_dir = run_dir
        self.watcher = None if run_dir is None else RunWatcher(run_dir)
        self._curves_version = -1
        self.progress.value = 0
        pid = None
        if attach and run_dir is not None and not self.running:
            from napari_vesuvius.core.training.process import running_pid

            pid = running_pid(run_dir)
            self.process = None if pid is None else AttachedRun(run_dir, pid)
            if self.process is not None:
                self.cancelling, self._killed, self.outcome = False, False, ""
                self.timer.start()
        if run_dir is not None:
            self.poll()
        self.on_state()
        return pid

    # -- cancel ------------------------------------------------------------------------------------------
    def cancel(self) -> str:
        """Graceful stop (the run saves a checkpoint); a second press kills. Returns what was done:
        ``"cancel"``, ``"kill"`` or ``""`` (nothing running)."""
        if not self.running:
            return ""
        if self.cancelling:
            self.process.kill()
            self._killed = True
            return "kill"
        self.process.cancel()
        self.cancelling = True
        self.status.value = "cancelling… (finishing the iteration and saving a checkpoint)"
        self.on_state()
        return "cancel"

    def stop(self) -> None:
        """Stop following (the process, if any, goes on: it runs in its own session)."""
        self.timer.stop()
        self._soon.stop()

    # -- following -----------------------------------------------------------------------------------------
    def poll(self) -> None:
        """Timer tick: read new metrics records, refresh progress and status, notice the process exit."""
        self._read()
        if self.process is not None and not self.process.running:
            while self._read() and self.watcher is not None and self.watcher.has_more:
                pass  # the process is gone: its last records are all there is
            self._end()
        elif self.watcher is not None and self.watcher.has_more:
            self._soon.start()

    def _read(self) -> bool:
        if self.watcher is None or not self.watcher.poll():
            return False
        from napari_vesuvius.core.training.monitor import status_line

        summary = self.watcher.summary
        self.progress.value = int(1000 * summary.fraction)
        if not self.cancelling and (summary.state != "not_started" or self.running):
            self.status.value = status_line(summary, self.watcher.rate())
        caught_up = not self.watcher.has_more  # attaching to a long log: redraw curves once, at its end
        changed = caught_up and summary.curves_version != self._curves_version
        if caught_up:
            self._curves_version = summary.curves_version
        self.on_update(summary, changed)
        return True

    def _end(self) -> None:
        """The followed process exited: work out how it ended and tell the dock."""
        process, self.process = self.process, None
        self.stop()
        self.cancelling = False
        state = self.watcher.summary.state if self.watcher is not None else "not_started"
        if state in ("running", "not_started"):  # no final record: the process did not end cleanly
            if self._killed:
                state = "killed"
            elif isinstance(process, AttachedRun):
                state = "stopped"  # not our child: its exit code is unknown
            else:
                state = "error"
        self.outcome = state
        self.on_end(state, process)
        self.on_state()

    @staticmethod
    def announce(text: str, outcome: str) -> None:
        """Tell how a run ended as a napari notification (the user may be on another tab)."""
        from napari.utils.notifications import show_error, show_info

        (show_error if outcome == "error" else show_info)(text)


class FollowsTraining:
    """The followed run's state as attributes of a dock (Train, Retrain) that owns ``self.follower``."""

    follower: TrainingFollower

    @property
    def process(self) -> Any:
        """The followed training process (TrainingProcess or AttachedRun), else None."""
        return self.follower.process

    @property
    def timer(self) -> Any:
        return self.follower.timer

    @property
    def cancelling(self) -> bool:
        return self.follower.cancelling

    @property
    def running(self) -> bool:
        return self.follower.running
