"""Following a training run: the one progress line (epochs from 1, "validating…", ETA), the incremental
metrics reader, and the follower both the Train dock and Retrain use (driven with a stand-in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_vesuvius.core.training import rundir
from napari_vesuvius.core.training.monitor import (
    MetricsFollower,
    RunSummary,
    format_duration,
    recent_rate,
    status_line,
)

STARTED = {"event": "started", "epoch": 0, "iteration": 0, "epochs": 5, "iterations_per_epoch": 20}


def _progress(iteration: int, elapsed: float) -> dict:
    epoch = (iteration - 1) // 20 + 1
    return {"event": "progress", "epoch": epoch, "epochs": 5, "iteration": iteration, "iterations": 100,
            "loss": 0.5, "elapsed": elapsed}  # fmt: skip


def _epoch_end(epoch: int, elapsed: float) -> dict:
    return {"event": "epoch_end", "epoch": epoch, "epochs": 5, "iteration": 20 * epoch, "iterations": 100,
            "train_loss": 0.5, "val_loss": 0.4, "pseudo_dice": 0.3, "elapsed": elapsed}  # fmt: skip


def test_status_line_counts_epochs_from_one_and_says_validating():
    summary = RunSummary.from_records([STARTED])
    assert status_line(summary).startswith("epoch 1/5 · iteration 0/100")
    summary.update([_progress(5, 5.0), _progress(19, 19.0)])
    line = status_line(summary, rate=1.0)
    assert line == "epoch 1/5 · iteration 19/100 · 1.00 it/s · ETA 1:21"
    summary.update([{"event": "validating", "epoch": 1, "iteration": 20, "elapsed": 20.0}])
    assert summary.phase == "validating"
    assert status_line(summary, rate=1.0) == "epoch 1/5 · validating… (iteration 20/100)"
    summary.update([_epoch_end(1, 33.0)])
    assert summary.epoch == 1 and summary.current_epoch == 2  # one done, the second in progress
    assert status_line(summary).startswith("epoch 2/5 · iteration 20/100")
    summary.update([_progress(100, 120.0), {"event": "validating", "epoch": 5, "iteration": 100}])
    assert status_line(summary).startswith("epoch 5/5 · validating…")
    summary.update([{"event": "postprocess", "message": "choosing the clean-up on 1 validation volume(s)"}])
    assert status_line(summary).startswith("choosing the clean-up")
    summary.update([{"event": "finished", "iteration": 100, "best_metric": 0.5, "best_epoch": 4}])
    assert status_line(summary) == "finished: 100/100 iterations · best 0.5000 (epoch 4)"
    assert status_line(RunSummary()).startswith("starting")


def test_a_resumed_kill_during_validation_drops_the_unfinished_validating_record(tmp_path: Path):
    log = rundir.MetricsLog(tmp_path / rundir.METRICS_JSONL)
    log.write("started", epoch=0, iteration=0, epochs=5, iterations_per_epoch=20)
    log.write("validating", epoch=1, iteration=20)
    log.write("epoch_end", epoch=1, iteration=20)
    log.write("validating", epoch=2, iteration=40)  # killed while validating epoch 2
    log.truncate_after(1)
    events = [json.loads(line)["event"] for line in log.path.read_text().splitlines()]
    assert events == ["started", "validating", "epoch_end"]


def test_metrics_follower_reads_a_long_log_in_bounded_chunks(tmp_path: Path):
    path = tmp_path / rundir.METRICS_JSONL
    lines = [json.dumps(_progress(i, float(i))) for i in range(1, 101)]
    path.write_text("\n".join(lines) + "\n")
    follower = MetricsFollower(path, max_bytes=2000)
    first = follower.poll()
    assert 0 < len(first) < 100 and follower.has_more
    records = list(first)
    while follower.has_more:
        records += follower.poll()
    assert [r["iteration"] for r in records] == list(range(1, 101)) and not follower.has_more


def test_recent_rate_and_duration():
    records = [
        {"event": "started"},
        {"event": "progress", "iteration": 10, "elapsed": 5.0},
        {"event": "progress", "iteration": 30, "elapsed": 15.0},
        {"event": "started"},  # a resumed session: its clock starts over
        {"event": "progress", "iteration": 40, "elapsed": 2.0},
        {"event": "epoch_end", "iteration": 60, "elapsed": 6.0},
    ]
    assert recent_rate(records[:3]) == pytest.approx(2.0)
    assert recent_rate(records) == pytest.approx(5.0)
    assert recent_rate(records[:2]) is None
    slow_then_fast = [{"event": "progress", "iteration": i, "elapsed": float(i)} for i in range(1, 400)]
    slow_then_fast += [
        {"event": "progress", "iteration": 400 + 10 * i, "elapsed": 400.0 + i} for i in range(200)
    ]
    assert recent_rate(slow_then_fast) == pytest.approx(10.0)  # only the last 120 s count
    assert format_duration(3723) == "1:02:03" and format_duration(65) == "1:05"
    assert format_duration(None) == "?"


def _write(log: rundir.MetricsLog, record: dict) -> None:
    log.write(record["event"], **{key: value for key, value in record.items() if key != "event"})


class _StandIn:
    """The part of a TrainingProcess the follower uses."""

    def __init__(self) -> None:
        self.running, self.cancelled, self.killed = True, False, False

    def poll(self):
        return None if self.running else 0

    def cancel(self):
        self.cancelled = True

    def kill(self):
        self.killed = True

    def log_tail(self, max_chars: int = 4000) -> str:
        return ""


def test_follower_reports_validation_epochs_and_the_end(tmp_path: Path, qtbot, monkeypatch):
    from magicgui.widgets import Label, ProgressBar
    from qtpy.QtWidgets import QWidget

    from napari_vesuvius.widgets import _training_follower
    from napari_vesuvius.widgets._training_follower import TrainingFollower

    parent = QWidget()
    qtbot.addWidget(parent)
    progress, status = ProgressBar(min=0, max=1000), Label()
    ends, updates, told = [], [], []
    monkeypatch.setattr("napari.utils.notifications.show_info", lambda text: told.append(("info", text)))
    follower = TrainingFollower(
        parent, progress=progress, status=status, on_end=lambda outcome, process: ends.append(outcome),
        on_update=lambda summary, curves: updates.append(curves),
    )  # fmt: skip
    assert follower.timer.interval() == _training_follower.POLL_INTERVAL_MS
    log = rundir.MetricsLog(tmp_path / rundir.METRICS_JSONL)
    follower.watch(tmp_path)
    follower.process = process = _StandIn()  # as start() would, without a subprocess
    _write(log, STARTED)
    follower.poll()
    assert status.value.startswith("epoch 1/5 · iteration 0/100")
    for record in (_progress(10, 10.0), _progress(20, 20.0)):
        _write(log, record)
    follower.poll()
    assert status.value.startswith("epoch 1/5 · iteration 20/100 · 1.00 it/s · ETA")
    log.write("validating", epoch=1, iteration=20)
    follower.poll()
    assert status.value == "epoch 1/5 · validating… (iteration 20/100)" and progress.value == 200
    _write(log, _epoch_end(1, 30.0))
    follower.poll()
    assert status.value.startswith("epoch 2/5") and updates[-1] is True  # curves changed: redraw
    assert follower.cancel() == "cancel" and process.cancelled and follower.cancelling
    assert status.value.startswith("cancelling")
    assert follower.cancel() == "kill" and process.killed
    log.write("finished", iteration=100, best_metric=0.5, best_epoch=1)
    process.running = False
    follower.poll()
    assert ends == ["finished"] and follower.outcome == "finished" and follower.process is None
    assert not follower.timer.isActive()
    follower.announce("Training finished", "finished")
    assert told == [("info", "Training finished")]


def test_attaching_to_a_long_log_redraws_the_curves_once(tmp_path: Path, qtbot):
    from magicgui.widgets import Label, ProgressBar
    from qtpy.QtWidgets import QWidget

    from napari_vesuvius.core.training.monitor import MAX_POLL_BYTES
    from napari_vesuvius.widgets._training_follower import TrainingFollower

    records = [STARTED] + [_epoch_end(epoch, float(epoch)) for epoch in range(1, 2001)]
    text = "".join(json.dumps(record) + "\n" for record in records)
    assert len(text) > 2 * MAX_POLL_BYTES
    (tmp_path / rundir.METRICS_JSONL).write_text(text)
    parent = QWidget()
    qtbot.addWidget(parent)
    redraws: list[int] = []

    def update(summary, curves: bool) -> None:
        if curves:
            redraws.append(len(summary.curves["train_loss"]))

    follower = TrainingFollower(
        parent, progress=ProgressBar(min=0, max=1000), status=Label(), on_update=update
    )
    follower.watch(tmp_path)  # reads one bounded chunk now, the rest on the next event-loop turns
    assert follower.watcher.has_more and redraws == []
    qtbot.waitUntil(lambda: not follower.watcher.has_more, timeout=10_000)
    assert redraws == [2000]  # one redraw, with every epoch
