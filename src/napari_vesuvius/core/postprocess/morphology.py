"""Binary opening and anisotropic closing with an ellipsoid of separate z and y/x radii.

Semantics are those of the mathematical operations on an infinite background: the volume is
(virtually) padded with zeros, so closing never shrinks objects at the volume faces, and both
results equal ``scipy.ndimage.binary_closing/opening(np.pad(mask, r), footprint)[crop]``.

Speed: the mask is cropped to its bounding box (closing and opening never leave it), padded by the
radius and bit-packed along x (8 voxels per byte, ``np.packbits``). The ellipsoid is a union of
x-runs, one per (dz, dy) offset; a dilation is then a few shifted ORs of packed x-run dilations,
and shifts along z and y are plain slices of a 8× smaller array.
"""

from __future__ import annotations

import numpy as np

from ..boxes import bounding_box


def ellipsoid_footprint(radius_z: int, radius_xy: int) -> np.ndarray:
    """Boolean ellipsoid ``(dz/rz)² + (dy/rxy)² + (dx/rxy)² <= 1``; a zero radius: no extent on that axis."""
    rz, rxy = int(radius_z), int(radius_xy)
    dz = np.arange(-rz, rz + 1)[:, None, None]
    dy = np.arange(-rxy, rxy + 1)[None, :, None]
    dx = np.arange(-rxy, rxy + 1)[None, None, :]
    total = np.zeros((2 * rz + 1, 2 * rxy + 1, 2 * rxy + 1))
    if rz:
        total = total + (dz / rz) ** 2
    if rxy:
        total = total + (dy / rxy) ** 2 + (dx / rxy) ** 2
    return total <= 1.0 + 1e-9


def _row_widths(radius_z: int, radius_xy: int) -> dict[tuple[int, int], int]:
    """For each (dz, dy) offset of the ellipsoid, the half-width of its x-run."""
    footprint = ellipsoid_footprint(radius_z, radius_xy)
    widths: dict[tuple[int, int], int] = {}
    for iz, iy in zip(*np.nonzero(footprint.any(axis=2)), strict=True):
        row = np.flatnonzero(footprint[iz, iy])
        widths[(int(iz) - radius_z, int(iy) - radius_xy)] = int(row[-1]) - radius_xy
    return widths


def _shift_flat(packed: np.ndarray, d: int, fill: int) -> np.ndarray:
    """``out[x] = in[x + d]`` over the whole array read as one little-endian bit string.

    Bits cross from one row into the next; callers pad every row with at least ``|d|`` zero bits on
    both sides, so that only reaches padding whose value is never used. The shift runs on 64-bit
    words (the caller sizes rows in multiples of 8 bytes).
    """
    words = packed.reshape(-1).view("<u8")
    n = words.size
    out = np.empty_like(words)
    q, r = divmod(abs(d), 64)
    edge = np.uint64(0xFFFFFFFFFFFFFFFF if fill else 0)
    if d == 0:
        out[:] = words
        return out.view(np.uint8).reshape(packed.shape)
    if q >= n:
        out[:] = edge
        return out.view(np.uint8).reshape(packed.shape)
    if d > 0:  # bits move towards lower x
        src, body = words[q:], out[: n - q]
        out[n - q :] = edge
        if r == 0:
            body[:] = src
        else:
            np.right_shift(src, np.uint64(r), out=body)
            body[:-1] |= src[1:] << np.uint64(64 - r)
            if fill:
                body[-1] |= edge << np.uint64(64 - r)
    else:  # bits move towards higher x
        src, body = words[: n - q], out[q:]
        out[:q] = edge
        if r == 0:
            body[:] = src
        else:
            np.left_shift(src, np.uint64(r), out=body)
            body[1:] |= src[:-1] >> np.uint64(64 - r)
            if fill:
                body[0] |= edge >> np.uint64(64 - r)
    return out.view(np.uint8).reshape(packed.shape)


