"""Follow a run's ``metrics.jsonl`` while another process writes it (Qt-free, for the Train widget).

:class:`MetricsFollower` reads only the bytes appended since the last poll and returns complete
lines (a line still being written is kept for the next poll; malformed lines are skipped). When the
file is rewritten (a resumed run drops the records of the epoch lost in a kill) it starts over and
says so. :class:`RunSummary` folds records into what the widget shows: the run state, the epoch and
iteration counters, an ETA and the curves of training loss, validation loss, pseudo-Dice and score.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import METRICS_JSONL

#: Run states, from the last status event: no file yet, running, or how it ended.
RUN_STATES = ("not_started", "running", "cancelled", "finished", "error")


class MetricsFollower:
    """Incremental reader of a metrics.jsonl file (path of the file or of its run folder)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / METRICS_JSONL if path.is_dir() else path
        self._offset = 0
        self._partial = b""
        self._identity: tuple[int, int] | None = None
        self.was_reset = False

    def poll(self) -> list[dict[str, Any]]:
        """New complete records since the last call; sets ``was_reset`` when it started over."""
        self.was_reset = False
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
            chunk = handle.read()
        self._offset += len(chunk)
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
    return MetricsFollower(path).poll()


@dataclass
class RunSummary:
    """The state of a run as the records describe it (feed records with :meth:`update`)."""

    state: str = "not_started"
    epoch: int = 0
    epochs: int = 0
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
    _session_start: tuple[int, float] | None = field(default=None, repr=False)

    @property
    def fraction(self) -> float:
        return 0.0 if self.iterations <= 0 else min(1.0, self.iteration / self.iterations)

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
            self.iterations = self.epochs * int(record.get("iterations_per_epoch", 0))
            self.epoch = int(record.get("epoch", 0))
            self._session_start = None
            self.eta_s = None
            limit = record.get("max_minutes")
            self.time_limit_s = float(limit) * 60 if isinstance(limit, int | float) and limit > 0 else None
        elif event in ("progress", "epoch_end"):
            self.state = "running"
            self.iterations = int(record.get("iterations", self.iterations))
            self._update_eta(record)
            if event == "epoch_end":
                self._add_epoch(record)
        elif event == "postprocess":  # the clean-up choice after training: say what happened
            self.message = _postprocess_line(record)
        elif event in ("cancelled", "finished", "error"):
            self.state = str(event)
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
