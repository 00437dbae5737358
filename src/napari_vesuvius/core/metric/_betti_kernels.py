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
def random_cycles(mask: np.ndarray, nwords: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``64 * nwords`` pseudo-random 1-cycles of the cubical complex of ``mask``, bit-packed.

    Each cycle is a uniformly random element of the cycle space: the edges outside a BFS spanning
    forest get random bits and the forest edges are then solved leaf-first so that every vertex has
    even degree. Random cycles span H1 of the complex with probability ``>= 1 - 2**(b1 - bits)``.
    Returns the bits of the y-edges and of the z-edges (the only ones the Seifert surfaces need),
    each of shape ``(nx, ny, nz, nwords)``.
    """
    nx, ny, nz = mask.shape
    nvox = nx * ny * nz
    ybits = np.zeros((nx, ny, nz, nwords), dtype=np.uint64)
    zbits = np.zeros((nx, ny, nz, nwords), dtype=np.uint64)
    pedge = np.full(nvox, -1, dtype=np.int64)  # edge id to the BFS parent (-2 for roots)
    parent = np.full(nvox, -1, dtype=np.int64)
    order = np.empty(nvox, dtype=np.int64)
    nord = 0
    sy = nz
    sx = ny * nz
    for start in range(nvox):
        sx_, rem = divmod(start, sx)
        sy_, sz_ = divmod(rem, sy)
        if not mask[sx_, sy_, sz_] or pedge[start] != -1:
            continue
        pedge[start] = -2
        order[nord] = start
        head = nord
        nord += 1
        while head < nord:
            v = order[head]
            head += 1
            vx, rem = divmod(v, sx)
            vy, vz = divmod(rem, sy)
            for k in range(6):
                t = k >> 1
                step = 1 if (k & 1) else -1
                ux, uy, uz = vx, vy, vz
                if t == 0:
                    ux += step
                    if ux < 0 or ux >= nx:
                        continue
                elif t == 1:
                    uy += step
                    if uy < 0 or uy >= ny:
                        continue
                else:
                    uz += step
                    if uz < 0 or uz >= nz:
                        continue
                u = (ux * ny + uy) * nz + uz
                if not mask[ux, uy, uz] or pedge[u] != -1:
                    continue
                base = v if step == 1 else u
                pedge[u] = base * 3 + t
                parent[u] = v
                order[nord] = u
                nord += 1
    acc = np.zeros((nvox, nwords), dtype=np.uint64)
    s64 = np.uint64(seed)
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                v = (x * ny + y) * nz + z
                for t in range(3):
                    ux, uy, uz = x, y, z
                    if t == 0:
                        ux += 1
                        if ux >= nx:
                            continue
                    elif t == 1:
                        uy += 1
                        if uy >= ny:
                            continue
                    else:
                        uz += 1
                        if uz >= nz:
                            continue
                    if not mask[ux, uy, uz]:
                        continue
                    u = (ux * ny + uy) * nz + uz
                    eid = v * 3 + t
                    if pedge[u] == eid or pedge[v] == eid:
                        continue  # a forest edge: solved below
                    for w in range(nwords):
                        r = _mix(s64 ^ _mix(np.uint64(eid * nwords + w)))
                        acc[v, w] ^= r
                        acc[u, w] ^= r
                        if t == 1:
                            ybits[x, y, z, w] = r
                        elif t == 2:
                            zbits[x, y, z, w] = r
    for i in range(nord - 1, -1, -1):
        v = order[i]
        e = pedge[v]
        if e < 0:
            continue
        p = parent[v]
        base, t = divmod(e, 3)
        bx, rem = divmod(base, sx)
        by, bz = divmod(rem, sy)
        for w in range(nwords):
            r = acc[v, w]
            acc[p, w] ^= r
            if t == 1:
                ybits[bx, by, bz, w] = r
            elif t == 2:
                zbits[bx, by, bz, w] = r
    return ybits, zbits


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


@nb.njit(**_NJIT)
def _find_xor(parent: np.ndarray, off: np.ndarray, a: int, pot: np.ndarray) -> int:
    """Root of ``a`` in a XOR-weighted union-find; ``pot`` receives a's potential.

    Full path compression: every node on the path is re-pointed at the root with its potential.
    """
    nw = pot.shape[0]
    for w in range(nw):
        pot[w] = 0
    r = a
    while parent[r] != r:
        for w in range(nw):
            pot[w] ^= off[r, w]
        r = parent[r]
    cur = a
    while parent[cur] != r and parent[cur] != cur:
        nxt = parent[cur]
        # potential of cur is pot_cur; potential of nxt is pot_cur ^ off[cur]; walk with pot_cur
        for w in range(nw):
            old = off[cur, w]
            off[cur, w] = pot[w]
            pot[w] ^= old
        parent[cur] = r
        cur = nxt
    # restore pot = potential of a (the walk above consumed it)
    for w in range(nw):
        pot[w] = 0
    if parent[a] != a:
        for w in range(nw):
            pot[w] = off[a, w]
    return r


@nb.njit(**_NJIT)
def matched_dim1(
    sq0: np.ndarray,
    sq1: np.ndarray,
    sq2: np.ndarray,
    ybits: np.ndarray,
    zbits: np.ndarray,
    lab_0: np.ndarray,
    nwp: int,
) -> tuple[int, int, int]:
    """Matched H1 bars, through Alexander duality; returns ``(matched, jumps_pred, jumps_label)``.

    The union's H1 classes die, in the reference's column order, when squares outside the union
    fill them; by duality this is the reverse-index Kruskal sweep over the graph whose nodes are
    the cubes (plus the outside) and whose edges are the squares outside the union. A square closing
    a cycle kills a prediction class exactly when the cycle's linking vector with the prediction's
    cycles is independent of those of the cycles closed by later squares; likewise for the label.
    ``ybits``/``zbits`` are the random cycles' y- and z-edges; the Seifert cochain of squares of
    types 2 and 1 is their XOR over larger x (accumulated during the sweep) and ``lab_0`` that of
    type-0 squares on the plane x = 0. The first ``nwp`` words are the prediction's.
    ``sq0``/``sq1``/``sq2`` say which squares of each type lie in the union (see
    :func:`squares_in`).
    """
    nx, ny, nz = ybits.shape[0], ybits.shape[1], ybits.shape[2]
    cx, cy, cz = max(nx - 1, 0), max(ny - 1, 0), max(nz - 1, 0)
    ncube = cx * cy * cz
    nw = ybits.shape[3]
    nwl = nw - nwp
    parent = np.arange(ncube + 1, dtype=np.int32)
    rank = np.zeros(ncube + 1, dtype=np.int8)
    off = np.zeros((ncube + 1, nw), dtype=np.uint64)
    basis_p = np.zeros((64 * nwp, nwp), dtype=np.uint64)
    has_p = np.zeros(64 * nwp, dtype=np.bool_)
    basis_l = np.zeros((64 * nwl, nwl), dtype=np.uint64)
    has_l = np.zeros(64 * nwl, dtype=np.bool_)
    acc_y = np.zeros((ny, nz, nw), dtype=np.uint64)
    acc_z = np.zeros((ny, nz, nw), dtype=np.uint64)
    pu = np.zeros(nw, dtype=np.uint64)
    pv = np.zeros(nw, dtype=np.uint64)
    lab = np.zeros(nw, dtype=np.uint64)
    vp = np.zeros(nwp, dtype=np.uint64)
    vl = np.zeros(nwl, dtype=np.uint64)
    matched = 0
    jumps_p = 0
    jumps_l = 0
    for x in range(nx - 1, -1, -1):
        if x + 1 < nx:
            for y in range(ny):
                for z in range(nz):
                    for w in range(nw):
                        acc_y[y, z, w] ^= ybits[x + 1, y, z, w]
                        acc_z[y, z, w] ^= zbits[x + 1, y, z, w]
        for y in range(ny - 1, -1, -1):
            for z in range(nz - 1, -1, -1):
                for t in range(2, -1, -1):
                    # the two cubes beside the square (ncube = the outside) and its label
                    if t == 2:
                        if x >= cx or y >= cy or sq2[x, y, z]:
                            continue
                        na = (x * cy + y) * cz + z - 1 if z >= 1 else ncube
                        nb_ = (x * cy + y) * cz + z if z < cz else ncube
                        for w in range(nw):
                            lab[w] = acc_y[y, z, w]
                    elif t == 1:
                        if x >= cx or z >= cz or sq1[x, y, z]:
                            continue
                        na = (x * cy + y - 1) * cz + z if y >= 1 else ncube
                        nb_ = (x * cy + y) * cz + z if y < cy else ncube
                        for w in range(nw):
                            lab[w] = acc_z[y, z, w]
                    else:
                        if y >= cy or z >= cz or sq0[x, y, z]:
                            continue
                        na = ((x - 1) * cy + y) * cz + z if x >= 1 else ncube
                        nb_ = (x * cy + y) * cz + z if x < cx else ncube
                        if x == 0:
                            for w in range(nw):
                                lab[w] = lab_0[y, z, w]
                        else:
                            for w in range(nw):
                                lab[w] = 0
                    ra = _find_xor(parent, off, na, pu)
                    rb = _find_xor(parent, off, nb_, pv)
                    if ra != rb:
                        if rank[ra] < rank[rb]:
                            ra, rb = rb, ra
                        parent[rb] = ra
                        for w in range(nw):
                            off[rb, w] = lab[w] ^ pu[w] ^ pv[w]
                        if rank[ra] == rank[rb]:
                            rank[ra] += 1
                        continue
                    nonzero_p = False
                    for w in range(nwp):
                        vp[w] = lab[w] ^ pu[w] ^ pv[w]
                        nonzero_p = nonzero_p or vp[w] != 0
                    nonzero_l = False
                    for w in range(nwl):
                        vl[w] = lab[nwp + w] ^ pu[nwp + w] ^ pv[nwp + w]
                        nonzero_l = nonzero_l or vl[w] != 0
                    jp = nonzero_p and _insert(basis_p, has_p, vp)
                    jl = nonzero_l and _insert(basis_l, has_l, vl)
                    jumps_p += jp
                    jumps_l += jl
                    if jp and jl:
                        matched += 1
    return matched, jumps_p, jumps_l
