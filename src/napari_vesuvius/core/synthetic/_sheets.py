"""Geometry of the papyrus sheets, built in a canonical frame where the sheets stack along axis 0.

Each sheet is a band ``lo(a, b) <= d <= hi(a, b)`` over the 2D columns ``(a, b)``: its centre is a
smooth height field (shared tilt + bend + roll curvature, plus the accumulated wobble of the gaps
below it), its thickness a smooth field rounded to whole voxels. Working per column keeps everything
2D until one cumulative sum along ``d`` rasterises all sheets at once.

Neighbouring sheets are kept 26-disconnected (every voxel of the upper sheet lies at least two steps
above the lower sheet's top in the 3×3 neighbouring columns) except in deliberate merge spots. With
``packing="tight"`` every gap is small (1–4 voxels typically) and every pair touches in a few spots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ._fields import anisotropic_noise_2d, cumsum_axis0, smooth_noise_2d
from ._options import FragmentOptions


@dataclass
class _Sheet:
    lo: np.ndarray  # int32 (H, W): first voxel along d
    hi: np.ndarray  # int32 (H, W): last voxel along d
    present: np.ndarray  # bool (H, W): False in tears
    close: bool = False
    merged: bool = False
    torn: bool = False


@dataclass
class SheetStack:
    """Rasterised sheets in the canonical frame ``(D, H, W)`` (sheets stacked along axis 0)."""

    instances: np.ndarray  # uint8/uint16: 0 outside sheets, k = k-th sheet from the bottom
    density: np.ndarray  # float32 relative papyrus density (≈1); ~1e-7 rounding residue outside sheets
    thickness: list[float] = field(default_factory=list)  # mean voxel thickness per sheet
    close_pairs: list[tuple[int, int]] = field(default_factory=list)
    merged_pairs: list[tuple[int, int]] = field(default_factory=list)
    torn_sheets: list[int] = field(default_factory=list)


def _base_surface(rng: np.random.Generator, shape2d: tuple[int, int], opts: FragmentOptions) -> np.ndarray:
    """Shared height field: tilt (mostly a rotation around the scroll axis), bend and roll curvature."""
    h, w = shape2d
    a = (np.arange(h, dtype=np.float32) - (h - 1) / 2)[:, None]
    b = (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, :]
    max_slope = np.tan(np.deg2rad(opts.max_tilt_deg))
    slope_b = rng.uniform(-max_slope, max_slope)
    slope_a = rng.uniform(-max_slope, max_slope) * 0.4
    radius = rng.uniform(250.0, 900.0) * rng.choice([-1.0, 1.0])
    bend = rng.uniform(1.5, 4.0) * smooth_noise_2d(rng, shape2d, rng.uniform(70.0, 130.0))
    base = slope_a * a + slope_b * b + b * b / (2.0 * radius) + bend
    return (base - base[h // 2, w // 2]).astype(np.float32)


def _central_columns(shape2d: tuple[int, int], border: float) -> tuple[slice, slice]:
    """Slices of the columns at least ``border`` (a fraction of each side) away from the edges."""
    return tuple(slice(int(border * n), max(int((1 - border) * n), int(border * n) + 1)) for n in shape2d)


def _gap_field(
    rng: np.random.Generator, shape2d: tuple[int, int], typical_gap: float, kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """Air gap below a sheet (float, per column) and the columns where it may touch the sheet below.

    ``kind`` is ``"far"`` (varies smoothly around the fragment's typical gap), ``"close"``
    (converges to 1–3 voxels somewhere near the centre) or ``"merge"`` (contact in a small spot).
    """
    noise = smooth_noise_2d(rng, shape2d, rng.uniform(40.0, 80.0))
    if kind == "far":
        gap = typical_gap * rng.uniform(0.75, 1.3) * np.exp(0.15 * noise)
        return gap.astype(np.float32), np.zeros(shape2d, bool)
    gap = rng.uniform(5.0, 12.0) * np.exp(0.45 * noise)
    target = -1.5 if kind == "merge" else rng.uniform(1.0, 3.0)
    gap = gap - gap[_central_columns(shape2d, 0.3)].min() + target
    touching = (gap < 0.5) if kind == "merge" else np.zeros(shape2d, bool)
    return np.maximum(gap, 0.0 if kind == "merge" else 1.0).astype(np.float32), touching


def _tight_gap_field(
    rng: np.random.Generator, shape2d: tuple[int, int], typical_gap: float, touch_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Tight packing: a small gap everywhere (±~35 % around ``typical_gap``) and a few contact spots.

    The pair touches where its gap is smallest, over a random ``0–2 × touch_fraction`` of the columns
    (smooth blobs, since the gap field is smooth); there the gap is set to 0 so the sheets meet.
    """
    noise = smooth_noise_2d(rng, shape2d, rng.uniform(30.0, 70.0))
    gap = typical_gap * rng.uniform(0.7, 1.3) * np.exp(0.3 * noise)
    share = rng.uniform(0.0, 2.0 * touch_fraction)
    touching = noise <= np.quantile(noise, share) if share > 0 else np.zeros(shape2d, bool)
    return np.where(touching, 0.0, gap).astype(np.float32), touching


def _tear(rng: np.random.Generator, shape2d: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    """One irregular tear around column ``centre``, elongated along the recto fibres (axis ``b``)."""
    h, w = shape2d
    size = min(h, w)
    ra = np.clip(rng.uniform(2.0, 4.5), 1.5, 0.08 * size + 1)
    rb = np.clip(rng.uniform(5.0, 11.0), 2.5, 0.15 * size + 1)
    a = np.arange(h, dtype=np.float32)[:, None]
    b = np.arange(w, dtype=np.float32)[None, :]
    wobble = 0.35 * smooth_noise_2d(rng, shape2d, 4.0)
    return ((a - centre[0]) / ra) ** 2 + ((b - centre[1]) / rb) ** 2 + wobble < 1.0


def _torn_columns(rng: np.random.Generator, shape2d: tuple[int, int], opts: FragmentOptions) -> np.ndarray:
    """Scattered tears elongated along the fibres, covering a random fraction of the sheet."""
    field2d = smooth_noise_2d(rng, shape2d, (rng.uniform(3.0, 6.0), rng.uniform(8.0, 16.0)))
    fraction = rng.uniform(*opts.hole_fraction_range)
    return field2d > np.quantile(field2d, 1.0 - fraction)


def _place_sheets(
    rng: np.random.Generator, depth: int, shape2d: tuple[int, int], opts: FragmentOptions
) -> list[_Sheet]:
    """Stack sheets from below the volume to above it; return those that reach into ``[0, depth)``."""
    base = _base_surface(rng, shape2d, opts)
    typical_gap = rng.uniform(*opts.gap_range)  # locally a scroll's winding is fairly regular
    t_lo, t_hi = opts.thickness_range
    top = base - float(base.max()) - rng.uniform(4.0, 4.0 + opts.gap_range[1])  # float top of the sheet below
    hi_prev = np.floor(top).astype(np.int32)
    sheets: list[_Sheet] = []
    close_done = merge_done = False
    tight = opts.packing == "tight"
    while True:
        if tight:
            kind = "tight"
            gap, touching = _tight_gap_field(rng, shape2d, typical_gap, opts.touch_fraction)
            if not sheets:
                touching = np.zeros(shape2d, bool)
        else:
            if sheets:
                want_close = rng.random() < opts.close_pair_probability
                kind = "close" if want_close else "far"
                if want_close and not merge_done and rng.random() < opts.merge_probability:
                    kind = "merge"
            else:
                kind = "far"
            gap, touching = _gap_field(rng, shape2d, typical_gap, kind)
        mean_t = rng.uniform(*opts.mean_thickness_range)
        thick = np.clip(mean_t + 0.9 * smooth_noise_2d(rng, shape2d, rng.uniform(25.0, 50.0)), t_lo, t_hi)
        n_vox = np.clip(np.rint(thick), t_lo, t_hi).astype(np.int32)
        lo = np.rint(top + gap).astype(np.int32)
        # Keep 26-separation from the sheet below (touching only where a merge was asked for).
        need = np.where(touching, hi_prev + 1, ndimage.maximum_filter(hi_prev, size=3, mode="nearest") + 2)
        shift = np.maximum(need - lo, 0)
        lo = lo + shift
        hi = lo + n_vox - 1
        merged = kind == "merge" or bool(touching.any())
        sheet = _Sheet(lo=lo, hi=hi, present=np.ones(shape2d, bool), close=kind != "far", merged=merged)
        if int(lo.min()) >= depth:
            break
        if int(hi.max()) >= 0:
            if sheet.close and sheets:
                close_done |= _min_gap_inside(sheets[-1], sheet, depth) <= 3
            sheets.append(sheet)
            merge_done |= sheet.merged
        top = top + gap + thick + shift
        hi_prev = hi
    if sheets and not close_done and not tight:
        sheets = _force_close_pair(rng, sheets, depth, shape2d, opts)
    return sheets


def _min_gap_inside(lower: _Sheet, upper: _Sheet, depth: int) -> int:
    """Smallest air gap (voxels along d) between two neighbouring sheets over columns inside the volume."""
    inside = (lower.hi >= 0) & (upper.lo < depth)
    return int((upper.lo - lower.hi - 1)[inside].min()) if inside.any() else depth


def _force_close_pair(
    rng: np.random.Generator,
    sheets: list[_Sheet],
    depth: int,
    shape2d: tuple[int, int],
    opts: FragmentOptions,
) -> list[_Sheet]:
    """Guarantee one near-touching pair: pull the sheet nearest the centre down towards the one below.

    The upper sheet only moves down (away from the sheet above it) and never closer than the
    26-separation floor, so no new contact appears. A lone sheet gets a close neighbour added above.
    """
    h, w = shape2d
    gap, _ = _gap_field(rng, shape2d, 0.0, "close")
    if len(sheets) == 1:
        lower = sheets[0]
        n_vox = int(np.clip(np.rint(rng.uniform(*opts.mean_thickness_range)), *opts.thickness_range))
        floor = ndimage.maximum_filter(lower.hi, size=3, mode="nearest") + 2
        lo = np.maximum(lower.hi + 1 + np.rint(gap).astype(np.int32), floor)
        return [lower, _Sheet(lo=lo, hi=lo + n_vox - 1, present=np.ones(shape2d, bool), close=True)]
    centre = [abs((s.lo[h // 2, w // 2] + s.hi[h // 2, w // 2]) / 2 - depth / 2) for s in sheets[1:]]
    k = 1 + int(np.argmin(centre))
    lower, upper = sheets[k - 1], sheets[k]
    floor = ndimage.maximum_filter(lower.hi, size=3, mode="nearest") + 2
    lo = np.minimum(np.maximum(lower.hi + 1 + np.rint(gap).astype(np.int32), floor), upper.lo)
    upper.hi = upper.hi - (upper.lo - lo)
    upper.lo = lo
    upper.close = True
    return sheets


def _add_tears(
    rng: np.random.Generator,
    sheets: list[_Sheet],
    depth: int,
    shape2d: tuple[int, int],
    opts: FragmentOptions,
) -> None:
    """Tear some sheets at random; the sheet most inside the volume always gets one tear near the centre.

    That tear sits in a column where the sheet lies well inside the volume, so it is a real hole
    (surrounded by papyrus), not a bite out of the sheet's edge.
    """
    for sheet in sheets:
        if rng.random() < opts.hole_probability:
            sheet.present &= ~_torn_columns(rng, shape2d, opts)
            sheet.torn = True
    central = np.zeros(shape2d, bool)
    central[_central_columns(shape2d, 0.25)] = True
    margin = min(4, depth // 4)
    candidates = [central & (s.lo >= margin) & (s.hi < depth - margin) for s in sheets]
    best = int(np.argmax([c.sum() for c in candidates]))
    cols = np.argwhere(candidates[best])
    if len(cols):
        centre = cols[int(rng.integers(len(cols)))]
        sheets[best].present &= ~_tear(rng, shape2d, (int(centre[0]), int(centre[1])))
        sheets[best].torn = True


def build_sheets(rng: np.random.Generator, shape: tuple[int, int, int], opts: FragmentOptions) -> SheetStack:
    """Rasterise a stack of wavy, torn, fibrous sheets into a ``shape`` volume (stacked along axis 0)."""
    depth, h, w = shape
    shape2d = (h, w)
    sheets = _place_sheets(rng, depth, shape2d, opts)
    if opts.outer_air > 0 and sheets:
        # The scroll's outermost wrap: beyond it (high end of d) only air, bounded by a sheet surface.
        limit = depth * (1.0 - opts.outer_air)
        sheets = [s for s in sheets if float(np.median(s.lo + s.hi)) / 2 < limit] or sheets[:1]
    if sheets:
        _add_tears(rng, sheets, depth, shape2d, opts)
    dtype = np.uint8 if len(sheets) < 255 else np.uint16
    inst_diff = np.zeros(shape, dtype=np.int32 if dtype == np.uint16 else np.int16)
    dens_diff = np.zeros(shape, dtype=np.float32)
    stack = SheetStack(instances=np.empty(0, dtype), density=np.empty(0, np.float32))
    for index, sheet in enumerate(sheets, start=1):
        level = rng.uniform(0.85, 1.15) * (
            1.0 + 0.08 * smooth_noise_2d(rng, shape2d, rng.uniform(20.0, 40.0))
        )
        fibre = rng.uniform(0.22, 0.32)
        recto = level * (1.0 + fibre * anisotropic_noise_2d(rng, shape2d, (0.8, rng.uniform(5.0, 9.0))))
        verso = level * (1.0 + fibre * anisotropic_noise_2d(rng, shape2d, (rng.uniform(5.0, 9.0), 0.8)))
        mid = (sheet.lo + sheet.hi + 1) // 2
        cols = sheet.present & (sheet.hi >= 0) & (sheet.lo < depth)
        ia, ib = np.nonzero(cols)
        lo = np.clip(sheet.lo[cols], 0, depth)
        mid_c = np.clip(mid[cols], lo, depth)
        end = sheet.hi[cols] + 1
        r, v = recto[cols], verso[cols]
        inst_diff[lo, ia, ib] += index
        dens_diff[lo, ia, ib] += v
        inner = mid_c < depth
        dens_diff[mid_c[inner], ia[inner], ib[inner]] += r[inner] - v[inner]
        inside = end < depth
        inst_diff[end[inside], ia[inside], ib[inside]] -= index
        dens_diff[end[inside], ia[inside], ib[inside]] -= r[inside]
        stack.thickness.append(float((sheet.hi - sheet.lo + 1).mean()))
        if sheet.close and index > 1:
            (stack.merged_pairs if sheet.merged else stack.close_pairs).append((index - 1, index))
        if sheet.torn:
            stack.torn_sheets.append(index)
    # Outside the sheets the density sums cancel to ~1e-7 (float rounding): invisible in uint8.
    stack.instances = cumsum_axis0(inst_diff).astype(dtype)
    stack.density = cumsum_axis0(dens_diff)
    return stack
