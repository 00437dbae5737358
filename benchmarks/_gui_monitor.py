"""GUI-thread stall monitor with attribution: how long the GUI thread was unresponsive, and why.

A 20 ms ``QTimer`` on the GUI thread records when it fires; an interval well over 20 ms means the GUI
thread was busy (a *gap*: the user sees a frozen window for that long). A sampling thread reads the GUI
thread's Python stack every few milliseconds (``sys._current_frames()``) while a tick is overdue, and
each gap over the threshold is attributed from the samples taken inside it:

* ``plugin``: a frame of the plugin (``napari_vesuvius``) is on the stack; the innermost such frame
  is named (``module:function``): the plugin code that blocked, or that called what blocked;
* ``napari``: only napari / vispy / Qt / magicgui frames, or the GUI thread was inside Qt's C++ event
  loop (painting, OpenGL) with no Python frame of its own: napari's rendering and event handling;
* ``gc``: Python's garbage collector ran for most of the gap;
* ``other``: anything else (the benchmark's own code, or no sample at all: C code held the GIL).

Usage (on the GUI thread, with the Qt event loop running while actions wait)::

    with GuiMonitor() as monitor:
        with monitor.action("Tune slider"):
            ...
    monitor.largest_gap("Tune slider"), monitor.gaps()
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

PLUGIN_MODULES: tuple[str, ...] = ("napari_vesuvius",)
#: modules whose frames mean napari's (or its GUI stack's) own rendering and event handling
NAPARI_MODULES: tuple[str, ...] = (
    "napari", "vispy", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui",
    "app_model", "psygnal", "pytestqt", "OpenGL",
)  # fmt: skip
CAUSES = ("plugin", "napari", "gc", "other")
#: a gap is the plugin's when at least this fraction of its samples has a plugin frame on the stack
PLUGIN_SHARE = 0.25
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Gap:
    """One interval between timer ticks longer than the threshold (the GUI thread did not respond)."""

    start: float
    end: float
    cause: str = "other"
    #: the innermost plugin frame seen most often (``module:function``), or the busiest frame otherwise
    where: str = ""
    #: the innermost frame of the samples of that cause seen most often (what was running at the time)
    leaf: str = ""
    #: fraction of the samples (and of gc time) per cause
    shares: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    action: str | None = None
    #: fraction of the sampled part of the gap the GUI thread spent on a CPU (Linux; None: unknown).
    #: Low means it was waiting: for the GIL (a worker's C code or imports), a lock, or a loaded machine.
    gui_cpu: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def describe(self, with_time: bool = True) -> str:
        """``"420 ms plugin in module:function (→ leaf) [plugin 60%, napari 40%]"``."""
        where = f" in {self.where}" if self.where else ""
        leaf = f" (→ {self.leaf})" if self.leaf and self.leaf != self.where else ""
        shares = ", ".join(f"{cause} {100 * share:.0f}%" for cause, share in self.ordered_shares())
        cpu = f", GUI thread on CPU {100 * self.gui_cpu:.0f}%" if self.gui_cpu is not None else ""
        text = f"{self.cause}{where}{leaf}" + (f" [{shares}{cpu}]" if shares else "")
        return f"{1000 * self.seconds:.0f} ms {text}" if with_time else text

    def ordered_shares(self) -> list[tuple[str, float]]:
        return sorted(self.shares.items(), key=lambda item: -item[1])


def _module_of(frame: FrameType) -> str:
    return str(frame.f_globals.get("__name__", "") or "")


def _in(module: str, prefixes: Sequence[str]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


class GuiMonitor:
    """Record GUI-thread gaps (timer intervals over ``threshold_s``) and attribute each to its cause.

    Enter it on the GUI thread. ``plugin_modules`` are the module prefixes counted as the plugin.
    """

    def __init__(
        self,
        threshold_s: float = 0.1,
        tick_ms: int = 20,
        sample_s: float = 0.005,
        plugin_modules: Sequence[str] = PLUGIN_MODULES,
    ) -> None:
        self.threshold_s = threshold_s
        self.tick_ms = tick_ms
        self.sample_s = sample_s
        self.plugin_modules = tuple(plugin_modules)
        self.ticks: list[float] = []
        self._gaps: list[Gap] = []
        self._actions: list[tuple[str, float, float]] = []
        #: (time, innermost-first [(module, function)], in the event loop?, GUI thread CPU seconds or None)
        #: taken while a tick is overdue
        self._samples: list[tuple[float, list[tuple[str, str]], bool, float | None]] = []
        #: (start, end, generation, thread name) of each garbage collection
        self._gc_spans: list[tuple[float, float, int, str]] = []
        self._gc_started: float | None = None
        self._loop_site: tuple[Any, int] | None = None
        self._last_tick = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timer: Any = None
        self._gui_ident = 0
        self._gui_stat = Path("/proc/self/task/0/stat")  # set to the GUI thread's in start()
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> GuiMonitor:
        self.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def start(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self._gui_ident = threading.get_ident()
        self._gui_stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat")
        self._last_tick = time.perf_counter()
        self.ticks = [self._last_tick]
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(self.tick_ms)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        gc.callbacks.append(self._gc_callback)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample_loop, name="gui-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; gaps up to now are kept (call once more events were processed if needed)."""
        if self._timer is None:
            return
        self._timer.stop()
        self._timer = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)

    # -- recording -------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.perf_counter()
        previous = self._last_tick
        # the frame that entered the event loop (the line calling exec / processEvents): a sample whose
        # innermost frame is there means the GUI thread was in Qt's C++ code (painting, GL, layout)
        try:
            caller = sys._getframe(1)
            self._loop_site = (caller.f_code, caller.f_lineno)
        except ValueError:  # called straight from C++ with no Python caller
            self._loop_site = None
        self._last_tick = now
        self.ticks.append(now)
        if now - previous > self.threshold_s:
            self._gaps.append(self._attribute(previous, now))
        self._gc_spans = [span for span in self._gc_spans if span[1] >= previous]
        if self._samples and now - previous <= self.threshold_s:  # a short delay: its samples are not needed
            with self._lock:
                self._samples = [sample for sample in self._samples if sample[0] > now]

    def _sample_loop(self) -> None:
        overdue = 2 * self.tick_ms / 1000
        while not self._stop.wait(self.sample_s):
            now = time.perf_counter()
            if now - self._last_tick < overdue:
                continue
            frame = sys._current_frames().get(self._gui_ident)
            if frame is None:
                continue
            stack: list[tuple[str, str]] = []
            innermost_in_loop = (frame.f_code, frame.f_lineno) == self._loop_site
            depth = 0
            while frame is not None and depth < 200:
                stack.append((_module_of(frame), frame.f_code.co_name))
                frame = frame.f_back
                depth += 1
            sample = (time.perf_counter(), stack, innermost_in_loop, self._gui_cpu_seconds())
            with self._lock:
                self._samples.append(sample)

    def _gui_cpu_seconds(self) -> float | None:
        """CPU time (user + system) the GUI thread has used, from /proc (Linux; else None)."""
        try:
            fields = self._gui_stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def _gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            thread = threading.current_thread().name
            self._gc_spans.append((self._gc_started, time.perf_counter(), info.get("generation", -1), thread))
            self._gc_started = None

    # -- attribution -----------------------------------------------------------------------------
    def classify(self, stack: list[tuple[str, str]], in_loop: bool) -> tuple[str, str]:
        """(cause, frame) of one sample: ``stack`` innermost first, as ``(module, function)``."""
        for module, function in stack:
            if _in(module, self.plugin_modules):
                return "plugin", f"{module}:{function}"
        if in_loop:
            return "napari", "Qt event loop (C++: painting, OpenGL, layout)"
        for module, function in stack:
            if _in(module, NAPARI_MODULES):
                return "napari", f"{module}:{function}"
        module, function = stack[0] if stack else ("?", "?")
        return "other", f"{module}:{function}"

    def _attribute(self, start: float, end: float) -> Gap:
        """The gap ``start..end`` with its cause: the plugin when at least ``PLUGIN_SHARE`` of its samples
        have a plugin frame (it ran, or called, the blocking code), else the most sampled cause; gc when
        the collector ran for half the gap or more."""
        with self._lock:
            inside = [sample for sample in self._samples if start <= sample[0] <= end]
            self._samples = [sample for sample in self._samples if sample[0] > end]
        counts: Counter[str] = Counter()
        frames: dict[str, Counter[str]] = {cause: Counter() for cause in CAUSES}
        leaves: dict[str, Counter[str]] = {cause: Counter() for cause in CAUSES}
        for _, stack, in_loop, _ in inside:
            cause, where = self.classify(stack, in_loop)
            counts[cause] += 1
            frames[cause][where] += 1
            leaf = "Qt event loop (C++)" if in_loop else ":".join(stack[0]) if stack else "?"
            leaves[cause][leaf] += 1
        collections = [span for span in self._gc_spans if span[1] >= start and span[0] <= end]
        gc_time = sum(min(b, end) - max(a, start) for a, b, _, _ in collections)
        total = sum(counts.values())
        shares = {cause: counts[cause] / total for cause in counts} if total else {}
        gc_share = min(1.0, gc_time / (end - start))
        if gc_share > 0:
            shares = {cause: share * (1 - gc_share) for cause, share in shares.items()}
            shares["gc"] = gc_share
        gap = Gap(start, end, samples=len(inside), shares=shares)
        timed = [(t, cpu) for t, _, _, cpu in inside if cpu is not None]
        if len(timed) >= 2 and timed[-1][0] - timed[0][0] >= 0.05:
            gap.gui_cpu = min(1.0, (timed[-1][1] - timed[0][1]) / (timed[-1][0] - timed[0][0]))
        if gc_share >= 0.5:
            a, b, generation, thread = max(collections, key=lambda span: span[1] - span[0])
            gap.cause = "gc"
            gap.where = (
                f"garbage collection: {len(collections)} run(s), longest {1000 * (b - a):.0f} ms "
                f"(generation {generation}, thread {thread})"
            )
            return gap
        if not total:
            gap.cause, gap.where = "other", "no sample (C code held the GIL)"
            return gap
        if counts["plugin"] >= PLUGIN_SHARE * total:
            gap.cause = "plugin"
        else:
            gap.cause = counts.most_common(1)[0][0]
        gap.where = frames[gap.cause].most_common(1)[0][0]
        gap.leaf = leaves[gap.cause].most_common(1)[0][0]
        return gap

    # -- actions and results ---------------------------------------------------------------------
    @contextmanager
    def action(self, name: str) -> Iterator[None]:
        """Label the gaps that start while the body runs (and until ``stop_action``) with ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._actions.append((name, start, time.perf_counter()))

    def _action_of(self, gap: Gap) -> str | None:
        for name, start, end in reversed(self._actions):
            if gap.end > start and gap.start < end:
                return name
        return None

    def gaps(self, action: str | None = None) -> list[Gap]:
        """Gaps over the threshold so far (of one action when ``action`` is given), in time order."""
        for gap in self._gaps:
            gap.action = self._action_of(gap)
        return [gap for gap in self._gaps if action is None or gap.action == action]

    def largest_gap(self, action: str | None = None) -> Gap | None:
        gaps = self.gaps(action)
        return max(gaps, key=lambda gap: gap.seconds) if gaps else None

    def action_span(self, name: str) -> tuple[float, float] | None:
        """(start, end) of the last action called ``name``."""
        return next(((start, end) for label, start, end in reversed(self._actions) if label == name), None)

    def largest_interval(self, start: float | None = None, end: float | None = None) -> float:
        """The longest tick interval (seconds) ending within ``start..end``, over the threshold or not."""
        return max(
            (
                b - a
                for a, b in itertools.pairwise(self.ticks)
                if (start is None or b > start) and (end is None or b <= end)
            ),
            default=0.0,
        )
