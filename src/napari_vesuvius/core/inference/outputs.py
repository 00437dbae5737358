"""Prediction outputs, created one way: check the target, fill a partial sibling, publish atomically.

:func:`create_prediction_output` checks the target with :func:`napari_vesuvius.core.outputs.check_output_path`
(never an input such as the source volume or a model, never an existing path without ``overwrite``),
then creates a hidden zarr store next to it (``.<name>.<random>.partial.zarr``) that the engine fills.
:meth:`PendingOutput.publish` swaps the finished store onto the target (an existing target stays until
the new one is in place); :meth:`PendingOutput.discard` removes the partial store (failure, cancel).
Used as a context manager, anything but a publish discards it, so no half-written store is ever left
at the target or next to it. The CLI and the Inference widget both create their zarr outputs here.

Formats: a plain zarr array (zarr format 2 by default, 3 when asked; the input's physical placement in
its attributes), or for a target ending in ``.ome.zarr`` a real OME-Zarr: the engine fills level ``0``
and publishing first adds the mean-pooled pyramid and the NGFF metadata (0.4 on zarr v2, 0.5 on v3),
placed like the input (:func:`~napari_vesuvius.core.volume.write.iter_finish_ome_zarr`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.outputs import check_output_path
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.volume.base import DEFAULT_ZARR_FORMAT, check_zarr_format, is_ome_zarr_name
from napari_vesuvius.core.volume.spatial import Spatial

PARTIAL_SUFFIX = ".partial.zarr"


class PendingOutput:
    """A zarr prediction output being written: ``array`` lives in ``partial`` until :meth:`publish`.

    ``group``: the OME-Zarr group holding ``array`` as level ``0`` (None for a plain zarr array);
    ``spatial``: the placement of the prediction (that of its input), written into the pyramid.
    """

    def __init__(
        self,
        target: Path,
        partial: Path,
        array: Any,
        *,
        group: Any = None,
        spatial: Spatial | None = None,
    ) -> None:
        self.target = target
        self.partial = partial
        self.array = array
        self.group = group
        self.spatial = spatial
        self.published = False

    @property
    def ome(self) -> bool:
        return self.group is not None

    def iter_publish(self) -> Generator[Progress, None, Path]:
        """Job: finish an OME-Zarr (pyramid and metadata), then move the store onto the target."""
        from napari_vesuvius.core.volume.io import volume_id
        from napari_vesuvius.core.volume.write import iter_finish_ome_zarr, swap_in

        if self.published:
            return self.target
        if self.group is not None:
            yield from iter_finish_ome_zarr(
                self.group, spatial=self.spatial, downsample="mean", name=volume_id(self.target)
            )
        swap_in(self.partial, self.target)
        self.published = True
        return self.target

    def publish(self) -> Path:
        """Finish and move the store onto the target (see :meth:`iter_publish`); returns the target."""
        return run_job(self.iter_publish())

    def discard(self) -> None:
        """Remove the partial store (nothing happens after :meth:`publish`)."""
        if not self.published:
            remove_path(self.partial)

    def open_published(self) -> Any:
        """The published (full-resolution) array, read-only (for a viewer layer that showed the partial
        store); level ``0`` of an OME-Zarr."""
        import zarr

        if self.group is not None:
            return zarr.open_group(str(self.target), mode="r")["0"]
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
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    spatial: Spatial | None = None,
) -> PendingOutput:
    """Check ``target`` (a ``.zarr`` / ``.ome.zarr`` path) and create the partial store the prediction
    is written to.

    ``inputs``: paths the run reads (the source volume, the models, files open in a viewer), which the
    target may not be, contain or lie inside. ``hint``: how to allow replacing an existing target (in
    the refusal's message). ``chunks``: default cubic chunks of about 2 MB. ``zarr_format``: 2 (the
    default) or 3; ``spatial``: the input's placement, carried into the output. Raises ``OutputError``
    (a ``VesuviusError`` naming the target) before anything is written.
    """
    from napari_vesuvius.core.volume.base import cubic_chunks
    from napari_vesuvius.core.volume.write import create_ome_zarr_base
    from napari_vesuvius.core.volume.zarr_write import create_zarr_array

    target = Path(target)
    zarr_format = check_zarr_format(zarr_format, target)
    kwargs = {} if hint is None else {"hint": hint}
    check_output_path(target, inputs=list(inputs), overwrite=overwrite, **kwargs)
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    chunk_shape = tuple(chunks) if chunks is not None else cubic_chunks(shape, dtype.itemsize)
    partial = temp_sibling(target, PARTIAL_SUFFIX)  # also removes a killed run's partial store
    try:
        if is_ome_zarr_name(target):
            group, array = create_ome_zarr_base(
                partial, shape, dtype, chunks=chunk_shape, zarr_format=zarr_format, fill_value=0
            )
            return PendingOutput(target, partial, array, group=group, spatial=spatial)
        array = create_zarr_array(
            partial, shape, dtype, chunks=chunk_shape, zarr_format=zarr_format, fill_value=0, spatial=spatial
        )
    except BaseException:
        remove_path(partial)
        raise
    return PendingOutput(target, partial, array, spatial=spatial)
