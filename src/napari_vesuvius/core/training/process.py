"""Run training as its own process (the CLI), as the Train widget does; Qt-free.

The child is ``python -m napari_vesuvius.cli.main train --config FILE --run-dir DIR``: it starts in
its own session / process group, so closing napari (or Ctrl-C in napari's terminal) does not reach it,
and its console output goes to ``run_dir/train.log``. :meth:`TrainingProcess.cancel` asks it to stop
gracefully (SIGTERM; CTRL_BREAK on Windows): it finishes the current iteration, saves
``checkpoint_last.pt`` + ``train_state.pt``, logs a ``cancelled`` event and exits with
:data:`EXIT_CANCELLED`. Follow its progress with :class:`~.monitor.RunWatcher`.

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


def running_pid(run_dir: str | Path) -> int | None:
    """The pid of a training process still working in ``run_dir`` (from ``train.pid``), else None.

    Lets a restarted napari find a run it started earlier (POSIX; None on Windows).
    """
    path = Path(run_dir) / rundir.PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if os.name == "nt":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
