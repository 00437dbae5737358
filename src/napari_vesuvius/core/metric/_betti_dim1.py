"""Compiled (numba) kernels of the dimension-1 Betti matching (see :mod:`._betti_native`).

Both work on sparse data so that their memory stays small and cache-resident:

- :func:`random_cycles` builds the random 1-cycles of a mask over its voxels only (a sorted list
  of flat indices), keeping the bits of the y- and z-edges of each mask voxel;
- :func:`matched_dim1` is the reverse-order Kruskal sweep of the duality graph (cubes + the
  outside, squares outside the union as edges). The sweep visits the squares x-plane by x-plane,
  and a plane's squares only touch cubes of the planes ``x`` and ``x - 1``, so the union-find keeps
  just two planes of cubes plus the outside: links always point to the same or the next (lower)
  plane, so when a plane is finished nothing still reachable points into it and its slot is
  recycled.

Cell conventions are those of :mod:`._betti_kernels`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._betti_kernels import _insert, _mix

_NJIT = {"nogil": True, "cache": True}


@nb.njit(**_NJIT)
def random_cycles(
    vox: np.ndarray, rank: np.ndarray, shape: tuple[int, int, int], nwords: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``64 * nwords`` pseudo-random 1-cycles of the complex of a mask given by its voxels.

    ``vox`` holds the mask's flat C-order indices, sorted, and ``rank`` maps a flat index to its
    position in ``vox`` (-1 outside the mask, see :func:`_betti_kernels.voxel_index`). Each cycle
    is a uniformly random element of the cycle space: the edges outside a BFS spanning forest get
    random bits and the forest edges are then solved leaf-first so that every vertex has even
    degree; random cycles span H1 with probability ``>= 1 - 2**(b1 - bits)``. Returns the bits of
    the y-edge and of the z-edge starting at each mask voxel (zero where that edge is not in the
    mask), each ``(len(vox), nwords)``.
    """
    nx, ny, nz = shape
    nm = vox.shape[0]
    sx = ny * nz
    ybits = np.zeros((nm, nwords), dtype=np.uint64)
    zbits = np.zeros((nm, nwords), dtype=np.uint64)
    pedge = np.full(nm, -1, dtype=np.int64)  # flat edge id (base * 3 + type) to the BFS parent
    parent = np.full(nm, -1, dtype=np.int32)
    order = np.empty(nm, dtype=np.int32)
    nord = 0
    for start in range(nm):
        if pedge[start] != -1:
            continue
        pedge[start] = -2
        order[nord] = start
        head = nord
        nord += 1
        while head < nord:
            a = order[head]
            head += 1
            v = vox[a]
            vx = v // sx
            vy = (v // nz) % ny
            vz = v % nz
            for k in range(6):
                t = k >> 1
                up = k & 1
                if t == 0:
                    if (up and vx + 1 >= nx) or (not up and vx == 0):
                        continue
                    u = v + sx if up else v - sx
                elif t == 1:
                    if (up and vy + 1 >= ny) or (not up and vy == 0):
                        continue
                    u = v + nz if up else v - nz
                else:
                    if (up and vz + 1 >= nz) or (not up and vz == 0):
                        continue
                    u = v + 1 if up else v - 1
                b = rank[u]
                if b < 0 or pedge[b] != -1:
                    continue
                base = v if up else u
                pedge[b] = base * 3 + t
                parent[b] = a
                order[nord] = b
                nord += 1
    acc = np.zeros((nm, nwords), dtype=np.uint64)
    s64 = np.uint64(seed)
    for a in range(nm):
        v = vox[a]
        vx = v // sx
        vy = (v // nz) % ny
        vz = v % nz
        for t in range(3):
            if t == 0:
                if vx + 1 >= nx:
                    continue
                u = v + sx
            elif t == 1:
                if vy + 1 >= ny:
                    continue
                u = v + nz
            else:
                if vz + 1 >= nz:
                    continue
                u = v + 1
            b = rank[u]
            if b < 0:
                continue
            eid = v * 3 + t
            if pedge[a] == eid or pedge[b] == eid:
                continue  # a forest edge: solved below
            for w in range(nwords):
                r = _mix(s64 ^ _mix(np.uint64(eid * nwords + w)))
                acc[a, w] ^= r
                acc[b, w] ^= r
                if t == 1:
                    ybits[a, w] = r
                elif t == 2:
                    zbits[a, w] = r
    for i in range(nord - 1, -1, -1):
        b = order[i]
        e = pedge[b]
        if e < 0:
            continue
        p = parent[b]
        base = e // 3
        t = e - base * 3
        c = b if vox[b] == base else p  # the edge's base voxel
        for w in range(nwords):
            r = acc[b, w]
            acc[p, w] ^= r
            if t == 1:
                ybits[c, w] = r
            elif t == 2:
                zbits[c, w] = r
    return ybits, zbits


@nb.njit(**_NJIT)
def _find_pot(parent: np.ndarray, off: np.ndarray, a: int, pot: np.ndarray) -> int:
    """Root of ``a`` in a XOR-weighted union-find, ``pot`` = a's potential; full path compression."""
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
        for w in range(nw):
            old = off[cur, w]
            off[cur, w] = pot[w]
            pot[w] ^= old
        parent[cur] = r
        cur = nxt
    for w in range(nw):
        pot[w] = 0
    if parent[a] != a:
        for w in range(nw):
            pot[w] = off[a, w]
    return r


@nb.njit(**_NJIT)
def _accumulate(
    acc: np.ndarray, vox: np.ndarray, bits: np.ndarray, lo: int, hi: int, nz: int, ny: int, w0: int
) -> None:
    """XOR the bits of the voxels ``vox[lo:hi]`` into ``acc[y, z, w0:]``."""
    nw = bits.shape[1]
    for i in range(lo, hi):
        v = vox[i]
        y = (v // nz) % ny
        z = v % nz
        for w in range(nw):
            acc[y, z, w0 + w] ^= bits[i, w]


@nb.njit(**_NJIT)
def matched_dim1(
    union: np.ndarray,
    pvox: np.ndarray,
    pyb: np.ndarray,
    pzb: np.ndarray,
    lvox: np.ndarray,
    lyb: np.ndarray,
    lzb: np.ndarray,
    top: np.ndarray,
) -> tuple[int, int, int]:
    """Matched H1 bars, through Alexander duality; returns ``(matched, jumps_pred, jumps_label)``.

    The union's H1 classes die, in the reference's column order, when squares outside the union
    fill them; by duality this is the reverse-index Kruskal sweep over the graph whose nodes are
    the cubes (plus the outside) and whose edges are the squares outside the union. A square closing
    a cycle kills a prediction class exactly when the cycle's linking vector with the prediction's
    random cycles is independent of those of the cycles closed by later squares; likewise for the
    label. The linking label of a square is its intersection with the cycles' Seifert surfaces:
    each cycle swept along -x to the plane x = 0 and closed there by sweeping along -y, so a
    type-2 (type-1) square at (x, y, z) counts the y-edges (z-edges) at (x' > x, y, z) and a type-0
    square at (0, y, z) the z-edges at (any x, y' > y, z). ``*vox``/``*yb``/``*zb`` come from
    :func:`random_cycles` of the prediction and of the label.

    The "sky" (cubes at x >= 1 above ``top[y, z]``, the highest union voxel of their columns) is
    merged into the outside node: a sky cube is first reached, in sweep order, by the type-0 square
    from the sky cube above it (or the outside), all labels between sky cubes are zero (no cycle
    edge above them, and none behind them on x = 0 since plane 0 is never sky), so every sky cube
    joins the outside's component with potential 0 before any other square reaches it, and squares
    between two sky cubes are zero closings. Skipping them changes no jump.
    """
    nx, ny, nz = union.shape
    cx, cy, cz = max(nx - 1, 0), max(ny - 1, 0), max(nz - 1, 0)
    u = union.reshape(-1)
    nwp = pyb.shape[1]
    nwl = lyb.shape[1]
    nw = nwp + nwl
    plane = cy * cz
    out = 2 * plane  # the outside node; plane x of cubes lives in slot x & 1
    sx = ny * nz
    parent = np.arange(out + 1, dtype=np.int32)
    rank = np.zeros(out + 1, dtype=np.int8)
    off = np.zeros((out + 1, nw), dtype=np.uint64)
    basis_p = np.zeros((64 * nwp, nwp), dtype=np.uint64)
    has_p = np.zeros(64 * nwp, dtype=np.bool_)
    basis_l = np.zeros((64 * nwl, nwl), dtype=np.uint64)
    has_l = np.zeros(64 * nwl, dtype=np.bool_)
    acc_y = np.zeros((ny, nz, nw), dtype=np.uint64)
    acc_z = np.zeros((ny, nz, nw), dtype=np.uint64)
    lab_0 = np.zeros((ny, nz, nw), dtype=np.uint64)
    # type-0 labels on x = 0: z-edges at any x and y' > y (suffix XOR along y, excluding y)
    _accumulate(lab_0, pvox, pzb, 0, pvox.shape[0], nz, ny, 0)
    _accumulate(lab_0, lvox, lzb, 0, lvox.shape[0], nz, ny, nwp)
    run = np.zeros((nz, nw), dtype=np.uint64)
    for y in range(ny - 1, -1, -1):
        for z in range(nz):
            for w in range(nw):
                cur = lab_0[y, z, w]
                lab_0[y, z, w] = run[z, w]
                run[z, w] ^= cur
    # positions (y, z) whose squares touch a non-sky cube for planes x <= work[y, z]
    work = np.full((ny, nz), -1, dtype=np.int64)
    for y in range(ny):
        for z in range(nz):
            m = -1
            if y < cy and z < cz:
                m = top[y, z] + 1
            if y < cy and 1 <= z <= cz:
                m = max(m, top[y, z - 1])
            if 1 <= y <= cy and z < cz:
                m = max(m, top[y - 1, z])
            work[y, z] = m
    work_row = np.full(ny, -1, dtype=np.int64)
    for y in range(ny):
        for z in range(nz):
            work_row[y] = max(work_row[y], work[y, z])
    pu = np.zeros(nw, dtype=np.uint64)
    pv = np.zeros(nw, dtype=np.uint64)
    lab = np.zeros(nw, dtype=np.uint64)
    vp = np.zeros(nwp, dtype=np.uint64)
    vl = np.zeros(nwl, dtype=np.uint64)
    p_hi = pvox.shape[0]
    l_hi = lvox.shape[0]
    matched = 0
    jumps_p = 0
    jumps_l = 0
    for x in range(nx - 1, -1, -1):
        if x + 1 < nx:  # add the y/z-edges of plane x + 1 to the swept Seifert labels
            p_lo = np.searchsorted(pvox, (x + 1) * sx)
            _accumulate(acc_y, pvox, pyb, p_lo, p_hi, nz, ny, 0)
            _accumulate(acc_z, pvox, pzb, p_lo, p_hi, nz, ny, 0)
            p_hi = p_lo
            l_lo = np.searchsorted(lvox, (x + 1) * sx)
            _accumulate(acc_y, lvox, lyb, l_lo, l_hi, nz, ny, nwp)
            _accumulate(acc_z, lvox, lzb, l_lo, l_hi, nz, ny, nwp)
            l_hi = l_lo
        cur_slot = (x & 1) * plane  # cubes of plane x
        low_slot = ((x - 1) & 1) * plane  # cubes of plane x - 1
        skip = x > 1 and cx > 0 and cy > 0 and cz > 0  # sky squares can be skipped
        for y in range(ny - 1, -1, -1):
            if skip and x > work_row[y]:
                continue
            for z in range(nz - 1, -1, -1):
                if skip and x > work[y, z]:
                    continue
                v = x * sx + y * nz + z
                rc = -1  # root (and pv: potential) of the cube (x, y, z), shared by the 3 squares
                for t in range(2, -1, -1):
                    if t == 2:
                        if x >= cx or y >= cy:
                            continue
                        sa = z < 1 or (x >= 1 and x > top[y, z - 1])
                        sb = z >= cz or (x >= 1 and x > top[y, z])
                        if sa and sb and (z >= 1 or z < cz):
                            continue  # between sky cubes: a zero closing
                        if u[v] and u[v + sx] and u[v + nz] and u[v + sx + nz]:
                            continue
                        na = out if sa else cur_slot + y * cz + z - 1
                        nb_ = out if sb else cur_slot + y * cz + z
                        for w in range(nw):
                            lab[w] = acc_y[y, z, w]
                    elif t == 1:
                        if x >= cx or z >= cz:
                            continue
                        sa = y < 1 or (x >= 1 and x > top[y - 1, z])
                        sb = y >= cy or (x >= 1 and x > top[y, z])
                        if sa and sb and (y >= 1 or y < cy):
                            continue
                        if u[v] and u[v + sx] and u[v + 1] and u[v + sx + 1]:
                            continue
                        na = out if sa else cur_slot + (y - 1) * cz + z
                        nb_ = out if sb else cur_slot + y * cz + z
                        for w in range(nw):
                            lab[w] = acc_z[y, z, w]
                    else:
                        if y >= cy or z >= cz:
                            continue
                        sa = x < 1 or (x >= 2 and x - 1 > top[y, z])
                        sb = x >= cx or (x >= 1 and x > top[y, z])
                        if sa and sb and (x >= 1 or x < cx):
                            continue
                        if u[v] and u[v + nz] and u[v + 1] and u[v + nz + 1]:
                            continue
                        na = out if sa else low_slot + y * cz + z
                        nb_ = out if sb else cur_slot + y * cz + z
                        for w in range(nw):
                            lab[w] = lab_0[y, z, w] if x == 0 else np.uint64(0)
                    ra = _find_pot(parent, off, na, pu)
                    if nb_ == out:
                        rb = out
                        for w in range(nw):
                            pv[w] = 0
                    elif rc < 0:
                        rc = _find_pot(parent, off, nb_, pv)
                        rb = rc
                    else:
                        while parent[rc] != rc:  # re-linked since: climb to the new root
                            for w in range(nw):
                                pv[w] ^= off[rc, w]
                            rc = parent[rc]
                        rb = rc
                    if ra != rb:
                        # the outside stays a root, and links only point to the same or the
                        # lower plane: then nothing on plane x - 1 points at plane x
                        if ra == out:
                            swap = False
                        elif rb == out:
                            swap = True
                        else:
                            sa_low = low_slot <= ra < low_slot + plane
                            sb_low = low_slot <= rb < low_slot + plane
                            swap = sb_low if sa_low != sb_low else rank[ra] < rank[rb]
                        if swap:
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
        if x < cx:  # plane x is done: recycle the slots of its non-sky cubes (the only ones used)
            for y in range(cy):
                for z in range(cz):
                    if x >= 1 and x > top[y, z]:
                        continue
                    i = cur_slot + y * cz + z
                    parent[i] = i
                    rank[i] = 0
                    for w in range(nw):
                        off[i, w] = 0
    return matched, jumps_p, jumps_l
