"""The run folder: file names, the metrics log and the resumable training state.

Layout::

    run_dir/
      config.json          every setting (TrainConfig), exact
      metrics.jsonl        one JSON object per line, each with an "event" (see METRIC_EVENTS)
      checkpoint_last.pt   built-in checkpoint (loadable by predict --model), every epoch and on cancel
      checkpoint_best.pt   the best epoch so far (by score when scored, else EMA pseudo-Dice)
      train_state.pt       optimizer, weights, counters and RNG states: what --resume continues from
      train.log            console output when started by core.training.process
      train.pid            the training process's pid, start time and command line while it runs
                           (core.training.process.write_pid_file / running_pid)
      postprocess.json     the clean-up chosen for checkpoint_best.pt at the end (see postprocess_step)
      data_check.json      data files whose values passed the check (core.dataset_check), by size + time

``train_state.pt`` holds its own copy of the weights, so it is self-consistent whatever happened to
``checkpoint_last.pt``. All files are written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, atomic_write_text
from ..errors import CheckpointError

CONFIG_JSON = "config.json"
METRICS_JSONL = "metrics.jsonl"
CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
TRAIN_STATE = "train_state.pt"
TRAIN_LOG = "train.log"
DATA_CHECK = "data_check.json"
PID_FILE = "train.pid"
#: Values of the "event" key of metrics.jsonl records.
METRIC_EVENTS = ("started", "progress", "epoch_end", "postprocess", "cancelled", "finished", "error")
STATE_FORMAT = "napari-vesuvius-train-state"
STATE_VERSION = 1


def _json_safe(value: Any) -> Any:
    """NaN/inf become None (strict JSON), containers recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class MetricsLog:
    """Append-only writer of ``metrics.jsonl`` (one line per record, flushed at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"event": event, "time": now, **fields}``; returns the record."""
        record = _json_safe({"event": event, "time": round(time.time(), 3), **fields})
        line = json.dumps(record, allow_nan=False) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            if event != "progress":
                os.fsync(handle.fileno())
        return record

    def truncate_after(self, epochs_done: int) -> None:
        """Drop records of epochs after ``epochs_done`` (work lost in a kill) and any torn last line.

        Called before resuming, so every epoch appears exactly once in the log.
        """
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            per_epoch = record.get("event") in ("epoch_end", "progress", "validating")
            if per_epoch and int(record.get("epoch", 0)) > epochs_done:
                continue
            kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` the state dict atomically (plain data and tensors only: loads weights-only)."""
    import torch

    path = Path(path)
    payload = {"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}
    with atomic_file(path, "wb") as handle:
        torch.save(payload, handle)


REQUIRED_STATE_KEYS = ("config", "epoch", "iteration", "model", "optimizer")


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Load ``train_state.pt`` weights-only; a missing, corrupt or foreign file raises CheckpointError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no training state to resume from (the run never finished an epoch?)")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "training state file is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(path, f"refused to load: not plain data ({str(error)[:200]})") from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as error:
        raise CheckpointError(
            path, f"corrupt or truncated training state ({type(error).__name__}: {error})"[:400]
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise CheckpointError(path, "not a napari-vesuvius training state")
    if int(payload.get("format_version", 0)) > STATE_VERSION:
        raise CheckpointError(path, f"training state version {payload.get('format_version')} is too new")
    missing = [key for key in REQUIRED_STATE_KEYS if key not in payload]
    if missing:
        raise CheckpointError(path, f"training state is missing {missing}")
    return payload
