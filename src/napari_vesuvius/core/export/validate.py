"""Submission mask rules: uint8 (bool/int accepted) with values {0, 1}, the source's shape; LZW TIFF.

Float masks are refused whatever their values (a value like 1.00000002 is not 1, and casting would
hide a missing threshold step); so are values outside {0, 1}. The value rule itself lives in
:mod:`napari_vesuvius.core.value_checks` (``score`` applies the same one). Every message names the id
or file.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VesuviusError
from ..value_checks import mask_problem

#: TIFF compression tag value of LZW (what the challenge's own volumes use).
LZW_TAG = 5


class SubmissionError(VesuviusError, ValueError):
    """A submission is invalid (missing/extra id, wrong dtype, values or shape) or could not be written.

    ``where`` names the id and/or file; the message reads ``"<where>: <problem>"``.
    """

    def __init__(self, where: str | Path | None, problem: str) -> None:
        self.where = None if where is None else str(where)
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where is not None else problem)


@dataclass(frozen=True)
class SubmissionTarget:
    """One id the submission must contain: its source image (if known) and the shape its mask must have."""

    volume_id: str
    shape: tuple[int, int, int]
    image: Path | None = None


def check_binary(array: Any, where: str | Path | None) -> None:
    """Raise SubmissionError unless ``array`` is bool or integer holding only 0 and 1 (chunk-wise).

    The rule is :func:`napari_vesuvius.core.value_checks.mask_problem`, shared with ``score``: float
    masks are refused whatever their values (a value like 1.00000002 is not 1, and casting would hide a
    missing threshold step), and so are values outside {0, 1} (0/255 included).
    """
    problem = mask_problem(array)
    if problem is not None:
        raise SubmissionError(where, problem)


def as_submission_mask(mask: Any, target: SubmissionTarget, source: str | Path | None = None) -> np.ndarray:
    """Validate one mask against its target and return it as a C-contiguous uint8 {0,1} array."""
    where = f"id {target.volume_id}" + (f" ({source})" if source is not None else "")
    if hasattr(mask, "compute") and not isinstance(mask, np.ndarray):
        mask = mask.compute()
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise SubmissionError(where, f"mask must be 3D (z, y, x), got shape {mask.shape}")
    if tuple(mask.shape) != tuple(target.shape):
        image = f" {target.image}" if target.image is not None else ""
        raise SubmissionError(
            where,
            f"mask shape {tuple(mask.shape)} does not match the source image{image} shape {target.shape}",
        )
    check_binary(mask, where)
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    return np.ascontiguousarray(mask, dtype=np.uint8)


def encode_mask_tif(mask: np.ndarray) -> bytes:
    """A uint8 mask as TIFF bytes: LZW, one page per z-slice (tifffile + imagecodecs)."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, mask, compression="lzw", photometric="minisblack")
    return buffer.getvalue()


def decode_mask_tif(data: bytes, where: str) -> np.ndarray:
    """Decode TIFF bytes written by :func:`encode_mask_tif`, checking pages, compression and dtype."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = len(tif.pages)
            compression = int(tif.pages[0].compression)
            array = tif.asarray()
    except Exception as error:
        raise SubmissionError(where, f"cannot be decoded ({type(error).__name__}: {error})") from error
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or pages != array.shape[0]:
        raise SubmissionError(
            where, f"expected one page per z-slice, got {pages} page(s) for shape {array.shape}"
        )
    if compression != LZW_TAG:
        raise SubmissionError(where, f"expected LZW compression, got TIFF compression {compression}")
    if array.dtype != np.uint8:
        raise SubmissionError(where, f"reads back as {array.dtype}, expected uint8")
    return array


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(mask).data).hexdigest()
