"""The one helper every dock widget uses to run core jobs in the background.

A core job is a generator yielding :class:`~napari_vesuvius.core.progress.Progress` and returning its
result (see ``docs/architecture.md``). :class:`TaskRunner` is a small panel (progress bar, status line,
Cancel button) that runs such a job in a napari thread worker:

* progress reports update the bar and call ``on_progress`` on the GUI thread, and are mirrored to
  napari's activity dock (a cancelable ``napari.utils.progress`` bar, created, updated and closed on the
  GUI thread; its Cancel button cancels the job like the panel's);
* Cancel asks the worker to stop at the next yield; the worker thread then closes the generator (its
  ``finally`` blocks clean up: partial-output marking, temp files, a dask cluster's shutdown) before the
  GUI hears of it, so ``on_cancelled`` only updates widgets. ``worker.quit()`` (napari closing its
  window, a test) ends the job the same way;
* the result is handed to ``on_result`` on the GUI thread; an exception is shown once as a napari error
  notification (with its traceback) and passed to ``on_error``;
* a :class:`~napari_vesuvius.core.errors.VesuviusWarning` raised by the job (input converted, ids or
  folds skipped) is shown once as a napari warning notification, kept in ``warnings`` and passed to
  ``on_warning``.

Thread contract: the job runs on a worker thread and must not touch Qt widgets or layers; all callbacks
run on the GUI thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, ProgressBar, PushButton
from superqt.utils import GeneratorWorker

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._sections import status_label

JobFactory = Callable[[], Generator[Progress, None, Any]]

#: longest job description shown in napari's activity dock
_ACTIVITY_TEXT = 60
#: least seconds between two updates of the activity dock's bar (each one runs Qt's event loop)
_ACTIVITY_INTERVAL = 0.2


class JobWorker(GeneratorWorker):
    """A generator worker that closes its job on the worker thread when it stops early.

    superqt's worker leaves an aborted generator suspended at its last yield (its ``finally`` blocks would
    run whenever it is garbage-collected, maybe on the GUI thread). Here the generator is closed inside
    ``work``, so cleanup runs on the worker thread and is done before ``aborted``/``finished`` reach the
    GUI. It derives from superqt's worker, not napari's, whose error/warning relays would show each
    error and warning a second time.
    """

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            # a no-op after a normal return or an exception; after quit() it raises GeneratorExit at
            # the job's pending yield, running its cleanup here
            self._gen.close()


class _ActivityProgress:
    """The job's bar in napari's activity dock, or nothing when napari cannot make one.

    napari's bar widget runs ``QApplication.processEvents()`` on every value or description change, so
    it is updated at most every ``_ACTIVITY_INTERVAL`` seconds and after the panel's own callbacks; a
    report that arrives re-entrantly (or after :meth:`close`) is dropped.
    """

    def __init__(self, description: str, cancel: Callable[[], None]) -> None:
        self._bar: Any = None
        self._last = 0.0
        self._busy = False
        self._text = _short(description)
        self._cancel = cancel

    def open(self) -> None:
        """Show the bar (napari's activity dock runs the event loop while it adds it)."""
        cancel, description = self._cancel, self._text
        try:
            from napari.utils.progress import cancelable_progress

            class _Bar(cancelable_progress):
                def cancel(self) -> None:  # the activity dock's Cancel button
                    super().cancel()
                    cancel()

            # gui=True: napari draws it; never a tqdm bar on the terminal as well
            self._bar = _Bar(total=0, desc=description, gui=True)
        except Exception:  # napari's progress unavailable: the inline bar is enough
            self._bar = None

    @property
    def bar(self) -> Any:
        return self._bar

    def report(self, description: str, report: Progress) -> None:
        bar = self._bar
        total = max(int(report.total), 0)
        now = time.perf_counter()
        if bar is None or self._busy or (bar.total == total and now - self._last < _ACTIVITY_INTERVAL):
            return
        self._busy, self._last = True, now
        try:
            if bar.total != total:
                bar.total = total
            bar.n = min(int(report.done), total) if total else 0
            bar.update(0)  # emits the value event the activity dock listens to
            text = _short(f"{description}: {report.message}" if report.message else description)
            if self._bar is bar and text != self._text:
                self._text = text
                bar.set_description(text)
        finally:
            self._busy = False

    def close(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            # the activity dock may be gone already (window closed while the job ran)
            with contextlib.suppress(RuntimeError):
                bar.close()


def _short(text: str) -> str:
    return text if len(text) <= _ACTIVITY_TEXT else text[: _ACTIVITY_TEXT - 1] + "…"


class TaskRunner(Container):
    """Progress bar + status + Cancel button that runs one background job at a time.

    ``activity=False`` keeps a job out of napari's activity dock (brief housekeeping jobs).
    """

    def __init__(self, name: str = "task", activity: bool = True) -> None:
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = status_label("idle")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(
            widgets=[self.progress_bar, self.status, self.cancel_button],
            labels=False,
            name=name,
            label="progress",
        )
        self.cancel_button.changed.connect(self.cancel)
        self.activity = activity
        # a dock widget closed while its job runs: stop the job, never call back into deleted widgets
        self._alive = True
        self.native.destroyed.connect(self._on_destroyed)
        #: progress reports received from the current job
        self.reports = 0
        self._worker: Any = None
        self._started = 0.0
        self._cancel_requested = False
        self._activity: _ActivityProgress | None = None
        self.last_error: BaseException | None = None
        #: the VesuviusWarning messages of the current job
        self.warnings: list[str] = []

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def activity_progress(self) -> Any:
        """The running job's ``napari.utils.progress`` bar in the activity dock (None when idle)."""
        return None if self._activity is None else self._activity.bar

    def start(
        self,
        job_factory: JobFactory,
        *,
        description: str,
        on_result: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_cancelled: Callable[[], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> Any:
        """Start ``job_factory()`` in a thread worker; returns the worker (tests may wait on it)."""
        from napari.qt.threading import create_worker

        if self.running:
            raise RuntimeError(f"{self.name}: a job is already running")

        def run_job() -> Generator[Progress, None, Any]:
            return (yield from job_factory())

        # napari names the running task after the function (its close-window dialog lists it)
        run_job.__qualname__ = run_job.__name__ = f"napari-vesuvius: {description}"

        self._started = time.perf_counter()
        self._cancel_requested = False
        self.last_error = None
        self.warnings = []
        self.reports = 0
        self.progress_bar.value = 0
        self.status.value = f"{description}: starting"
        self.cancel_button.enabled = True
        # errors are shown once, by ``errored`` below (not re-raised on the GUI thread as well)
        worker = create_worker(run_job, _start_thread=False, _ignore_errors=True, _worker_class=JobWorker)
        cancelled: list[bool] = []

        activity = _ActivityProgress(description, self.cancel) if self.activity else None

        def yielded(report: Progress) -> None:
            self.reports += 1
            if self._alive and isinstance(report, Progress):
                self.progress_bar.value = int(1000 * report.fraction)
                elapsed = time.perf_counter() - self._started
                detail = f" — {report.message}" if report.message else ""
                self.status.value = f"{description}: {report.done}/{report.total} ({elapsed:.1f}s){detail}"
            if self._alive and on_progress is not None:
                on_progress(report)
            # last: napari's bar runs the event loop, which may deliver the job's next signals
            if activity is not None and isinstance(report, Progress):
                activity.report(description, report)

        def returned(result: Any) -> None:
            if not self._alive:
                return
            self.progress_bar.value = 1000
            self.status.value = f"{description}: done in {time.perf_counter() - self._started:.1f}s"
            if on_result is not None:
                on_result(result)

        def errored(error: BaseException) -> None:
            self.last_error = error
            _notify_error(description, error)
            if not self._alive:
                return
            self.status.value = f"{description}: failed — {error}"
            if on_error is not None:
                on_error(error)

        def aborted() -> None:
            # the job is already closed (on the worker thread); ``finished`` follows and reports it
            cancelled.append(True)

        def finished() -> None:
            self._worker = None
            if self._activity is activity:
                self._activity = None
            try:
                if not self._alive:
                    return
                self.cancel_button.enabled = False
                if cancelled:
                    elapsed = time.perf_counter() - self._started
                    self.status.value = f"{description}: cancelled after {elapsed:.1f}s"
                    if on_cancelled is not None:
                        on_cancelled()
                if on_finished is not None:
                    on_finished()  # may start the next job
            finally:
                if activity is not None:
                    activity.close()

        def warned(details: tuple[Any, ...]) -> None:
            from napari.utils.notifications import show_warning

            from napari_vesuvius.core.errors import VesuviusWarning

            message, category = details[0], details[1]
            if not (isinstance(category, type) and issubclass(category, VesuviusWarning)):
                return
            text = str(message)
            if text in self.warnings:
                return
            self.warnings.append(text)
            if not self._alive:
                return
            show_warning(text)
            if on_warning is not None:
                on_warning(text)

        worker.warned.connect(warned)
        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.aborted.connect(aborted)
        worker.finished.connect(finished)
        # the job counts as running from here: napari's activity dock runs the event loop while it adds
        # the bar, and a second click on Run must then find the runner busy
        self._worker = worker
        self._activity = activity
        if activity is not None:
            activity.open()
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running job to stop at its next progress report."""
        if self._worker is not None and not self._cancel_requested:
            self._cancel_requested = True
            if self._alive:
                self.status.value = "cancelling…"
            self._worker.quit()

    def _on_destroyed(self, *_: Any) -> None:
        self._alive = False
        self.cancel()


def _notify_error(description: str, error: BaseException) -> None:
    """Show a job's error once: a napari error notification that names the job and keeps the traceback."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    from napari_vesuvius.core.errors import VesuviusError

    notification = ErrorNotification(error)
    text = str(error) if isinstance(error, VesuviusError) else f"{type(error).__name__}: {error}"
    notification.message = f"{description} failed: {text}"
    notification_manager.dispatch(notification)
