"""Atomic OME-Zarr writing: pyramids computed from level 0, NGFF metadata from :mod:`.ngff`.

Writes NGFF 0.4 on zarr v2 (the default) or 0.5 on zarr v3. Used by :func:`.write.iter_write_volume` for
``.ome.zarr`` paths, by the sliding window's ``.ome.zarr`` outputs (:func:`create_ome_zarr_base` then
:func:`iter_finish_ome_zarr`) and by the labels writer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_vesuvius.core.atomic import remove_path, temp_sibling
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.progress import Progress, run_job
from napari_vesuvius.core.volume.base import DEFAULT_ZARR_FORMAT, cubic_chunks, require_3d
from napari_vesuvius.core.volume.spatial import Downsample, Spatial
from napari_vesuvius.core.volume.zarr_write import as_dask_input, swap_in, write_zarr_slabs


def iter_write_ome_zarr(
    path: str | Path,
    levels: Any,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    spatial: Spatial | None = None,
    downsample: Downsample | None = None,
) -> Iterator[Progress]:
    """Job: write a multiscale OME-Zarr (NGFF 0.4 on zarr v2, 0.5 on v3) atomically.

    ``levels``: one 3D array (its pyramid is computed with ``downsample``: ``mean`` by default for
    floats, ``nearest`` for integers; pass ``max`` for thin binary masks) or a sequence of levels, full
    resolution first. ``spatial`` places level 0; the metadata is built and validated by :mod:`.ngff`.
    """
    import zarr

    path = Path(path)
    if not levels:
        raise VolumeError(path, "no resolution levels to write")
    if not path.parent.is_dir():
        raise VolumeError(path, "parent folder does not exist")
    sources = [as_dask_input(level) for level in levels]
    for source in sources:
        require_3d(source.shape, path)
    base = sources[0].shape
    tmp = temp_sibling(path, ".tmp.zarr")
    try:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=2)
        datasets = []
        for index, source in enumerate(sources):
            level_chunks = tuple(chunks) if chunks else cubic_chunks(source.shape, source.dtype.itemsize)
            for report in write_zarr_slabs(tmp / str(index), source, level_chunks, 2):
                yield Progress(
                    report.done, report.total, f"level {index + 1}/{len(sources)}: {report.message}"
                )
            scale = [float(b) / float(n) for b, n in zip(base, source.shape, strict=True)]
            datasets.append(
                {"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            )
        axes = [{"name": name, "type": "space"} for name in "zyx"]
        group.attrs["multiscales"] = [
            {"version": "0.4", "name": path.stem, "axes": axes, "datasets": datasets}
        ]
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            remove_path(tmp)
    return path


def write_ome_zarr(path: str | Path, levels: Any, **kwargs: Any) -> Path:
    """Write a multiscale OME-Zarr atomically; see :func:`iter_write_ome_zarr`."""
    return run_job(iter_write_ome_zarr(path, levels, **kwargs))


def create_ome_zarr_base(
    location: str | Path,
    shape: Sequence[int],
    dtype: Any,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int = DEFAULT_ZARR_FORMAT,
    fill_value: Any = 0,
) -> tuple[Any, Any]:
    """Create an OME-Zarr group at ``location`` with an empty full-resolution array ``"0"``.

    For writers that fill level 0 themselves (the sliding window writing tiles): returns
    ``(group, level0_array)``; :func:`iter_finish_ome_zarr` then adds the pyramid and the metadata.
    """
    raise NotImplementedError


def iter_finish_ome_zarr(
    group: Any,
    *,
    spatial: Spatial | None = None,
    downsample: Downsample = "mean",
    name: str | None = None,
) -> Iterator[Progress]:
    """Job: compute the coarser levels of a group from its filled level ``"0"`` and write the validated
    multiscales metadata (NGFF 0.4 on a zarr v2 group, 0.5 on v3)."""
    raise NotImplementedError
