"""The one helper every dock widget uses to run core jobs in the background.

A core job is a generator yielding :class:`~napari_vesuvius.core.progress.Progress` and returning its
result (see ``docs/architecture.md``). :class:`TaskRunner` is a small panel (progress bar, status line,
Cancel button) that runs such a job in a napari thread worker:

* progress reports update the bar and call ``on_progress`` on the GUI thread;
* Cancel asks the worker to stop at the next yield (the generator is closed, so its ``finally`` blocks
  clean up) and calls ``on_cancelled``;
* the result is handed to ``on_result`` on the GUI thread; exceptions are shown to the user and passed
  to ``on_error``;
* a :class:`~napari_vesuvius.core.errors.VesuviusWarning` raised by the job (input converted, ids or
  folds skipped) is shown once as a napari warning notification, kept in ``warnings`` and passed to
  ``on_warning``.

Thread contract: the job runs on a worker thread and must not touch Qt widgets or layers; all callbacks
run on the GUI thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton

from napari_vesuvius.core.progress import Progress

JobFactory = Callable[[], Generator[Progress, None, Any]]


class TaskRunner(Container):
    """Progress bar + status + Cancel button that runs one background job at a time."""

    def __init__(self, name: str = "task") -> None:
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="idle")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(
            widgets=[self.progress_bar, self.status, self.cancel_button],
            labels=False,
            name=name,
            label="progress",
        )
        self.cancel_button.changed.connect(self.cancel)
        # a dock widget closed while its job runs: stop the job, never call back into deleted widgets
        self._alive = True
        self.native.destroyed.connect(self._on_destroyed)
        #: progress reports received from the current job
        self.reports = 0
        self._worker: Any = None
        self._started = 0.0
        self._cancel_requested = False
        self.last_error: BaseException | None = None
        #: the VesuviusWarning messages of the current job
        self.warnings: list[str] = []

    @property
    def running(self) -> bool:
        return self._worker is not None

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

        started_jobs: list[Generator[Progress, None, Any]] = []

        def run_job() -> Generator[Progress, None, Any]:
            job = job_factory()
            started_jobs.append(job)
            return (yield from job)

        self._started = time.perf_counter()
        self._cancel_requested = False
        self.last_error = None
        self.warnings = []
        self.reports = 0
        self.progress_bar.value = 0
        self.status.value = f"{description}: starting"
        self.cancel_button.enabled = True
        # errors are shown once, by ``errored`` below (not re-raised on the GUI thread as well)
        worker = create_worker(run_job, _start_thread=False, _ignore_errors=True)

        def yielded(report: Progress) -> None:
            self.reports += 1
            if not self._alive:
                return
            if isinstance(report, Progress):
                self.progress_bar.value = int(1000 * report.fraction)
                elapsed = time.perf_counter() - self._started
                detail = f" — {report.message}" if report.message else ""
                self.status.value = f"{description}: {report.done}/{report.total} ({elapsed:.1f}s){detail}"
            if on_progress is not None:
                on_progress(report)

        def returned(result: Any) -> None:
            if not self._alive:
                return
            self.progress_bar.value = 1000
            self.status.value = f"{description}: done in {time.perf_counter() - self._started:.1f}s"
            if on_result is not None:
                on_result(result)

        def errored(error: BaseException) -> None:
            from napari.utils.notifications import show_error

            self.last_error = error
            if not self._alive:
                return
            self.status.value = f"{description}: failed — {error}"
            show_error(f"{description} failed: {error}")
            if on_error is not None:
                on_error(error)

        def aborted() -> None:
            # the worker stopped at a yield without closing the generator: close it now so the job's
            # ``finally`` blocks (partial-output marking, temp-file removal) run at once, not at GC
            for job in started_jobs:
                job.close()
            if not self._alive:
                return
            self.status.value = f"{description}: cancelled after {time.perf_counter() - self._started:.1f}s"
            if on_cancelled is not None:
                on_cancelled()

        def finished() -> None:
            self._worker = None
            if not self._alive:
                return
            self.cancel_button.enabled = False
            if on_finished is not None:
                on_finished()

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
        self._worker = worker
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
