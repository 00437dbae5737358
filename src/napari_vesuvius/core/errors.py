"""Exceptions raised for bad input; every message names the file and the problem."""

from __future__ import annotations

import warnings
from pathlib import Path


class VesuviusError(Exception):
    """Base class for all errors this package raises on purpose."""


class PathError(VesuviusError, ValueError):
    """Base of the errors about one file or folder: the message is ``"<path>: <problem>"``.

    ``path`` is None when the problem is not tied to a file (the message is then the problem alone);
    ``problem`` keeps the text without the path, for callers that re-raise it against another path.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class VolumeError(PathError):
    """A volume (image, label or mask) is unreadable or invalid.

    The message always starts with the offending path (when there is one) so users can find it.
    """


class DatasetError(VesuviusError, ValueError):
    """A challenge dataset folder is malformed (missing ids, missing folders, bad CSV)."""


class CancelledError(VesuviusError):
    """A long-running job was cancelled by the user before it finished."""


class CheckpointError(PathError):
    """A model checkpoint or model folder is missing, corrupt, unsafe or of an unknown format.

    Like :class:`VolumeError`, the message starts with the offending path.
    """


class OutputError(PathError):
    """An output path is refused: it exists (without overwrite), is an input, or cannot be written.

    Raised by :mod:`napari_vesuvius.core.outputs` before any work; the message starts with the path.
    """


class VesuviusWarning(UserWarning):
    """Input was accepted but converted, narrowed or partly skipped: the user must be told.

    Raise these through :func:`warn_user`. The CLI prints them as one ``warning: ...`` line on stderr;
    widgets show them in their log / as a napari notification.
    """


def warn_user(path: str | Path | None, problem: str) -> None:
    """Emit a :class:`VesuviusWarning` whose message starts with the path, like the errors."""
    message = f"{path}: {problem}" if path is not None else problem
    warnings.warn(message, VesuviusWarning, stacklevel=2)
