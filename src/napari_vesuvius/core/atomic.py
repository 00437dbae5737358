"""Atomic file writes: write a temporary sibling, flush it to disk, then ``os.replace`` it into place.

A crash, a kill or an exception mid-write leaves the previous file untouched (and no temporary file
behind when Python gets to clean up), so nothing already saved is lost or left half-written.

**Temporary names** (:func:`temp_sibling`): ``.<name>.<random>-<pid>-<host><suffix>``, hidden, next to the
target, naming the process that writes it (``pid``) and its machine (``host``: 6 hex digits of a hash of
the host name). A process killed outright (SIGKILL, power loss) cannot remove its temporary, so every
writer first calls :func:`remove_stale_temps` for its target (``temp_sibling`` does it): it deletes the
temporaries *of that target and suffix* whose writer is gone — written on this machine by a process that
no longer exists, and untouched for :data:`STALE_MIN_AGE_S` — and nothing else: files of other names,
of other targets, of live processes or of other machines are never touched. Temporaries named by
earlier versions (``.<name>.<12 hex digits><suffix>``, no pid) are removed once a day old.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: a dead writer's temporary is removed only when nothing touched it for this long (seconds): a
#: safety margin against pid namespaces (containers) sharing the host name and the folder
STALE_MIN_AGE_S = 60.0
#: temporaries named by earlier versions carry no pid: removed only when this old (seconds)
LEGACY_MIN_AGE_S = 24 * 3600.0


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


_HOST = _host_tag()


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path`` atomically."""
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    tmp = temp_sibling(path, ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)


def temp_sibling(path: str | Path, suffix: str, *, clean: bool = True) -> Path:
    """A unique, not yet existing hidden path next to ``path`` (``.<name>.<random>-<pid>-<host><suffix>``),
    for assembling a file or folder that is later renamed onto ``path``.

    ``clean`` (default) first removes this target's stale temporaries of the same ``suffix`` (see
    :func:`remove_stale_temps`); pass False for names that may hold the only copy of data (``.old``).
    """
    path = Path(path)
    if clean:
        remove_stale_temps(path, suffix)
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}-{os.getpid()}-{_HOST}{suffix}"


def _pattern(name: str, suffix: str) -> re.Pattern[str]:
    return re.compile(
        rf"\.{re.escape(name)}\.(?:[0-9a-f]{{8}}-(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{{6}})|(?P<legacy>[0-9a-f]{{12}}))"
        rf"{re.escape(suffix)}"
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (True when that cannot be told)."""
    if pid <= 0:
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        try:
            import psutil
        except ImportError:
            return True
        return bool(psutil.pid_exists(pid))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists (another user's); anything else: assume it does
        return True
    return True


def _last_touched(path: Path) -> float:
    """The newest mtime of ``path`` and (for a folder) of its direct entries; inf when it vanished."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            with os.scandir(path) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    except OSError:
        return float("inf")
    return newest


def stale_temps(path: str | Path, suffix: str, *, min_age_s: float = STALE_MIN_AGE_S) -> list[Path]:
    """The temporaries of target ``path`` with ``suffix`` whose writer is gone (see the module docstring)."""
    path = Path(path)
    pattern = _pattern(path.name, suffix)
    try:
        names = [entry.name for entry in os.scandir(path.parent) if pattern.fullmatch(entry.name)]
    except OSError:  # no folder (yet), or unreadable: nothing to clean
        return []
    now = time.time()
    found = []
    for name in sorted(names):
        match = pattern.fullmatch(name)
        assert match is not None
        candidate = path.parent / name
        if match["legacy"]:
            if now - _last_touched(candidate) >= LEGACY_MIN_AGE_S:
                found.append(candidate)
            continue
        if match["host"] != _HOST or pid_alive(int(match["pid"])):
            continue
        if now - _last_touched(candidate) >= min_age_s:
            found.append(candidate)
    return found


def remove_stale_temps(path: str | Path, suffix: str, *, min_age_s: float = STALE_MIN_AGE_S) -> list[Path]:
    """Delete the stale temporaries of target ``path`` (:func:`stale_temps`); returns what was removed.

    Every writer calls this (through :func:`temp_sibling`) before creating its own temporary, so a
    killed run's leftovers are cleaned by the next write of the same target. Never raises.
    """
    removed = []
    for candidate in stale_temps(path, suffix, min_age_s=min_age_s):
        with contextlib.suppress(OSError):
            remove_path(candidate)
            removed.append(candidate)
    return removed


def remove_path(path: str | Path) -> None:
    """Delete a file, link or folder tree if it exists (cleanup of temporary siblings; never raises
    for a missing path)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
