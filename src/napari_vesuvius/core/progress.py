"""The one progress/cancel protocol used by every long-running core job.

Long jobs are written as generators that ``yield Progress(...)`` between units of work and
``return`` their result. That one shape serves every caller:

* the napari widgets run the generator in a thread worker; cancelling stops it at the next yield
  (``GeneratorExit`` is raised inside it, so ``try/finally`` blocks clean up partial output);
* the CLI drives it with :func:`run_job` and prints a console progress bar;
* tests call :func:`run_job` synchronously.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One progress report: ``done`` out of ``total`` units, with an optional message."""

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def run_job(
    job: Generator[Progress, None, T],
    on_progress: Callable[[Progress], Any] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> T:
    """Drive a job generator to completion and return its result.

    ``should_cancel`` is polled after each progress report; when it returns True the generator is
    closed (so its ``finally`` blocks run) and :class:`~napari_vesuvius.core.errors.CancelledError`
    is raised.
    """
    from .errors import CancelledError

    while True:
        try:
            report = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)
        if should_cancel is not None and should_cancel():
            job.close()
            raise CancelledError("cancelled by the user")


class ConsoleProgress:
    """A dependency-free console progress bar for the CLI (``on_progress`` callback)."""

    def __init__(self, label: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.started = time.perf_counter()
        self._last_draw = 0.0

    def __call__(self, report: Progress) -> None:
        now = time.perf_counter()
        finished = report.total > 0 and report.done >= report.total
        if not finished and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        elapsed = now - self.started
        filled = int(self.width * report.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        eta = ""
        if 0 < report.done < report.total:
            eta = f" ETA {elapsed / report.done * (report.total - report.done):5.1f}s"
        line = f"\r{self.label} [{bar}] {report.done}/{report.total} {elapsed:5.1f}s{eta} {report.message}"
        self.stream.write(line[:160].ljust(80))
        if finished:
            self.stream.write("\n")
        self.stream.flush()


def scaled(
    job: Iterator[Progress], start: int, span: int, total: int, prefix: str = ""
) -> Iterator[Progress]:
    """Re-yield a sub-job's progress mapped onto ``start .. start + span`` of ``total``; returns its result.

    Closing this generator (cancel) closes the sub-job too, so its ``finally`` blocks run at once.
    """
    try:
        while True:
            try:
                report = next(job)
            except StopIteration as stop:
                return stop.value
            yield Progress(start + round(span * report.fraction), total, prefix + report.message)
    finally:
        job.close()  # type: ignore[attr-defined]
