"""TaskRunner: progress inline and in napari's activity dock, errors shown once, cancel cleanup on the
worker thread (whether cancelled from the panel, the activity dock or by ``worker.quit()``)."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from napari_vesuvius.core.errors import VesuviusError, VesuviusWarning
from napari_vesuvius.core.progress import Progress


def _runner(qtbot):
    from napari_vesuvius.widgets._background import TaskRunner

    runner = TaskRunner(name="test_task")
    qtbot.addWidget(runner.native)
    return runner


def _endless(record: dict, steps: int = 100000, delay: float = 0.005):
    """A job that reports progress until closed; its finally block records the thread it ran on."""
    try:
        for done in range(steps):
            record.setdefault("started", True)
            time.sleep(delay)
            yield Progress(done, steps, "working")
        return "finished"
    finally:
        record["cleanup_thread"] = threading.current_thread()


def _finished(runner, qtbot) -> None:
    qtbot.waitUntil(lambda: not runner.running, timeout=20000)


@pytest.fixture
def notifications():
    """Every napari notification dispatched during the test."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def test_result_progress_and_activity_bar(make_napari_viewer, qtbot):
    from napari.utils.progress import progress

    make_napari_viewer()
    runner = _runner(qtbot)
    seen, results = [], []
    go_on = threading.Event()

    def job():
        yield Progress(1, 3, "first slab")
        go_on.wait(20)
        yield Progress(2, 3)
        return 42

    runner.start(
        job, description="Counting", on_result=results.append, on_progress=lambda r: seen.append(r.done)
    )
    bar = runner.activity_progress
    assert bar is not None and bar in progress._all_instances  # napari's activity dock shows it
    # the activity bar follows the job's own counts and message
    qtbot.waitUntil(lambda: (bar.n, bar.total) == (1, 3), timeout=20000)
    assert bar.desc.startswith("Counting: first slab")  # tqdm appends ": "
    assert runner.progress_bar.value == 333 and runner.status.value.startswith("Counting: 1/3")
    go_on.set()
    _finished(runner, qtbot)
    assert results == [42] and seen == [1, 2]
    assert runner.progress_bar.value == 1000 and runner.status.value.startswith("Counting: done in")
    assert runner.activity_progress is None and bar not in progress._all_instances  # closed at the end
    assert not runner.cancel_button.enabled


def test_cancel_cleans_up_on_the_worker_thread(qtbot):
    runner = _runner(qtbot)
    record: dict = {}
    cancelled: list = []

    def on_cancelled():
        # cleanup is finished before the GUI hears of the cancellation
        cancelled.append(record.get("cleanup_thread"))

    runner.start(lambda: _endless(record), description="Endless", on_cancelled=on_cancelled)
    qtbot.waitUntil(lambda: runner.reports > 2, timeout=20000)
    runner.cancel()
    _finished(runner, qtbot)
    assert record["cleanup_thread"] is not threading.main_thread()
    assert cancelled == [record["cleanup_thread"]]
    assert runner.status.value.startswith("Endless: cancelled after")
    assert runner.last_error is None and not runner.cancel_button.enabled


def test_worker_quit_ends_the_job_like_cancel(qtbot):
    runner = _runner(qtbot)
    record: dict = {}
    cancelled, results = [], []
    worker = runner.start(
        lambda: _endless(record),
        description="Endless",
        on_cancelled=lambda: cancelled.append(True),
        on_result=results.append,
    )
    qtbot.waitUntil(lambda: runner.reports > 2, timeout=20000)
    worker.quit()  # what napari does when its window closes with a job running
    _finished(runner, qtbot)
    assert record["cleanup_thread"] is not threading.main_thread()
    assert cancelled == [True] and results == []


def test_activity_dock_cancel_button_cancels_the_job(make_napari_viewer, qtbot):
    make_napari_viewer()
    runner = _runner(qtbot)
    record: dict = {}
    cancelled: list = []
    runner.start(lambda: _endless(record), description="Endless", on_cancelled=lambda: cancelled.append(1))
    qtbot.waitUntil(lambda: runner.reports > 2, timeout=20000)
    runner.activity_progress.cancel()  # the Cancel button of napari's activity dock calls this
    _finished(runner, qtbot)
    assert cancelled == [1] and record["cleanup_thread"] is not threading.main_thread()


def test_error_is_shown_exactly_once(qtbot, notifications):
    from napari.utils.notifications import NotificationSeverity

    runner = _runner(qtbot)
    errors: list = []

    def job():
        yield Progress(0, 1)
        raise VesuviusError("/data/frag.tif: not a volume")

    with qtbot.capture_exceptions() as raised:
        runner.start(job, description="Opening", on_error=errors.append)
        _finished(runner, qtbot)
        qtbot.wait(50)
    assert raised == []
    shown = [n for n in notifications if n.severity == NotificationSeverity.ERROR]
    assert [n.message for n in shown] == ["Opening failed: /data/frag.tif: not a volume"]
    assert len(errors) == 1 and runner.last_error is errors[0]
    assert runner.status.value == "Opening failed: /data/frag.tif: not a volume".replace(
        "Opening failed:", "Opening: failed —"
    )


def test_warning_is_shown_once(qtbot, notifications):
    from napari.utils.notifications import NotificationSeverity

    runner = _runner(qtbot)
    received: list = []

    def job():
        for _ in range(2):  # the same warning twice: one notification
            warnings.warn("id 3 skipped: no labels", VesuviusWarning, stacklevel=1)
            yield Progress(0, 1)
        return None

    runner.start(job, description="Scanning", on_warning=received.append)
    _finished(runner, qtbot)
    qtbot.wait(50)
    shown = [n for n in notifications if n.severity == NotificationSeverity.WARNING]
    assert [n.message for n in shown] == ["id 3 skipped: no labels"]
    assert received == ["id 3 skipped: no labels"] and runner.warnings == received


def test_long_status_wraps_without_widening(qtbot):
    runner = _runner(qtbot)
    width = runner.native.minimumSizeHint().width()
    runner.status.value = "failed — " + "/a/very/long/path" * 20
    assert runner.native.minimumSizeHint().width() <= width
