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
def matched_dim0(lab: np.ndarray, has_p: np.ndarray, has_l: np.ndarray) -> int:
    """Matched H0 bars: merges, in edge-index order, of two groups that both hold P and L.

    Groups start as the union's 6-connected components (``lab`` > 0, uint32 labels from cc3d;
    ``has_p``/``has_l`` say which hold prediction / label voxels) and the single voxels outside it;
    the edges not inside the union are then added in index order. A P-and-L group count only drops
    by one per counted merge and only grows when a P-only group meets an L-only group, and the
    whole block ends as one group: so once no P-only or no L-only group is left the remaining
    merges add ``active - 1`` and the sweep stops early.
    """
    nx, ny, nz = lab.shape
    n = nx * ny * nz
    ncomp = has_p.shape[0] - 1
    lf = lab.reshape(-1)
    parent = np.arange(ncomp + 1 + n, dtype=np.int32)
    kind = np.zeros(ncomp + 1 + n, dtype=np.uint8)  # bit 0: holds P, bit 1: holds L
    n_p = 0
    n_l = 0
    active = 0
    for c in range(1, ncomp + 1):
        kind[c] = np.uint8(has_p[c]) | (np.uint8(has_l[c]) << np.uint8(1))
        n_p += kind[c] == 1
        n_l += kind[c] == 2
        active += kind[c] == 3
    matched = 0
    sx = ny * nz
    i = 0
    for x in range(nx):
        if n_p == 0 or n_l == 0:
            break
        for y in range(ny):
            for z in range(nz):
                li = lf[i]
                a = li if li > 0 else ncomp + 1 + i
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
                    lj = lf[j]
                    if li > 0 and lj > 0:
                        continue  # inside the union: pre-merged
                    b = lj if lj > 0 else ncomp + 1 + j
                    ra = _find(parent, a)
                    rb = _find(parent, b)
                    if ra == rb:
                        continue
                    ka = kind[ra]
                    kb = kind[rb]
                    k = ka | kb
                    if ka == 3 and kb == 3:
                        matched += 1
                        active -= 1
                    elif k == 3 and ka != 3 and kb != 3:
                        active += 1
                    n_p -= (ka == 1) + (kb == 1) - (k == 1)
                    n_l -= (ka == 2) + (kb == 2) - (k == 2)
                    parent[rb] = ra
                    kind[ra] = k
                i += 1
    return matched + max(active - 1, 0)


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


# --------------------------------------------------------------------------------------------
# per-mask statistics on the mask's voxels only
# --------------------------------------------------------------------------------------------
@nb.njit(**_NJIT)
def voxel_index(vox: np.ndarray, nvox: int) -> np.ndarray:
    """Dense map flat index -> position in ``vox`` (-1 outside the mask)."""
    index = np.full(nvox, -1, dtype=np.int32)
    for i in range(vox.shape[0]):
        index[vox[i]] = i
    return index


@nb.njit(**_NJIT)
def components_euler(
    vox: np.ndarray, index: np.ndarray, shape: tuple[int, int, int]
) -> tuple[int, int, np.ndarray]:
    """6-connected components and Euler characteristic of a mask given by its sorted voxels.

    Returns ``(n_components, euler, comp)`` with ``comp[i]`` in ``1..n`` the component of ``vox[i]``.
    The Euler characteristic counts vertices - edges + squares - cubes of the voxel-as-vertex
    complex, each cell counted at its lowest corner.
    """
    nx, ny, nz = shape
    sx = ny * nz
    nm = vox.shape[0]
    parent = np.arange(nm, dtype=np.int32)
    chi = 0
    for i in range(nm):
        v = vox[i]
        x = v // sx
        y = (v // nz) % ny
        z = v % nz
        bx = x + 1 < nx and index[v + sx] >= 0
        by = y + 1 < ny and index[v + nz] >= 0
        bz = z + 1 < nz and index[v + 1] >= 0
        chi += 1 - bx - by - bz
        sxy = bx and by and index[v + sx + nz] >= 0
        sxz = bx and bz and index[v + sx + 1] >= 0
        syz = by and bz and index[v + nz + 1] >= 0
        chi += sxy + sxz + syz
        if sxy and sxz and syz and index[v + sx + nz + 1] >= 0:
            chi -= 1
        for t in range(3):
            if t == 0:
                if not bx:
                    continue
                j = index[v + sx]
            elif t == 1:
                if not by:
                    continue
                j = index[v + nz]
            else:
                if not bz:
                    continue
                j = index[v + 1]
            ra = _find(parent, i)
            rb = _find(parent, j)
            if ra != rb:
                if ra < rb:
                    parent[rb] = ra
                else:
                    parent[ra] = rb
    comp = np.zeros(nm, dtype=np.uint32)
    n = 0
    for i in range(nm):
        r = _find(parent, i)
        if r == i:
            n += 1
            comp[i] = n
        else:
            comp[i] = comp[r]
    return n, chi, comp
