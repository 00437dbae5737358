"""Follow a run's ``metrics.jsonl`` while another process writes it (Qt-free, for the Train widget).

:class:`MetricsFollower` reads only the bytes appended since the last poll and returns complete
lines (a line still being written is kept for the next poll; malformed lines are skipped). When the
file is rewritten (a resumed run drops the records of the epoch lost in a kill) it starts over and
says so; it reads at most :data:`MAX_POLL_BYTES` per call (``has_more`` says more is waiting), so
attaching to a long run never parses megabytes in one GUI-timer tick. :class:`RunSummary` folds records
into what the docks show: the run state and phase (training, validating, choosing the clean-up), the
epoch (counted from 1, the epoch in progress) and iteration counters, an ETA and the curves of training
loss, validation loss, pseudo-Dice and score. :func:`status_line` is the one progress line both the Train
dock and Retrain show.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import METRICS_JSONL

#: Run states, from the last status event: no file yet, running, or how it ended.
RUN_STATES = ("not_started", "running", "cancelled", "finished", "error")
#: What a running run is doing: training iterations, validating an epoch, choosing the clean-up.
PHASES = ("training", "validating", "postprocess")
#: the most bytes one :meth:`MetricsFollower.poll` reads (about 1,000 records, ~10 ms to parse)
MAX_POLL_BYTES = 128 * 1024


class MetricsFollower:
    """Incremental reader of a metrics.jsonl file (path of the file or of its run folder)."""

    def __init__(self, path: str | Path, max_bytes: int = MAX_POLL_BYTES) -> None:
        path = Path(path)
        self.path = path / METRICS_JSONL if path.is_dir() else path
        self.max_bytes = int(max_bytes)
        self._offset = 0
        self._partial = b""
        self._identity: tuple[int, int] | None = None
        self.was_reset = False
        #: the last poll stopped at ``max_bytes``: more is waiting in the file
        self.has_more = False

    def poll(self) -> list[dict[str, Any]]:
        """New complete records since the last call; sets ``was_reset`` when it started over."""
        self.was_reset = self.has_more = False
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and (identity != self._identity or stat.st_size < self._offset):
            self._offset, self._partial, self.was_reset = 0, b"", True
        self._identity = identity
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(self.max_bytes) if self.max_bytes > 0 else handle.read()
        self._offset += len(chunk)
        self.has_more = self._offset < stat.st_size
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return list(parse_lines(lines))


def parse_lines(lines: Iterable[bytes | str]) -> Iterable[dict[str, Any]]:
    """JSON objects of the non-empty, well-formed lines."""
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            yield record


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics.jsonl file (or run folder); [] when there is none yet."""
    return MetricsFollower(path, max_bytes=0).poll()


