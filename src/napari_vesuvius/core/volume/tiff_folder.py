"""A folder of 2D TIFF slices (``<volume>/00000.tif, 00001.tif, …``) read lazily as one (z, y, x) volume.

The layout scroll volumes were long distributed in. Slices are taken in natural order of their names;
every slice's header is checked (2D, same shape and dtype as the first) when the folder is opened, and the
first bad slice is named in the error. A ``meta.json`` beside the slices (the data server's) gives the
voxel size. Owned by the z-slice-folder work of issue 17.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_vesuvius.core.volume.io import LazyVolume


def is_slice_folder(path: str | Path) -> bool:
    """True for a directory (not zarr) holding at least two .tif/.tiff files whose first is a 2D image.

    Cheap: a directory listing and one TIFF header.
    """
    return False  # placeholder until the slice-folder reader lands


def open_tiff_folder(path: str | Path) -> LazyVolume:
    """Open a folder of 2D TIFF slices lazily (kind ``"tiff-folder"``); VolumeError naming the bad slice."""
    raise NotImplementedError
