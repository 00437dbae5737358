"""The one progress/cancel protocol used by every long-running core job.

Long jobs are written as generators that ``yield Progress(...)`` between units of work and
``return`` their result. That one shape serves every caller:

* the napari widgets run the generator in a thread worker; cancelling stops it at the next yield
  (``GeneratorExit`` is raised inside it, so ``try/finally`` blocks clean up partial output);
* the CLI drives it with :func:`run_job`, shows it with :class:`ConsoleProgress` (a bar on a terminal,
  plain lines in a log) and cancels it on SIGTERM/Ctrl-C with :class:`StopFlag`;
* tests call :func:`run_job` synchronously.
"""

from __future__ import annotations

import signal
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


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal (a bar may redraw itself with ``\\r``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ConsoleProgress:
    """Console progress for the CLI (an ``on_progress`` callback): a tqdm bar on a terminal, plain lines
    otherwise.

    Redrawing a bar with ``\\r`` is right on a terminal but turns a log file (``train.log``, a piped
    demo) into one huge line of frames, so a stream that is not a terminal gets one plain line whenever
    another ``step`` of the work is done or ``interval`` seconds have passed, and one when it finishes:
    about ``1 / step`` lines for a quick job, one per ``interval`` for a long one.
    """

    def __init__(
        self,
        label: str = "",
        stream: TextIO | None = None,
        *,
        interval: float = 30.0,
        step: float = 0.1,
        terminal: bool | None = None,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.interval = interval
        self.step = step
        self.started = time.perf_counter()
        self._bar: Any = None
        self._last_line = self.started
        self._next_fraction = step
        self._finished = False

    def __call__(self, report: Progress) -> None:
        finished = report.total > 0 and report.done >= report.total
        if self.terminal:
            self._draw_bar(report, finished)
        else:
            self._write_line(report, finished)

    def close(self) -> None:
        """End the bar (if one is drawn) with a newline."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _draw_bar(self, report: Progress, finished: bool) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(
                total=max(report.total, 0), desc=self.label, file=self.stream, dynamic_ncols=True, leave=True
            )
        bar = self._bar
        if bar.total != report.total:
            bar.total = max(report.total, 0)
        bar.n = max(report.done, 0)
        bar.set_postfix_str(report.message[:80], refresh=False)
        if finished:
            self.close()
        elif time.perf_counter() - bar.last_print_t >= bar.mininterval:  # tqdm's own redraw limit
            bar.refresh()

    def _write_line(self, report: Progress, finished: bool) -> None:
        now = time.perf_counter()
        if finished and self._finished:
            return  # the job repeats its last report: one "done" line is enough
        if not finished:
            if self._finished:  # a new job reuses this callback: count its steps afresh
                self._finished, self._next_fraction = False, self.step
            due = report.fraction >= self._next_fraction or now - self._last_line >= self.interval
            if not due:
                return
        self._finished = finished
        self._last_line = now
        while self._next_fraction <= report.fraction:
            self._next_fraction = round(self._next_fraction + self.step, 9)
        elapsed = now - self.started
        eta = ""
        if 0 < report.done < report.total:
            eta = f", ETA {elapsed / report.done * (report.total - report.done):.0f}s"
        label = f"{self.label} " if self.label else ""
        line = f"{label}[{report.done}/{report.total}] {100 * report.fraction:3.0f}% {elapsed:.0f}s{eta}"
        if report.message:
            line += f" {report.message}"
        self.stream.write(line[:200] + "\n")
        self.stream.flush()


class StopFlag:
    """A ``should_cancel`` for :func:`run_job` in a CLI process: SIGTERM/SIGINT (SIGBREAK on Windows) ask
    for a graceful stop at the next progress report; a second signal interrupts at once.

    Use as a context manager: the previous signal handlers are restored on exit.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.requested = False
        self.stream = stream
        self.previous: dict[int, Any] = {}
        names = ("SIGTERM", "SIGINT", "SIGBREAK")
        self.signals = [getattr(signal, n) for n in names if hasattr(signal, n)]

    def __enter__(self) -> StopFlag:
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        stream = self.stream if self.stream is not None else sys.stderr
        print("\nstop requested: finishing the current iteration and saving ...", file=stream, flush=True)

    def __call__(self) -> bool:
        return self.requested


def relay(job: Iterator[Progress], on_report: Callable[[Progress], Progress | None]) -> Iterator[Progress]:
    """Re-yield what ``on_report`` makes of each of ``job``'s reports (None: drop it); returns its result.

    The one wrapper for a job's reports (mapped, thinned out, or with work done before one is passed
    on). Closing this generator (cancel) closes the job too, so its ``finally`` blocks run at once.
    """
    try:
        while True:
            try:
                report = next(job)
            except StopIteration as stop:
                return stop.value
            passed = on_report(report)
            if passed is not None:
                yield passed
    finally:
        job.close()  # type: ignore[attr-defined]


def scaled(
    job: Iterator[Progress], start: int, span: int, total: int, prefix: str = ""
) -> Iterator[Progress]:
    """Re-yield a sub-job's progress mapped onto ``start .. start + span`` of ``total``; returns its result.

    Closing this generator (cancel) closes the sub-job too, so its ``finally`` blocks run at once.
    """
    return relay(
        job, lambda report: Progress(start + round(span * report.fraction), total, prefix + report.message)
    )
