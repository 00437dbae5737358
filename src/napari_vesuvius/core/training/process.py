"""Run training as its own process (the CLI), as the Train widget does; Qt-free.

The child is ``python -m napari_vesuvius.cli.main train --config FILE --run-dir DIR``: it starts in
its own session / process group, so closing napari (or Ctrl-C in napari's terminal) does not reach it,
and its console output goes to ``run_dir/train.log``. :meth:`TrainingProcess.cancel` asks it to stop
gracefully (SIGTERM; CTRL_BREAK on Windows): it finishes the current iteration, saves
``checkpoint_last.pt`` + ``train_state.pt``, logs a ``cancelled`` event and exits with
:data:`EXIT_CANCELLED`. Follow its progress with :class:`~.monitor.RunWatcher`.

While it trains, ``run_dir/train.pid`` records its pid, start time and command line
(:func:`write_pid_file`); :func:`running_pid` trusts the file only while the live process with that pid
still matches, so a stale file (a SIGKILLed run, a reused pid) never gets an unrelated process signalled.

Exit codes: :data:`EXIT_OK` finished (or stopped early), :data:`EXIT_ERROR` bad input or a failure
(the ``error`` event has the message), :data:`EXIT_CANCELLED` cancelled with state saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..atomic import atomic_write_text
from . import rundir
from .config import TrainConfig

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CANCELLED = 130
REQUESTED_CONFIG = "requested_config.json"


def train_command(
    run_dir: str | Path, config_file: str | Path | None = None, *, resume: bool = False, force: bool = False
) -> list[str]:
    """The command line of a training process (the current interpreter runs the CLI module)."""
    command = [sys.executable, "-m", "napari_vesuvius.cli.main", "train", "--run-dir", str(run_dir)]
    if config_file is not None:
        command += ["--config", str(config_file)]
    if resume:
        command.append("--resume")
    if force:
        command.append("--force")
    return command


class TrainingProcess:
    """A training subprocess: start, cancel gracefully, kill, and check on it."""

    def __init__(self, popen: subprocess.Popen, run_dir: Path) -> None:
        self.popen = popen
        self.run_dir = run_dir

    @classmethod
    def start(
        cls, config: TrainConfig | None, run_dir: str | Path, *, resume: bool = False, force: bool = False
    ) -> TrainingProcess:
        """Start training ``config`` in ``run_dir`` (``config`` None with ``resume``: the stored one)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_file = None
        if config is not None:
            config_file = run_dir / REQUESTED_CONFIG
            atomic_write_text(config_file, json.dumps(config.to_dict(), indent=2) + "\n")
        command = train_command(run_dir, config_file, resume=resume, force=force)
        log = open(run_dir / rundir.TRAIN_LOG, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT}
            if os.name == "nt":
                kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
            else:
                kwargs["start_new_session"] = True
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            popen = subprocess.Popen(command, env=env, **kwargs)
        finally:
            log.close()
        return cls(popen, run_dir)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def cancel(self) -> None:
        """Ask for a graceful stop (checkpoint + state saved); returns at once, see :meth:`wait`."""
        if not self.running:
            return
        if os.name == "nt":
            self.popen.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Stop at once (the run resumes from its last completed epoch)."""
        if self.running:
            self.popen.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds; the exit code, or None if still running."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def outcome(self) -> str:
        """``running``, ``finished``, ``cancelled`` or ``error`` from the exit code."""
        code = self.poll()
        if code is None:
            return "running"
        return {EXIT_OK: "finished", EXIT_CANCELLED: "cancelled"}.get(code, "error")

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of ``train.log`` (the console output), e.g. to show an error."""
        path = self.run_dir / rundir.TRAIN_LOG
        try:
            data = path.read_bytes()[-max_chars:]
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", errors="replace")


def process_identity(pid: int) -> dict[str, str] | None:
    """What tells process ``pid`` apart from a later one given the same pid: its start time and command
    line; None when no such process exists (or it cannot be inspected).

    Linux reads ``/proc/<pid>/stat`` (field 22, start time in clock ticks since boot) and
    ``/proc/<pid>/cmdline``; elsewhere psutil when installed, else ``ps`` (macOS, BSD).
    """
    proc = Path("/proc") / str(pid)
    if Path("/proc/self/stat").exists():
        try:
            stat = (proc / "stat").read_text()
            command = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and ")"; fields 3.. follow
        return {"start": fields[19], "command": command.replace(b"\0", b" ").decode(errors="replace").strip()}
    try:
        import psutil
    except ImportError:
        return _ps_identity(pid)
    try:
        process = psutil.Process(pid)
        return {"start": f"{process.create_time():.2f}", "command": " ".join(process.cmdline())}
    except (psutil.Error, OSError):
        return None


def _ps_identity(pid: int) -> dict[str, str] | None:
    """:func:`process_identity` through ``ps`` (POSIX systems without /proc or psutil)."""
    try:
        result = subprocess.run(
            ["ps", "-o", "lstart=", "-o", "command=", "-p", str(pid)],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    line = result.stdout.strip()
    if result.returncode != 0 or not line:
        return None
    parts = line.split(maxsplit=5)  # lstart is "Sun Dec  6 22:12:47 2026", then the command
    return {"start": " ".join(parts[:5]), "command": parts[5] if len(parts) > 5 else ""}


def write_pid_file(run_dir: str | Path) -> Path:
    """Record this process as the one training in ``run_dir``: ``train.pid`` holds its pid, start time
    and command line, so a later reader never mistakes an unrelated process that reused the pid for it.
    """
    pid = os.getpid()
    record = {"pid": pid, **(process_identity(pid) or {"start": None, "command": None})}
    path = Path(run_dir) / rundir.PID_FILE
    atomic_write_text(path, json.dumps(record) + "\n")
    return path


def remove_pid_file(run_dir: str | Path) -> None:
    """Remove ``train.pid`` if it records this process (another process's record is left alone)."""
    path = Path(run_dir) / rundir.PID_FILE
    record = _read_pid_record(path)
    if record is not None and record.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _read_pid_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def running_pid(run_dir: str | Path) -> int | None:
    """The pid of the training process still working in ``run_dir`` (from ``train.pid``), else None.

    Lets a restarted napari find a run it started earlier, and a second run refuse the folder (POSIX;
    None on Windows). The pid counts only while the live process with that pid has the start time and
    command line recorded by :func:`write_pid_file`: after a crash or SIGKILL the file stays behind and
    the pid may be reused by an unrelated process, which must never be signalled. Such a stale file (or
    one in an older, unverifiable format) is removed and None returned.
    """
    path = Path(run_dir) / rundir.PID_FILE
    try:
        text = path.read_text()
    except OSError:
        return None
    if os.name == "nt":
        return None
    record = _read_pid_record(path)
    if record is not None and _is_recorded_process(record):
        return int(record["pid"])
    _remove_if_unchanged(path, text)
    return None


def _is_recorded_process(record: dict) -> bool:
    """Whether the live process with the recorded pid is the recorded one (start time, command line)."""
    pid = int(record["pid"])
    if pid <= 0:
        return False
    live = process_identity(pid)
    if record.get("start") is None:  # recorded where no start time could be read: liveness is all we have
        return live is None and _alive(pid)
    if live is None or live["start"] != str(record["start"]):
        return False
    recorded_command = record.get("command")
    return not recorded_command or not live["command"] or live["command"] == recorded_command


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_if_unchanged(path: Path, text: str) -> None:
    """Remove a stale ``train.pid`` unless a new run has just rewritten it."""
    try:
        if path.read_text() == text:
            path.unlink()
    except OSError:
        pass
