"""Exact Betti matching of two binary volumes, specialised to two filtration values.

The reference (``betti_matching``, Stucki et al., arXiv 2407.04683) runs on the inverted masks
(foreground 0, background 1) with the voxel-as-vertex cubical complex. With only two values every
finite bar is born at 0 and dies at 1, so per dimension k:

- the prediction's bars are its Betti numbers ``b_k`` (minus the one essential component for k=0);
- a bar of the union (the comparison image) dies at the first cell, in the reference's index order,
  that makes it a boundary. A prediction bar is matched to the union bar whose death is where the
  dimension of ``im(H_k(pred) -> H_k(union))`` intersected with the boundaries grows, and likewise
  for the label; a union death that grows both is one matched pair.

For k=0 that is a union-find over the edges outside the union; for k=2, cavities die with their
last cube; for k=1, Alexander duality turns it into a reverse Kruskal sweep over the complement with
linking numbers against random cycles of each mask (see :func:`_betti_dim1.matched_dim1`).
The counts equal the reference's exactly (see tests/test_metric_topo.py).
"""

from __future__ import annotations

from collections.abc import Callable

import cc3d
import numpy as np

from . import _betti_dim1 as _d1
from . import _betti_kernels as _k
from .memory import TOPO_WORD_BYTES

#: random cycles beyond b1: the chance that they fail to span H1 is below 2**-_MARGIN_BITS
_MARGIN_BITS = 64
#: random-cycle words a side starts with at most (see :func:`_matched_dim1`)
_START_WORDS = 4
_SEED_PRED = 0x5EED0001
_SEED_LABEL = 0x5EED0002


def _pair(m: np.ndarray, ax: int) -> np.ndarray:
    """AND of each voxel with its successor along ``ax`` (one entry per edge along ``ax``)."""
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[ax] = slice(None, -1)
    hi[ax] = slice(1, None)
    return m[tuple(lo)] & m[tuple(hi)]


