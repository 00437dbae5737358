"""Prediction outputs, created one way: check the target, fill a partial sibling, publish atomically.

:func:`create_prediction_output` checks the target with :func:`napari_vesuvius.core.outputs.check_output_path`
(never an input such as the source volume or a model, never an existing path without ``overwrite``),
then creates a hidden zarr store next to it (``.<name>.<random>.partial.zarr``) that the engine fills.
:meth:`PendingOutput.publish` swaps the finished store onto the target (an existing target stays until
the new one is in place); :meth:`PendingOutput.discard` removes the partial store (failure, cancel).
Used as a context manager, anything but a publish discards it, so no half-written store is ever left
at the target or next to it. The CLI and the Inference widget both create their zarr outputs here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.outputs import check_output_path

PARTIAL_SUFFIX = ".partial.zarr"


class PendingOutput:
    """A zarr prediction output being written: ``array`` lives in ``partial`` until :meth:`publish`."""

    def __init__(self, target: Path, partial: Path, array: Any) -> None:
        self.target = target
        self.partial = partial
        self.array = array
        self.published = False

    def publish(self) -> Path:
        """Move the finished store onto the target; returns the target."""
        from napari_vesuvius.core.volume.write import swap_in

        if self.published:
            return self.target
        swap_in(self.partial, self.target)
        self.published = True
        return self.target

    def discard(self) -> None:
        """Remove the partial store (nothing happens after :meth:`publish`)."""
        if not self.published:
            remove_path(self.partial)

    def open_published(self) -> Any:
        """The published array, read-only (for a viewer layer that showed the partial store)."""
        import zarr

        return zarr.open_array(str(self.target), mode="r")

    def __enter__(self) -> PendingOutput:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.discard()


def create_prediction_output(
    target: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    hint: str | None = None,
    chunks: Sequence[int] | None = None,
) -> PendingOutput:
    """Check ``target`` (a ``.zarr`` path) and create the partial store the prediction is written to.

    ``inputs``: paths the run reads (the source volume, the models, files open in a viewer), which the
    target may not be, contain or lie inside. ``hint``: how to allow replacing an existing target (in
    the refusal's message). ``chunks``: default cubic chunks of about 2 MB. Raises ``OutputError``
    (a ``VesuviusError`` naming the target) before anything is written.
    """
    import zarr

    from napari_vesuvius.core.volume.io import cubic_chunks

    target = Path(target)
    kwargs = {} if hint is None else {"hint": hint}
    check_output_path(target, inputs=list(inputs), overwrite=overwrite, **kwargs)
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    partial = temp_sibling(target, PARTIAL_SUFFIX)  # also removes a killed run's partial store
    try:
        array = zarr.create_array(
            store=str(partial),
            shape=shape,
            dtype=dtype,
            chunks=tuple(chunks) if chunks is not None else cubic_chunks(shape, dtype.itemsize),
            fill_value=0,
        )
    except BaseException:
        remove_path(partial)
        raise
    return PendingOutput(target, partial, array)