def _morph_packed(packed: np.ndarray, widths: dict[tuple[int, int], int], dilate: bool) -> np.ndarray:
    """Dilate (OR) or erode (AND) packed rows by the union of x-runs ``widths``.

    A (dz, dy) offset is a shift of the flat word array by whole rows; reads that run past a row or
    plane land in the caller's zero padding (first operation) or in padding whose result is
    discarded (second operation), so one contiguous 1D operation per offset suffices.
    """
    combine = np.bitwise_or if dilate else np.bitwise_and
    fill = 0 if dilate else 1
    runs: dict[int, np.ndarray] = {0: packed.reshape(-1).view("<u8")}
    for width in range(1, max(widths.values()) + 1):
        run = combine(runs[width - 1], _shift_flat(packed, width, fill).reshape(-1).view("<u8"))
        combine(run, _shift_flat(packed, -width, fill).reshape(-1).view("<u8"), out=run)
        runs[width] = run
    out = np.zeros(runs[0].size, np.uint64) if dilate else np.full(runs[0].size, ~np.uint64(0))
    ny, row_words = packed.shape[1], packed.shape[2] // 8
    n = out.size
    for (dz, dy), width in widths.items():
        shift = (dz * ny + dy) * row_words  # out[i] op= run[i + shift]
        if abs(shift) >= n:
            continue
        if shift >= 0:
            target, source = out[: n - shift], runs[width][shift:]
        else:
            target, source = out[-shift:], runs[width][: n + shift]
        combine(target, source, out=target)
    return out.view(np.uint8).reshape(packed.shape)


def _apply(mask: np.ndarray, radius_z: int, radius_xy: int, closing: bool) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"morphology needs a 3D mask, got shape {mask.shape}")
    if radius_z == 0 and radius_xy == 0:
        return mask.copy()
    packed = np.packbits(mask, axis=2, bitorder="little")
    box = bounding_box(packed)
    if box is None:
        return np.zeros_like(mask)
    # Work on the bounding box (x in whole bytes), padded by the radius in z and y and by whole
    # bytes (>= radius bits) in x: both operations then see the zeros of an infinite background.
    crop = packed[box]
    pad = (radius_z, radius_xy, -(-radius_xy // 8))
    inner = tuple(slice(p, p + n) for p, n in zip(pad, crop.shape, strict=True))
    shape = [n + 2 * p for n, p in zip(crop.shape, pad, strict=True)]
    shape[2] += -shape[2] % 8  # whole 64-bit words per row
    work = np.zeros(shape, np.uint8)
    work[inner] = crop
    widths = _row_widths(radius_z, radius_xy)
    first, second = (True, False) if closing else (False, True)
    work = _morph_packed(_morph_packed(work, widths, first), widths, second)
    packed = np.zeros_like(packed)
    packed[box] = work[inner]
    return np.unpackbits(packed, axis=2, count=mask.shape[2], bitorder="little").view(bool)


def binary_closing(mask: np.ndarray, radius_z: int, radius_xy: int) -> np.ndarray:
    """Closing (dilate, then erode) by an ellipsoid; a superset of ``mask``, inside its bounding box."""
    return _apply(mask, radius_z, radius_xy, closing=True)


def binary_opening(mask: np.ndarray, radius_z: int, radius_xy: int) -> np.ndarray:
    """Opening (erode, then dilate) by an ellipsoid, with zeros outside the volume; a subset of ``mask``."""
    return _apply(mask, radius_z, radius_xy, closing=False)


def morphology_halo(radius_z: int, radius_xy: int) -> tuple[int, int, int]:
    """How far (z, y, x) an opening or closing looks: twice the radius on each axis."""
    return (2 * radius_z, 2 * radius_xy, 2 * radius_xy)


__all__ = [
    "binary_closing",
    "binary_opening",
    "ellipsoid_footprint",
    "morphology_halo",
]
