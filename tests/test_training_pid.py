"""``train.pid``: a training process is recognised by pid *and* start time, so a stale file left by a
killed run never makes anyone signal an unrelated process that reused the pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from napari_vesuvius.core.training import rundir
from napari_vesuvius.core.training.process import (
    process_identity,
    remove_pid_file,
    running_pid,
    write_pid_file,
)

pytestmark = pytest.mark.skipif(os.name == "nt", reason="train.pid is POSIX only")


def test_identity_is_stable_and_tells_processes_apart():
    own = process_identity(os.getpid())
    assert own is not None and own["start"] and own["command"]
    assert process_identity(os.getpid()) == own
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = process_identity(other.pid)
        assert theirs is not None and theirs != own
    finally:
        other.kill()
        other.wait()
    assert process_identity(other.pid) is None  # reaped: no such process


def test_write_read_and_remove_own_record(tmp_path):
    path = write_pid_file(tmp_path)
    record = json.loads(path.read_text())
    assert record["pid"] == os.getpid() and record["start"] == process_identity(os.getpid())["start"]
    assert running_pid(tmp_path) == os.getpid()
    remove_pid_file(tmp_path)
    assert not path.exists() and running_pid(tmp_path) is None


@pytest.mark.parametrize(
    "content",
    [
        "{pid}\n",  # the old bare-pid format: unverifiable
        '{{"pid": {pid}, "start": "0", "command": "x"}}',  # the pid was reused by another process
        "not a record",
        '{{"pid": "{pid}"}}',
    ],
)
def test_stale_or_foreign_record_is_not_a_running_training_and_is_removed(tmp_path, content):
    path = tmp_path / rundir.PID_FILE
    path.write_text(content.format(pid=os.getpid()))  # a live process, but not the recorded one
    assert running_pid(tmp_path) is None
    assert not path.exists()


def test_record_of_a_dead_process_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "start": "1", "command": "python"}
    (tmp_path / rundir.PID_FILE).write_text(json.dumps(record))
    assert running_pid(tmp_path) is None and not (tmp_path / rundir.PID_FILE).exists()


def test_another_live_training_keeps_its_record(tmp_path):
    code = (
        "import sys, time; from napari_vesuvius.core.training.process import write_pid_file; "
        "write_pid_file(sys.argv[1]); print('ready', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        assert running_pid(tmp_path) == other.pid
        remove_pid_file(tmp_path)  # only removes this process's own record
        assert running_pid(tmp_path) == other.pid
    finally:
        other.kill()
        other.wait()
    assert running_pid(tmp_path) is None  # killed without cleaning up: now stale
    assert not (tmp_path / rundir.PID_FILE).exists()
