"""The progress record of a block-wise output and what "incomplete" means.

The record lives in the output's attributes under ``vesuvius_scroll``: the run's fingerprint and two bit
masks over the block grid (finished, air), written only by the client, atomically (zarr replaces the
metadata object as a whole). ``complete`` stays false until every block is recorded; readers refuse such
an output (:func:`require_complete`) so an interrupted run is never taken for a result.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.errors import VolumeError

RECORD_KEY = "vesuvius_scroll"
RECORD_VERSION = 1


# ------------------------------------------------------------------------------------------- record
def _pack(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.ravel()).tobytes()).decode("ascii")


def _unpack(text: str, shape: Sequence[int]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))
    return bits[: int(np.prod(shape))].astype(bool).reshape(tuple(shape))


@dataclass
class Record:
    """The output's progress record: fingerprint, finished and air blocks, fitted normalisations."""

    fingerprint: dict[str, Any]
    done: np.ndarray
    air: np.ndarray
    normalizations: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "fingerprint": self.fingerprint,
            "grid": list(self.done.shape),
            "blocks_total": int(self.done.size),
            "blocks_done": int(self.done.sum()),
            "blocks_air": int(self.air.sum()),
            "done": _pack(self.done),
            "air": _pack(self.air),
            "normalizations": self.normalizations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        grid = [int(n) for n in data["grid"]]
        return cls(
            data["fingerprint"],
            _unpack(data["done"], grid),
            _unpack(data["air"], grid),
            data.get("normalizations"),
        )


# ------------------------------------------------------------------------------------ completeness
#: How an interrupted block-wise run is finished (an existing output with the same settings resumes).
RESUME_HINT = (
    "run the same `napari-vesuvius predict` command again to resume it (or the Inference widget's "
    "block-wise run with the same settings); --overwrite starts over"
)


def incomplete_blocks(attrs: Any) -> tuple[int, int] | None:
    """``(blocks done, blocks total)`` when ``attrs`` (a zarr node's attributes) are those of a
    block-wise output whose run has not finished; None for a finished one or any other zarr.

    The one definition of "incomplete": a progress record (written by every block-wise run) while
    ``complete`` is not true. Only the output's own writer (resuming) and a live display of the run in
    progress may read such a store (see :func:`require_complete`).
    """
    data = dict(attrs)
    record = data.get(RECORD_KEY)
    if not isinstance(record, dict) or data.get("complete") is True:
        return None
    try:
        return int(record.get("blocks_done", 0)), int(record.get("blocks_total", 0))
    except (TypeError, ValueError):
        return 0, 0


def require_complete(attrs: Any, location: str | Path) -> None:
    """Raise VolumeError naming ``location`` when it is an unfinished block-wise output."""
    progress = incomplete_blocks(attrs)
    if progress is not None:
        done, total = progress
        raise VolumeError(
            location,
            f"incomplete block-wise output: {done} of {total} blocks done (its run was interrupted; "
            f"the missing blocks read as 0); {RESUME_HINT}",
        )


def output_progress(location: str | Path) -> tuple[int, int] | None:
    """:func:`incomplete_blocks` of the zarr at ``location`` (None when it is not a readable zarr)."""
    import zarr

    try:
        node = zarr.open(store=str(location), mode="r")
    except Exception:  # not a zarr: nothing to report
        return None
    return incomplete_blocks(node.attrs)