@dataclass
class RunSummary:
    """The state of a run as the records describe it (feed records with :meth:`update`)."""

    state: str = "not_started"
    #: while running: training, validating or postprocess (see :data:`PHASES`)
    phase: str = "training"
    #: epochs completed (the last ``epoch_end``); :attr:`current_epoch` is the one in progress
    epoch: int = 0
    epochs: int = 0
    iterations_per_epoch: int = 0
    #: the epoch being validated (``validating`` phase)
    validating_epoch: int = 0
    iteration: int = 0
    iterations: int = 0
    message: str = ""
    #: why the run ended (``completed``, ``time_limit``, ``non_finite`` ...; "" while running or unknown)
    reason: str = ""
    best_metric: float | None = None
    best_epoch: int | None = None
    eta_s: float | None = None
    #: the run's wall-clock limit in seconds (None: none); caps the ETA
    time_limit_s: float | None = None
    curves: dict[str, list[tuple[int, float]]] = field(
        default_factory=lambda: {"train_loss": [], "val_loss": [], "pseudo_dice": [], "score": []}
    )
    #: bumped when a curve changed (an ``epoch_end``), so a plot redraws only then
    curves_version: int = 0
    _in_epoch: int = field(default=0, repr=False)
    _session_start: tuple[int, float] | None = field(default=None, repr=False)

    @property
    def fraction(self) -> float:
        return 0.0 if self.iterations <= 0 else min(1.0, self.iteration / self.iterations)

    @property
    def current_epoch(self) -> int:
        """The epoch in progress (or being validated), counted from 1."""
        epoch = max(1, self._in_epoch)
        return min(epoch, self.epochs) if self.epochs else epoch

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> RunSummary:
        summary = cls()
        summary.update(records)
        return summary

    def update(self, records: Iterable[dict[str, Any]]) -> RunSummary:
        for record in records:
            self._apply(record)
        return self

    def _apply(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if "iteration" in record and isinstance(record["iteration"], int):
            self.iteration = record["iteration"]
        if event == "started":
            self.state, self.message = "running", "; ".join(record.get("notes") or [])
            self.reason = ""
            self.epochs = int(record.get("epochs", self.epochs))
            self.iterations_per_epoch = int(record.get("iterations_per_epoch", 0))
            self.iterations = self.epochs * self.iterations_per_epoch
            self.epoch = int(record.get("epoch", 0))
            self._in_epoch = self.epoch + 1
            self.phase = "training"
            self._session_start = None
            self.eta_s = None
            limit = record.get("max_minutes")
            self.time_limit_s = float(limit) * 60 if isinstance(limit, int | float) and limit > 0 else None
        elif event in ("progress", "epoch_end"):
            self.state, self.phase = "running", "training"
            self.iterations = int(record.get("iterations", self.iterations))
            self._update_eta(record)
            if event == "epoch_end":
                self._add_epoch(record)
                self._in_epoch = self.epoch + 1
            elif isinstance(record.get("epoch"), int):
                self._in_epoch = record["epoch"]  # the epoch of the iteration just done
        elif event == "validating":  # the runner validates the epoch it just trained
            self.state, self.phase = "running", "validating"
            self.validating_epoch = self._in_epoch = int(record.get("epoch", self.epoch + 1))
        elif event == "postprocess":  # the clean-up choice after training: say what happened
            self.state, self.phase = "running", "postprocess"
            self.message = _postprocess_line(record)
        elif event in ("cancelled", "finished", "error"):
            self.state, self.phase = str(event), "training"
            self.eta_s = 0.0 if event == "finished" else None
            self.message = str(record.get("message") or record.get("reason") or event)
            self.reason = str(record.get("reason") or "")
            if event == "finished":
                self.best_metric, self.best_epoch = record.get("best_metric"), record.get("best_epoch")

    def _update_eta(self, record: dict[str, Any]) -> None:
        elapsed = record.get("elapsed")
        if not isinstance(elapsed, int | float):
            return
        if self._session_start is None:
            self._session_start = (self.iteration, float(elapsed))
            return
        done = self.iteration - self._session_start[0]
        seconds = float(elapsed) - self._session_start[1]
        if done > 0 and seconds > 0:
            self.eta_s = (self.iterations - self.iteration) * seconds / done
            if self.time_limit_s is not None:
                self.eta_s = max(0.0, min(self.eta_s, self.time_limit_s - float(elapsed)))

    def _add_epoch(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        self.epoch = epoch
        self.epochs = int(record.get("epochs", self.epochs))
        self.best_metric, self.best_epoch = record.get("best_metric"), record.get("best_epoch")
        for key, points in self.curves.items():
            value = record.get(key)
            while points and points[-1][0] >= epoch:
                points.pop()
            if isinstance(value, int | float):
                points.append((epoch, float(value)))
        self.curves_version += 1


class RunWatcher:
    """A follower plus a summary that is rebuilt when the log was rewritten."""

    def __init__(self, run_dir: str | Path) -> None:
        self.follower = MetricsFollower(run_dir)
        self.summary = RunSummary()
        self.records: list[dict[str, Any]] = []

    def poll(self) -> bool:
        """Read new records; True when anything changed."""
        new = self.follower.poll()
        if self.follower.was_reset:
            self.records, self.summary = [], RunSummary()
        if not new and not self.follower.was_reset:
            return False
        self.records.extend(new)
        self.summary.update(new)
        return True

    @property
    def has_more(self) -> bool:
        """The last poll left records in the file (poll again soon)."""
        return self.follower.has_more

    def rate(self) -> float | None:
        """Iterations per second lately (:func:`recent_rate` of the records)."""
        return recent_rate(self.records)


def recent_rate(records: Sequence[dict[str, Any]], window_s: float = 120.0) -> float | None:
    """Iterations per second over the last ``window_s`` seconds of the current session's records.

    Reads the records from the end (a long run's log is never walked whole on a GUI timer tick).
    """
    end: tuple[float, int] | None = None
    previous: tuple[float, int] | None = None  # the point before the last: the fallback start
    start: tuple[float, int] | None = None  # the earliest point inside the window
    for record in reversed(records):
        if record.get("event") == "started":
            break  # a resumed session restarts the clock
        elapsed, iteration = record.get("elapsed"), record.get("iteration")
        timed = isinstance(elapsed, int | float) and isinstance(iteration, int)
        if record.get("event") not in ("progress", "epoch_end") or not timed:
            continue
        point = (float(elapsed), int(iteration))
        if end is None:
            end = point
            continue
        previous = previous or point
        if end[0] - point[0] > window_s:
            break
        start = point
    if end is None or previous is None:
        return None
    start_time, start_iteration = start if start is not None and start[0] < end[0] else previous
    end_time, end_iteration = end
    if end_time <= start_time or end_iteration <= start_iteration:
        return None
    return (end_iteration - start_iteration) / (end_time - start_time)


def format_duration(seconds: float | None) -> str:
    """``1:02:03``, ``4:05`` or ``?``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def status_line(summary: RunSummary, rate: float | None = None) -> str:
    """The one-line progress of a run, as both docks show it.

    ``epoch 2/5 · iteration 30/250 · 1.20 it/s · ETA 1:17`` while training; ``epoch 2/5 · validating…``
    while the epoch is validated; ``choosing the clean-up…`` after training; how it ended otherwise.
    Epochs count from 1 (the epoch in progress).
    """
    if summary.state == "not_started":
        return "starting: checking the training data…"
    counters = f"iteration {summary.iteration:,}/{summary.iterations:,}"
    if summary.state == "running":
        epoch = f"epoch {summary.current_epoch}/{summary.epochs}"
        if summary.phase == "validating":
            return f"{epoch} · validating… ({counters})"
        if summary.phase == "postprocess":
            return f"choosing the clean-up on the validation volumes… ({counters})"
        eta = (summary.iterations - summary.iteration) / rate if rate else summary.eta_s
        if eta is not None and summary.time_limit_s is not None and summary.eta_s is not None:
            eta = min(eta, summary.eta_s)  # the time limit ends the run sooner
        speed = f" · {rate:.2f} it/s" if rate else ""
        return f"{epoch} · {counters}{speed} · ETA {format_duration(eta)}"
    best = ""
    if summary.best_metric is not None:
        best = f" · best {summary.best_metric:.4f} (epoch {summary.best_epoch})"
    return f"{summary.state}: {summary.iteration:,}/{summary.iterations:,} iterations{best}"


def _postprocess_line(record: dict[str, Any]) -> str:
    """One line for a ``postprocess`` record: its message, its error, or the clean-up chosen."""
    if record.get("message") or record.get("error"):
        return str(record.get("message") or record.get("error"))
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    score, base = record.get("score"), record.get("base_score")
    scores = ""
    if isinstance(score, int | float) and isinstance(base, int | float):
        scores = f" (validation score {score:.4f}; built-in defaults {base:.4f})"
    return (
        f"{record.get('checkpoint', 'checkpoint')}: clean-up T low {config.get('t_low')}, closing "
        f"z{config.get('closing_z')}/xy{config.get('closing_xy')}{scores}"
    )
