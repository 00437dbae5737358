"""Console progress: a bar on a terminal, a bounded number of plain lines in a log file or pipe."""

from __future__ import annotations

import io
import os
import signal

import pytest

from napari_vesuvius.core.errors import CancelledError
from napari_vesuvius.core.progress import ConsoleProgress, Progress, StopFlag, run_job


def _job(total: int, repeat_last: bool = False):
    for done in range(total + 1):
        yield Progress(done, total, f"step {done}")
    if repeat_last:
        yield Progress(total, total, "finished")
    return "result"


def test_non_terminal_stream_gets_plain_lines_about_one_per_tenth():
    stream = io.StringIO()
    assert run_job(_job(1000, repeat_last=True), ConsoleProgress("demo", stream)) == "result"
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 10 %, 20 %, ... 90 %, and one line at 100 %
    assert lines[0].startswith("demo [100/1000]  10%") and "step 100" in lines[0]
    assert lines[-1].startswith("demo [1000/1000] 100%")
    assert text.endswith("\n")


def test_non_terminal_stream_prints_on_time_when_progress_is_slow(monkeypatch):
    import napari_vesuvius.core.progress as progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = ConsoleProgress("train", stream, interval=10.0)
    for done in range(100):  # one unit per 4 s, far from 10 %: the time sets the pace
        clock[0] = 4.0 * done
        bar(Progress(done, 10_000, ""))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 33  # at 12 s, 24 s, ... 396 s: the first report at least 10 s after the last line
    assert lines[0].startswith("train [3/10000]   0% 12s")
    assert "\r" not in stream.getvalue()


def test_a_reused_callback_reports_each_job():
    stream = io.StringIO()
    bar = ConsoleProgress("", stream)
    run_job(_job(5), bar)
    run_job(_job(5), bar)
    lines = stream.getvalue().splitlines()
    assert sum(line.startswith("[5/5] 100%") for line in lines) == 2
    assert len(lines) == 10


def test_terminal_gets_a_bar_that_ends_its_line():
    stream = io.StringIO()
    run_job(_job(50), ConsoleProgress("predict", stream, terminal=True))
    text = stream.getvalue()
    assert "predict" in text and "50/50" in text and text.endswith("\n")
    assert text.count("\n") == 1  # one bar, redrawn in place


def test_close_ends_an_unfinished_bar():
    stream = io.StringIO()
    bar = ConsoleProgress("x", stream, terminal=True)
    bar(Progress(3, 10, "early stop"))
    bar.close()
    assert stream.getvalue().endswith("\n") and "3/10" in stream.getvalue()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_stop_flag_cancels_at_the_next_report_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def job():
        for done in range(10):
            if done == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            seen.append(done)
            yield Progress(done, 10)

    stream = io.StringIO()
    with StopFlag(stream) as stop, pytest.raises(CancelledError):
        run_job(job(), None, stop)
    assert seen == [0, 1, 2, 3] and "stop requested" in stream.getvalue()
    assert signal.getsignal(signal.SIGTERM) is before
