"""Compiled (numba) kernels of the exact binary Betti matching used by :mod:`.topo`.

Imported only by :mod:`._betti_native`, which :mod:`.topo` imports lazily: numba loads on first use.

Conventions (those of the reference ``betti_matching`` module): voxels are the vertices of a cubical
complex (the "V" construction), cells are indexed by ``(x, y, z, type)`` in lexicographic order with
``x`` the first array axis, and within one filtration value cells enter in that index order.

Edge types: 0 = along x, 1 = along y, 2 = along z (from the base voxel).
Square types: 0 spans (y, z), 1 spans (x, z), 2 spans (x, y).
"""

from __future__ import annotations

import numba as nb
import numpy as np

_NJIT = {"nogil": True, "cache": True}


@nb.njit(**_NJIT)
def _find(parent: np.ndarray, a: int) -> int:
    """Union-find root of ``a`` with path halving."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


# --------------------------------------------------------------------------------------------
# dimension 0
# --------------------------------------------------------------------------------------------
@nb.njit(**_NJIT)
def matched_dim0(union: np.ndarray, has_p: np.ndarray, has_l: np.ndarray) -> int:
    """Matched H0 bars: merges, in edge-index order, of two groups that both hold P and L.

    Groups start as the union's 6-connected components (pre-merged here) and the single voxels
    outside it; the edges not inside the union are then added in index order. ``has_p``/``has_l``
    (flat, per voxel) mark prediction / label voxels.
    """
    nx, ny, nz = union.shape
    n = nx * ny * nz
    u = union.ravel()
    parent = np.arange(n, dtype=np.int32)
    fp = has_p.copy()
    fl = has_l.copy()
    sx = ny * nz
    # the union's own edges come first (value 0): merge its components
    for i in range(n):
        if not u[i]:
            continue
        z = i % nz
        y = (i // nz) % ny
        x = i // sx
        for t in range(3):
            if t == 0:
                if x + 1 >= nx:
                    continue
                j = i + sx
            elif t == 1:
                if y + 1 >= ny:
                    continue
                j = i + nz
            else:
                if z + 1 >= nz:
                    continue
                j = i + 1
            if not u[j]:
                continue
            ra = _find(parent, i)
            rb = _find(parent, j)
            if ra != rb:
                parent[rb] = ra
                fp[ra] |= fp[rb]
                fl[ra] |= fl[rb]
    matched = 0
    i = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                ui = u[i]
                for t in range(3):
                    if t == 0:
                        if x + 1 >= nx:
                            continue
                        j = i + sx
                    elif t == 1:
                        if y + 1 >= ny:
                            continue
                        j = i + nz
                    else:
                        if z + 1 >= nz:
                            continue
                        j = i + 1
                    if ui and u[j]:
                        continue
                    ra = _find(parent, i)
                    rb = _find(parent, j)
                    if ra == rb:
                        continue
                    if fp[ra] and fl[ra] and fp[rb] and fl[rb]:
                        matched += 1
                    parent[rb] = ra
                    fp[ra] |= fp[rb]
                    fl[ra] |= fl[rb]
                i += 1
    return matched


# --------------------------------------------------------------------------------------------
# dimension 1
# --------------------------------------------------------------------------------------------
@nb.njit(**_NJIT)
def _mix(x: np.uint64) -> np.uint64:
    """splitmix64 finaliser: a well-spread deterministic pseudo-random word."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    return x ^ (x >> np.uint64(31))


@nb.njit(**_NJIT)
def _highest_bit(vec: np.ndarray) -> int:
    """Position of the highest set bit of a bit-packed vector, or -1 when it is zero."""
    for w in range(vec.shape[0] - 1, -1, -1):
        word = vec[w]
        if word != 0:
            b = 63
            while (word >> np.uint64(b)) & np.uint64(1) == 0:
                b -= 1
            return w * 64 + b
    return -1


@nb.njit(**_NJIT)
def _insert(basis: np.ndarray, has: np.ndarray, vec: np.ndarray) -> bool:
    """Add ``vec`` (modified in place) to an echelon basis over Z/2; True when it was independent."""
    while True:
        hb = _highest_bit(vec)
        if hb < 0:
            return False
        if not has[hb]:
            basis[hb, :] = vec
            has[hb] = True
            return True
        vec ^= basis[hb]
