"""TopoScore (Betti matching) tests: hand-made shapes, a brute-force reference, the reference module.

The brute force below is the textbook computation the reference module performs, written out for
tiny volumes: persistence pairs by Z/2 boundary-matrix reduction of the voxel-as-vertex cubical
complex of each inverted mask (cells ordered by (value, (x, y, z, type))), the comparison image
``min`` of the two, the image reductions (comparison columns, input rows) and the induced matching
through the comparison bars (arXiv 2407.04683).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.metric.topo import (
    TopoResult,
    combine,
    tile_slices,
    topo_counts,
    topo_f1,
    topo_score,
)

ONE = (1, 1, 1)


# ------------------------------------------------------------------------------------------------
# brute-force Betti matching on tiny volumes
# ------------------------------------------------------------------------------------------------
_OFFS = {  # vertex offsets of a cell (dim, type); types as in the reference's Cube encoding
    (0, 0): [(0, 0, 0)],
    (1, 0): [(0, 0, 0), (1, 0, 0)],
    (1, 1): [(0, 0, 0), (0, 1, 0)],
    (1, 2): [(0, 0, 0), (0, 0, 1)],
    (2, 0): [(0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1)],
    (2, 1): [(0, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 1)],
    (2, 2): [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)],
    (3, 0): [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)],
}


def _cells(shape: tuple[int, int, int], dim: int) -> list[tuple[int, int, int, int]]:
    out = []
    for x, y, z in itertools.product(*(range(n) for n in shape)):
        for t in range(3 if dim in (1, 2) else 1):
            verts = _OFFS[(dim, t)]
            if all(x + a < shape[0] and y + b < shape[1] and z + c < shape[2] for a, b, c in verts):
                out.append((x, y, z, t))
    return out


def _faces(cell: tuple[int, int, int, int], dim: int) -> set[tuple[int, int, int, int]]:
    """Boundary of a cell as (x, y, z, type) of its codimension-1 faces."""
    x, y, z, t = cell
    verts = {(x + a, y + b, z + c) for a, b, c in _OFFS[(dim, t)]}
    out = set()
    for ft in range(3 if dim - 1 in (1, 2) else 1):
        for vx, vy, vz in verts:
            fv = {(vx + a, vy + b, vz + c) for a, b, c in _OFFS[(dim - 1, ft)]}
            if fv <= verts:
                out.add((vx, vy, vz, ft))
    return out


def _reduce(cols: list, rows_key, boundary) -> dict:
    """Standard column reduction over Z/2; returns {column: pivot row} (pivot = max under rows_key)."""
    pivots: dict = {}
    reduced: dict = {}
    out = {}
    for col in cols:
        vec = set(boundary(col))
        while vec:
            low = max(vec, key=rows_key)
            if low in pivots:
                vec ^= reduced[pivots[low]]
            else:
                pivots[low] = col
                reduced[col] = vec
                out[col] = low
                break
    return out


def brute_force_counts(pred: np.ndarray, label: np.ndarray) -> dict[int, dict[str, int]]:
    """Betti matching counts of one block, by explicit reductions (tiny volumes only)."""
    vals = [1 - pred.astype(int), 1 - label.astype(int)]
    vals.append(np.minimum(vals[0], vals[1]))
    shape = pred.shape
    counts = {}
    for k in range(3):
        cols = _cells(shape, k + 1)

        def birth(f, cell, dim):
            x, y, z, t = cell
            return max(f[x + a, y + b, z + c] for a, b, c in _OFFS[(dim, t)])

        def order(f, dim):
            return lambda cell: (birth(f, cell, dim), cell)

        def bnd(cell, dim=k + 1):
            return _faces(cell, dim)

        pairs = []
        for f in vals:  # input 0, input 1, comparison
            red = _reduce(sorted(cols, key=order(f, k + 1)), order(f, k), bnd)
            pairs.append({c: r for c, r in red.items() if birth(f, r, k) != birth(f, c, k + 1)})
        by_birth = [{r: c for c, r in pairs[i].items()} for i in range(2)]
        comp_cols = sorted(cols, key=order(vals[2], k + 1))
        images = [_reduce(comp_cols, order(vals[i], k), bnd) for i in range(2)]
        matched = 0
        for death in pairs[2]:
            births = [images[i].get(death) for i in range(2)]
            if all(b is not None and b in by_birth[i] for i, b in enumerate(births)):
                matched += 1
        counts[k] = {"m": matched, "p": len(pairs[0]), "g": len(pairs[1])}
    return counts


# ------------------------------------------------------------------------------------------------
# hand-made shapes
# ------------------------------------------------------------------------------------------------
def _sheet(shape=(12, 12, 12), z0=4, thick=3) -> np.ndarray:
    v = np.zeros(shape, bool)
    v[z0 : z0 + thick] = True
    return v


def _hollow_cube(shape=(9, 9, 9), lo=2, hi=7) -> np.ndarray:
    v = np.zeros(shape, bool)
    v[lo:hi, lo:hi, lo:hi] = True
    v[lo + 1 : hi - 1, lo + 1 : hi - 1, lo + 1 : hi - 1] = False
    return v


def _torus(shape=(10, 10, 10)) -> np.ndarray:
    v = np.zeros(shape, bool)
    v[4:6, 2:8, 2:8] = True
    v[4:6, 4:6, 4:6] = False
    return v


def test_sheet_has_no_finite_bars() -> None:
    s = _sheet()
    r = topo_score(s, s, tiles=ONE)
    assert r.counts == {k: {"m": 0, "p": 0, "g": 0} for k in range(3)}
    assert r.f1 == {0: None, 1: None, 2: None}
    assert r.score == 1.0


def test_sheet_with_hole_is_a_matched_tunnel() -> None:
    s = _sheet()
    s[:, 5:7, 5:7] = False
    r = topo_score(s, s, tiles=ONE)
    assert r.counts[1] == {"m": 1, "p": 1, "g": 1}
    assert r.score == 1.0
    # the label has no hole: the prediction's tunnel is unmatched, F1_1 = 0.5 / (1 + 0.5)
    r2 = topo_score(s, _sheet(), tiles=ONE)
    assert r2.counts[1] == {"m": 0, "p": 1, "g": 0}
    assert r2.f1[1] == pytest.approx(0.5 / 1.5)
    assert r2.score == pytest.approx(0.5 / 1.5)


def test_two_holes_one_shared() -> None:
    s = _sheet(shape=(12, 16, 12))
    s[:, 3:5, 5:7] = False
    t = s.copy()
    s[:, 10:12, 5:7] = False  # the prediction has an extra hole
    c = topo_counts(s, t, tiles=ONE)
    assert c[1] == {"m": 1, "p": 2, "g": 1}


def test_two_sheets_bridged() -> None:
    two = _sheet(shape=(14, 10, 10), z0=2) | _sheet(shape=(14, 10, 10), z0=9)
    bridged = two.copy()
    bridged[2:12, 4:6, 4:6] = True
    c = topo_counts(bridged, two, tiles=ONE)
    assert c[0] == {"m": 0, "p": 0, "g": 1}
    assert topo_counts(two, two, tiles=ONE)[0] == {"m": 1, "p": 1, "g": 1}


def test_hollow_cube_and_nested_cavities() -> None:
    h = _hollow_cube()
    c = topo_counts(h, h, tiles=ONE)
    assert c[2] == {"m": 1, "p": 1, "g": 1}
    assert c[0]["p"] == 0 and c[1]["p"] == 0
    nested = _hollow_cube(shape=(13, 13, 13), lo=1, hi=12) | _hollow_cube(shape=(13, 13, 13), lo=4, hi=9)
    c2 = topo_counts(nested, nested, tiles=ONE)
    assert c2[0] == {"m": 1, "p": 1, "g": 1}
    assert c2[2] == {"m": 2, "p": 2, "g": 2}
    outer = _hollow_cube(shape=(13, 13, 13), lo=1, hi=12)
    c3 = topo_counts(nested, outer, tiles=ONE)
    assert c3[2]["p"] == 2 and c3[2]["g"] == 1 and c3[2]["m"] == 1


def test_torus_and_shifted_torus() -> None:
    t = _torus()
    assert topo_counts(t, t, tiles=ONE)[1] == {"m": 1, "p": 1, "g": 1}
    far = np.zeros_like(t)
    far[1:3, 2:8, 2:8] = True
    far[1:3, 4:6, 4:6] = False
    # two tori that do not share a tunnel in the union: the union has both, none is matched
    assert topo_counts(t, far, tiles=ONE)[1] == {"m": 0, "p": 1, "g": 1}


def test_dust_empty_and_one_empty() -> None:
    rng = np.random.default_rng(3)
    dust = np.zeros((12, 12, 12), bool)
    pts = rng.choice(12**3 // 8, size=10, replace=False)
    dust[::2, ::2, ::2].flat[pts] = True
    assert topo_counts(dust, dust, tiles=ONE)[0] == {"m": 9, "p": 9, "g": 9}
    empty = np.zeros_like(dust)
    r = topo_score(empty, empty)
    assert r.score == 1.0 and r.f1 == {0: None, 1: None, 2: None}
    r2 = topo_score(empty, dust, tiles=ONE)
    assert r2.counts[0] == {"m": 0, "p": 0, "g": 9} and r2.f1[0] == 0.0 and r2.score == 0.0
    r3 = topo_score(dust, empty, tiles=ONE)
    assert r3.f1[0] == pytest.approx(0.5 / 9.5)


# ------------------------------------------------------------------------------------------------
# brute force on many random tiny volumes
# ------------------------------------------------------------------------------------------------
def _random_pairs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers(2, 6, 3))
        d = rng.uniform(0.3, 0.95)
        p = rng.random(shape) < d
        if i % 2:
            g = p ^ (rng.random(shape) < rng.uniform(0.05, 0.2))
        else:
            g = rng.random(shape) < rng.uniform(0.3, 0.95)
        yield p, g


@pytest.mark.slow
def test_brute_force_reference_on_random_tiny_volumes() -> None:
    nonzero = [0, 0, 0]
    for p, g in _random_pairs(100, seed=11):
        expected = brute_force_counts(p, g)
        assert topo_counts(p, g, tiles=ONE) == expected, (p.astype(int).tolist(), g.astype(int).tolist())
        for k in range(3):
            nonzero[k] += expected[k]["m"] > 0
    assert nonzero[0] > 0 and nonzero[1] > 0, nonzero  # cavities: see test_brute_force_cavities


@pytest.mark.slow
def test_brute_force_empty_sky_and_lone_components() -> None:
    """Volumes empty above some height (the dimension-1 sweep maps that sky to the outside) and with
    components only one side has (dimension 0 cannot take its no-sweep shortcut)."""
    rng = np.random.default_rng(17)
    seen = [0, 0]
    for i in range(60):
        shape = tuple(int(s) for s in rng.integers(3, 7, 3))
        p = rng.random(shape) < rng.uniform(0.4, 0.9)
        g = p ^ (rng.random(shape) < 0.12)
        cut = rng.integers(1, shape[0], size=(shape[1], shape[2]))  # a ragged ceiling per column
        sky = np.arange(shape[0])[:, None, None] >= cut[None]
        p &= ~sky
        g &= ~sky
        if i % 3 == 0:  # lone voxels on one side only
            p[-1, 0, 0] = True
            g[-1, -1, -1] = True
        expected = brute_force_counts(p, g)
        seen[0] += expected[0]["m"] > 0
        seen[1] += expected[1]["m"] > 0
        assert topo_counts(p, g, tiles=ONE) == expected, (p.astype(int).tolist(), g.astype(int).tolist())
    assert seen[0] > 0 and seen[1] > 0, seen


def test_mask_statistics_kernel() -> None:
    """The sparse component/Euler kernel agrees with cc3d and the dense Euler characteristic."""
    import cc3d

    from napari_vesuvius.core.metric import _betti_kernels as kernels
    from napari_vesuvius.core.metric._betti_native import euler_characteristic

    rng = np.random.default_rng(8)
    for _ in range(20):
        m = rng.random(tuple(int(s) for s in rng.integers(1, 12, 3))) < rng.uniform(0.1, 0.9)
        vox = np.flatnonzero(m)
        n, chi, comp = kernels.components_euler(vox, kernels.voxel_index(vox, m.size), m.shape)
        ref, n_ref = cc3d.connected_components(m.view(np.uint8), connectivity=6, return_N=True)
        assert n == n_ref and chi == euler_characteristic(m)
        labels = np.zeros(m.size, np.int64)
        labels[vox] = comp
        # the same partition as cc3d's, up to renumbering
        pairs = set(zip(labels[vox].tolist(), ref.ravel()[vox].tolist(), strict=True))
        assert len(pairs) == n


@pytest.mark.slow
def test_brute_force_cavities() -> None:
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(25):
        shape = tuple(int(s) for s in rng.integers(4, 6, 3))
        p = np.ones(shape, bool)
        p[1:-1, 1:-1, 1:-1] = rng.random(tuple(n - 2 for n in shape)) > 0.35  # interior holes
        p ^= rng.random(shape) < 0.05
        g = p ^ (rng.random(shape) < 0.06)
        expected = brute_force_counts(p, g)
        hits += expected[2]["m"] > 0
        assert topo_counts(p, g, tiles=ONE) == expected
    assert hits > 0


# ------------------------------------------------------------------------------------------------
# API
# ------------------------------------------------------------------------------------------------
def test_tile_slices_odd_sizes() -> None:
    sl = tile_slices((5, 4, 1))
    assert len(sl) == 4  # the empty halves of the size-1 axis are left out
    assert sl[0] == (slice(0, 3), slice(0, 2), slice(0, 1))
    assert sl[-1] == (slice(3, 5), slice(2, 4), slice(0, 1))
    with pytest.raises(ValueError):
        tile_slices((4, 4, 4), (2, 0, 2))


def test_f1_and_combine_rules() -> None:
    counts = {0: {"m": 1, "p": 2, "g": 2}, 1: {"m": 0, "p": 3, "g": 0}, 2: {"m": 0, "p": 0, "g": 0}}
    f1 = topo_f1(counts)
    assert f1 == {0: 0.5, 1: pytest.approx(0.5 / 3.5), 2: None}
    assert combine(f1) == pytest.approx((0.34 * 0.5 + 0.33 * 0.5 / 3.5) / 0.67)
    assert combine({0: None, 1: None, 2: None}) == 1.0


def test_result_to_dict_and_errors() -> None:
    s = _sheet()
    d = topo_score(s.astype(np.uint8), s.astype(np.float32), tiles=ONE).to_dict()
    assert set(d) == {"score", "counts", "f1"} and d["counts"]["1"] == {"m": 0, "p": 0, "g": 0}
    assert isinstance(topo_score(s, s), TopoResult)
    with pytest.raises(VolumeError, match="differs"):
        topo_score(s, s[:-1])
    with pytest.raises(VolumeError, match="3D"):
        topo_score(s[0], s[0])
    with pytest.raises(ValueError, match="backend"):
        topo_score(s, s, backend="nope")
    nan = s.astype(np.float32)
    nan[0, 0, 0] = np.nan  # NaN counts as background
    assert topo_counts(nan, s, tiles=ONE) == topo_counts(s, s, tiles=ONE)


# ------------------------------------------------------------------------------------------------
# the reference module, when importable
# ------------------------------------------------------------------------------------------------
def _sheets_volume(rng: np.random.Generator, n: int) -> np.ndarray:
    """Wavy sheets with holes plus dust: the kind of content the metric sees."""
    zz, yy, xx = np.mgrid[:n, :n, :n]
    v = np.zeros((n, n, n), bool)
    for z0 in rng.uniform(3, n - 6, size=3):
        surf = z0 + 2.5 * np.sin(yy / rng.uniform(3, 7)) * np.cos(xx / rng.uniform(3, 7))
        v |= (zz >= surf) & (zz < surf + rng.integers(2, 4))
    for _ in range(4):
        c = rng.integers(2, n - 2, 3)
        v[c[0] - 2 : c[0] + 2, c[1] - 1 : c[1] + 1, c[2] - 1 : c[2] + 1] ^= True
    v ^= rng.random(v.shape) < 0.01
    return v


def test_equals_reference_module() -> None:
    pytest.importorskip("betti_matching")
    rng = np.random.default_rng(21)
    for _ in range(20):  # single blocks
        shape = tuple(int(s) for s in rng.integers(3, 12, 3))
        p = rng.random(shape) < rng.uniform(0.3, 0.9)
        g = p ^ (rng.random(shape) < 0.1)
        assert topo_counts(p, g, tiles=ONE) == topo_counts(p, g, tiles=ONE, backend="betti_matching")
    for n in (24, 31):  # full 2x2x2 tiling, one odd size
        p = _sheets_volume(rng, n)
        g = p ^ (rng.random(p.shape) < 0.02)
        ours = topo_score(p, g)
        ref = topo_score(p, g, backend="betti_matching")
        assert ours.counts == ref.counts
        assert ours.score == pytest.approx(ref.score, abs=1e-12)


def test_warm_up_loads_every_dimension() -> None:
    """The kernels' warm-up (run while the score reads its volumes) matches bars in all dimensions."""
    from napari_vesuvius.core.metric._betti_native import warm_up

    assert all(counts["m"] > 0 for counts in warm_up().values())