def _squares_in(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which squares of types 0 (y-z), 1 (x-z), 2 (x-y) have all four vertices in ``mask``."""
    return (
        np.ascontiguousarray(_pair(_pair(mask, 1), 2)),
        np.ascontiguousarray(_pair(_pair(mask, 0), 2)),
        np.ascontiguousarray(_pair(_pair(mask, 0), 1)),
    )


def euler_characteristic(mask: np.ndarray) -> int:
    """Euler characteristic (vertices - edges + squares - cubes) of the complex of ``mask``."""
    v = int(np.count_nonzero(mask))
    e = sum(int(np.count_nonzero(_pair(mask, ax))) for ax in range(3))
    f = sum(int(np.count_nonzero(_pair(_pair(mask, a), b))) for a, b in ((0, 1), (0, 2), (1, 2)))
    c = int(np.count_nonzero(_pair(_pair(_pair(mask, 0), 1), 2)))
    return v - e + f - c


def _background_cavities(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected background components and which of them are cavities (touch no face).

    These are the components of the complement of the cubical complex: non-mask voxels of one cube
    are 26-adjacent, and a component reaches the outside exactly when it has a voxel on a face.
    Returns ``(labels uint32, bounded bool per label)``.
    """
    lab, n = cc3d.connected_components((~mask).view(np.uint8), connectivity=26, return_N=True)
    bounded = np.ones(int(n) + 1, dtype=bool)
    bounded[0] = False
    for ax in range(3):
        for end in (0, -1):
            bounded[np.take(lab, end, axis=ax)] = False
    return lab, bounded


class _Mask:
    """One binary mask of a block with its components, cavities and Betti numbers."""

    def __init__(
        self, mask: np.ndarray, keep_labels: bool = False, cavities: bool = True, keep_voxels: bool = True
    ) -> None:
        self.mask = mask
        voxels = np.flatnonzero(mask)
        index = _k.voxel_index(voxels, mask.size)
        n, chi, comp = _k.components_euler(voxels, index, mask.shape)
        self.b0 = int(n)
        #: 6-connected component labels per voxel (kept for the union, which dimension 0 needs)
        self.fg_label: np.ndarray | None = None
        if keep_labels:
            self.fg_label = np.zeros(mask.shape, dtype=np.uint32)
            self.fg_label.ravel()[voxels] = comp
        del comp
        #: sorted flat indices of the voxels and the dense map back (dimension 1 needs them; the
        #: union does not keep them: ``keep_voxels=False`` leaves empty arrays)
        self.voxels = voxels if keep_voxels else np.empty(0, dtype=voxels.dtype)
        self.index = index if keep_voxels else np.empty(0, dtype=index.dtype)
        del voxels, index
        #: background components, which are cavities, b2 and b1 (None without ``cavities``)
        self.bg_label: np.ndarray | None = None
        self.bounded: np.ndarray | None = None
        self.b2: int | None = None
        self.b1: int | None = None
        if cavities:
            self.bg_label, self.bounded = _background_cavities(mask)
            self.b2 = int(np.count_nonzero(self.bounded))
            self.b1 = self.b0 + self.b2 - int(chi) if self.b0 else 0


def _matched_dim0(pred: np.ndarray, label: np.ndarray, union: _Mask) -> int:
    """Matched H0 bars (see :func:`_betti_kernels.matched_dim0`); the sweep stops as soon as no
    union component group holds only prediction or only label voxels."""
    lab = union.fg_label
    if lab is None:
        raise ValueError("dimension 0 needs the union's component labels (keep_labels=True)")
    has_p = np.zeros(union.b0 + 1, dtype=bool)
    has_p[lab[pred]] = True
    has_l = np.zeros(union.b0 + 1, dtype=bool)
    has_l[lab[label]] = True
    has_p[0] = has_l[0] = False
    return int(_k.matched_dim0(lab, has_p, has_l))


def _matched_dim2(pred: _Mask, label: _Mask, union_mask: _Mask) -> int:
    """Matched H2 bars.

    A union cavity dies with its last cube in index order (C-order over cubes, cube = its lowest
    corner; a background voxel at v lies in cubes up to v clipped to the cube grid). A prediction
    cavity dies, in the union, with the last-dying union cavity it holds; a union cavity matches when
    it is that one for a prediction cavity and for a label cavity.
    """
    union = union_mask.mask
    lab_c, bnd_c = union_mask.bg_label, union_mask.bounded
    if lab_c is None or bnd_c is None:
        raise ValueError("dimension 2 needs the union's cavities (cavities=True)")
    idx = np.flatnonzero(bnd_c[lab_c].ravel())
    if idx.size == 0:
        return 0
    shape = union.shape
    coords = np.unravel_index(idx, shape)
    cdims = [max(n - 1, 1) for n in shape]
    key = np.ravel_multi_index(
        tuple(np.minimum(c, d - 1) for c, d in zip(coords, cdims, strict=True)), tuple(cdims)
    )
    cav = lab_c.ravel()[idx]

    def last_cavities(m: _Mask) -> np.ndarray:
        grp = m.bg_label.ravel()[idx]
        keep = m.bounded[grp]
        g, k, c = grp[keep], key[keep], cav[keep]
        if g.size == 0:
            return np.empty(0, dtype=cav.dtype)
        order = np.lexsort((k, g))
        g, c = g[order], c[order]
        last = np.flatnonzero(np.r_[g[1:] != g[:-1], True])
        return np.unique(c[last])

    return int(np.intersect1d(last_cavities(pred), last_cavities(label)).size)


def _cube_tops(union: np.ndarray) -> np.ndarray:
    """Per column of cubes ``(y, z)``: the highest x of a union voxel among its 4 voxel columns.

    Cubes above it (x > top, x >= 1) form the "sky": every square between them has a zero linking
    label and they are already joined to the outside when first reached, so the sweep treats them
    as the outside node (see :func:`_betti_dim1.matched_dim1`). -1 marks empty columns.
    """
    nx = union.shape[0]
    has = union.any(axis=0)
    h = np.where(has, nx - 1 - np.argmax(union[::-1], axis=0), -1).astype(np.int32)
    top = np.maximum(np.maximum(h[:-1, :-1], h[1:, :-1]), np.maximum(h[:-1, 1:], h[1:, 1:]))
    return np.ascontiguousarray(top)


def dim1_sweep_bytes(pred_voxels: int, label_voxels: int, nwp: int, nwl: int) -> int:
    """Memory of the random cycles of one dimension-1 sweep (the part that grows with the words)."""
    return TOPO_WORD_BYTES * (pred_voxels * nwp + label_voxels * nwl)


def _sweep_dim1(union: np.ndarray, pred: _Mask, label: _Mask, nwp: int, nwl: int) -> tuple[int, int, int]:
    """One duality sweep with ``nwp``/``nwl`` words of random prediction/label cycles."""
    yp, zp = _d1.random_cycles(pred.voxels, pred.index, pred.mask.shape, nwp, _SEED_PRED)
    yl, zl = _d1.random_cycles(label.voxels, label.index, label.mask.shape, nwl, _SEED_LABEL)
    m, jp, jl = _d1.matched_dim1(union, pred.voxels, yp, zp, label.voxels, yl, zl, _cube_tops(union))
    return int(m), int(jp), int(jl)


def _matched_dim1(
    pred: _Mask, label: _Mask, union: np.ndarray, on_words: Callable[[int], None] | None = None
) -> int:
    """Matched H1 bars; random-cycle widths grow until they provably exceed the ranks found.

    The number of classes each side can see is at most its b1; with ``64 * w`` random cycles the
    sweep finds ``min(rank, 64 * w)`` jumps with probability ``>= 1 - 2**(rank - 64 * w)``, so a
    result is accepted once the jumps found stay ``_MARGIN_BITS`` below the width. Up to
    ``_START_WORDS`` words a side starts at the width its b1 needs (one sweep); a wider need
    starts there and grows only if the jumps found call for it (a word costs far less than a sweep).
    ``on_words(bytes)`` is told the random cycles' memory before each sweep (it may refuse by raising).
    """
    full_p = (pred.b1 + _MARGIN_BITS + 63) // 64
    full_l = (label.b1 + _MARGIN_BITS + 63) // 64
    nwp, nwl = min(_START_WORDS, full_p), min(_START_WORDS, full_l)
    while True:
        if on_words is not None:
            on_words(dim1_sweep_bytes(pred.voxels.size, label.voxels.size, nwp, nwl))
        m, jp, jl = _sweep_dim1(union, pred, label, nwp, nwl)
        ok_p = nwp == full_p or jp + _MARGIN_BITS <= 64 * nwp
        ok_l = nwl == full_l or jl + _MARGIN_BITS <= 64 * nwl
        if ok_p and ok_l:
            return m
        if not ok_p:
            nwp = min(full_p, (jp + _MARGIN_BITS + 63) // 64 + nwp)
        if not ok_l:
            nwl = min(full_l, (jl + _MARGIN_BITS + 63) // 64 + nwl)


def block_counts(
    pred: np.ndarray, label: np.ndarray, on_words: Callable[[int], None] | None = None
) -> dict[int, dict[str, int]]:
    """Per-dimension ``{"m", "p", "g"}`` of one block (no tiling): boolean C-contiguous 3D arrays.

    Working arrays are dropped as soon as the dimensions that need them are done (memory: see
    :mod:`.memory`); ``on_words`` sees the dimension-1 random cycles' bytes before each sweep.
    """
    zero = {k: {"m": 0, "p": 0, "g": 0} for k in range(3)}
    if pred.size == 0:
        return zero
    p = _Mask(pred)
    g = _Mask(label)
    counts = {
        0: {"m": 0, "p": max(p.b0 - 1, 0), "g": max(g.b0 - 1, 0)},
        1: {"m": 0, "p": p.b1, "g": g.b1},
        2: {"m": 0, "p": p.b2, "g": g.b2},
    }
    if p.b0 == 0 or g.b0 == 0:
        return counts
    need = (p.b0 > 1 and g.b0 > 1, p.b1 > 0 and g.b1 > 0, p.b2 > 0 and g.b2 > 0)
    if not any(need):
        return counts
    u = _Mask(pred | label, keep_labels=need[0], cavities=need[2], keep_voxels=False)
    if need[0]:
        counts[0]["m"] = _matched_dim0(pred, label, u)
    u.fg_label = None
    if need[2]:
        counts[2]["m"] = _matched_dim2(p, g, u)
    for m in (p, g, u):  # dimension 1 needs only the masks, their voxels and voxel maps
        m.bg_label = m.bounded = None
    if need[1] and u.b1 != 0:  # no union tunnel (when known): nothing can be matched
        counts[1]["m"] = _matched_dim1(p, g, u.mask, on_words)
    return counts


def warm_up() -> dict[int, dict[str, int]]:
    """Load every kernel (from numba's cache, or compile it) with the argument types scoring uses, on a
    tiny pair with matched bars in all three dimensions. :func:`.score.score_volume` runs this on a
    thread while it reads the volumes, so that a fresh process (the ``score`` command) does not pay
    for it after reading."""
    solid = np.zeros((9, 9, 9), dtype=bool)
    solid[1:8, 1:8, 1:8] = True
    solid[2, 2, 2] = False  # a cavity
    solid[5, 5, :] = False  # a tunnel
    solid[0, 0, 0] = True  # a second component
    other = solid.copy()
    other[0, 0, 1] = True
    return block_counts(solid, other)
