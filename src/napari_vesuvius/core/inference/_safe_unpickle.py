"""Load nnU-Net v2 checkpoints with ``torch.load(weights_only=True)`` and a minimal allow-list.

nnU-Net's trainer saves a plain dict with ``torch.save``: tensors (weights, optimizer buffers), JSON-like
plans, a ``torch.device`` in ``init_args`` and numpy scalars in ``_best_ema`` and the training log.
``weights_only=True`` already accepts tensors, containers and ``torch.device``; the numpy scalar
reconstructors are allow-listed here, scoped with ``torch.serialization.safe_globals`` so nothing is
added to torch's process-wide allow-list. Any other pickled global (a custom class, ``os.system``, ...)
makes the load fail, and the failure is reported as a :class:`CheckpointError` naming the file.
Only modules that already import torch import this one.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_vesuvius.core.errors import CheckpointError

_NUMPY_SCALAR_DTYPES = (
    np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_,
)  # fmt: skip


def nnunet_safe_globals() -> list[Any]:
    """The globals an nnU-Net v2 checkpoint may reference beyond torch's own weights-only set.

    Numpy scalars pickle as ``numpy._core.multiarray.scalar(dtype, bytes)`` (numpy ≥ 2) or
    ``numpy.core.multiarray.scalar`` (checkpoints written with numpy 1.x); dtypes as ``numpy.dtype``
    and, in some numpy versions, as their ``numpy.dtypes.*DType`` class.
    """
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list[Any] = [
        (scalar, "numpy._core.multiarray.scalar"),
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
    ]
    for dtype in _NUMPY_SCALAR_DTYPES:
        allowed.append(type(np.dtype(dtype)))
    return allowed


def load_nnunet_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net checkpoint onto the CPU without arbitrary unpickling.

    Raises :class:`CheckpointError` for a missing, corrupt or unsafe file, or one that is not an
    nnU-Net checkpoint (no ``network_weights`` dict).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CheckpointError(path, "not a readable PyTorch checkpoint (not a torch.save zip archive)")
    try:
        with torch.serialization.safe_globals(nnunet_safe_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        reason = next((line for line in lines if "unsupported" in line.casefold()), "")
        raise CheckpointError(
            path,
            "refused to load: the checkpoint contains a pickled object outside the allow-list for nnU-Net "
            f"checkpoints (tensors, plain containers, numpy scalars, torch.device). {reason}".strip(),
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(path, f"not a readable PyTorch checkpoint: {error}"[:500]) from error
    if not isinstance(payload, dict) or not isinstance(payload.get("network_weights"), dict):
        raise CheckpointError(path, "not an nnU-Net checkpoint (no 'network_weights' state dict)")
    return payload
