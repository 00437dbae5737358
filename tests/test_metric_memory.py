"""The metric's memory: cropping to the foreground box changes no score, the peak is estimated and
bounded, and scoring is refused up front (with the estimate) when it cannot fit."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from napari_vesuvius.core.metric import memory as memory_module
from napari_vesuvius.core.metric import prepare_masks, score_volume, surface_dice, voi
from napari_vesuvius.core.metric import score as score_module
from napari_vesuvius.core.metric._betti_native import block_counts
from napari_vesuvius.core.metric.inputs import load, scan
from napari_vesuvius.core.metric.memory import (
    MEMORY_LIMIT_ENV,
    ByteBudget,
    MetricMemoryError,
    available_memory,
    estimate,
    memory_limit,
    parse_bytes,
    topo_tile_bytes,
)
from napari_vesuvius.core.metric.topo import Frame, combine, tile_boxes, tile_slices, topo_counts, topo_f1

pytest.importorskip("numba")


# ------------------------------------------------------------------------------------ references
def _uncropped_topo_counts(pm: np.ndarray, lm: np.ndarray) -> dict[int, dict[str, int]]:
    """TopoScore counts on the full 2×2×2 tiles of the whole volume, nothing cropped."""
    total = {k: {"m": 0, "p": 0, "g": 0} for k in range(3)}
    for tile in tile_slices(pm.shape):
        counts = block_counts(np.ascontiguousarray(pm[tile]), np.ascontiguousarray(lm[tile]))
        for k, key in itertools.product(range(3), "mpg"):
            total[k][key] += counts[k][key]
    return total


def _uncropped_score(pred: np.ndarray, label: np.ndarray) -> dict[str, object]:
    """Every term computed on the whole volumes (the computation before cropping existed)."""
    pm, lm = prepare_masks(pred, label)
    counts = _uncropped_topo_counts(pm, lm)
    topo = combine(topo_f1(counts))
    sd = surface_dice(pm, lm)
    v = voi(pm, lm)
    w_topo, w_sd, w_voi = score_module._APPLIED_WEIGHTS
    total = w_topo * topo + w_sd * sd + w_voi * v.score
    return {
        "score": float(min(1.0, max(0.0, total))),
        "topo": topo,
        "surface_dice": sd,
        "voi_score": v.score,
        "voi_split": v.split,
        "voi_merge": v.merge,
        "topo_counts": {str(k): c for k, c in counts.items()},
    }


def _random_box(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A random sub-box; a third of the time it touches the volume's faces (or is the whole volume)."""
    mode = rng.integers(0, 3)
    box = []
    for n in shape:
        if mode == 0:
            box.append(slice(0, n))
        else:
            size = int(rng.integers(1, n + 1))
            start = int(rng.integers(0, n - size + 1)) if mode == 1 else int(rng.choice([0, n - size]))
            box.append(slice(start, start + size))
    return tuple(box)


def _random_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(int(n) for n in rng.integers(5, 24, size=3))
    pred = np.zeros(shape, np.uint8)
    label = np.zeros(shape, np.uint8)
    box = _random_box(rng, shape)
    sub = tuple(s.stop - s.start for s in box)
    label[box] = rng.choice([0, 1, 2], size=sub, p=[0.55, 0.35, 0.10])
    other = box if rng.random() < 0.6 else _random_box(rng, shape)
    sub = tuple(s.stop - s.start for s in other)
    if rng.random() < 0.5:
        pred[other] = rng.random(sub) < rng.uniform(0.1, 0.7)
    else:  # a prediction close to the label: few differences, so bars get matched
        pred[box] = label[box] == 1
        pred ^= (rng.random(shape) < 0.03).astype(np.uint8)
    if rng.random() < 0.1:
        pred[:] = 0
    if rng.random() < 0.1:
        label[label == 1] = 0
    return pred, label


# ------------------------------------------------------------------------------------ exactness
def test_cropped_score_equals_uncropped_on_random_volumes() -> None:
    rng = np.random.default_rng(2024)
    matched = 0
    for index in range(120):
        pred, label = _random_pair(rng)
        result = score_volume(pred, label).to_dict()
        expected = _uncropped_score(pred, label)
        assert result == expected, (index, pred.shape)
        matched += any(c["m"] > 0 for c in expected["topo_counts"].values())  # type: ignore[union-attr]
    assert matched > 20  # the random pairs do exercise Betti matching


def test_cropped_score_equals_uncropped_with_foreground_on_every_face() -> None:
    rng = np.random.default_rng(7)
    for shape in [(9, 10, 11), (16, 7, 13), (2, 15, 15)]:
        label = np.zeros(shape, np.uint8)
        label[0] = 1  # the first and last slice of every axis hold foreground
        label[-1, 1:-1] = 1
        label[:, 0, :] = np.where(rng.random((shape[0], shape[2])) < 0.5, 1, 2)
        label[:, :, -1] = 1
        pred = (label == 1).astype(np.uint8)
        pred ^= (rng.random(shape) < 0.08).astype(np.uint8)
        assert score_volume(pred, label).to_dict() == _uncropped_score(pred, label)


def test_tile_crop_keeps_betti_matching_counts() -> None:
    """A tile cropped to its foreground box grown by one voxel has the counts of the whole tile,
    whether or not the foreground touches the tile's faces."""
    rng = np.random.default_rng(3)
    cropped = 0
    for _ in range(400):
        shape = tuple(int(s) for s in rng.integers(3, 14, 3))
        p = np.zeros(shape, bool)
        g = np.zeros(shape, bool)
        box = _random_box(rng, shape)
        sub = tuple(s.stop - s.start for s in box)
        p[box] = rng.random(sub) < rng.uniform(0.1, 0.9)
        g[box] = p[box] ^ (rng.random(sub) < rng.uniform(0.05, 0.4))
        if rng.random() < 0.3:
            g[_random_box(rng, shape)] = True
        [only] = tile_boxes(p, g, Frame(shape), tiles=(1, 1, 1)) or [None]
        if only is None:
            continue
        small = (np.ascontiguousarray(p[only.region]), np.ascontiguousarray(g[only.region]))
        cropped += small[0].shape != p.shape
        assert block_counts(*small) == block_counts(p, g)
    assert cropped > 200


def test_topo_counts_of_a_crop_in_its_frame() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        shape = tuple(int(n) for n in rng.integers(6, 20, 3))
        p = np.zeros(shape, bool)
        g = np.zeros(shape, bool)
        box = _random_box(rng, shape)
        sub = tuple(s.stop - s.start for s in box)
        p[box] = rng.random(sub) < 0.5
        g[box] = p[box] ^ (rng.random(sub) < 0.2)
        full = topo_counts(p, g)
        assert full == _uncropped_topo_counts(p, g)
        # any crop that holds all foreground, tight or not, placed by its frame
        crop = tuple(slice(max(0, s.start - int(rng.integers(0, 2))), s.stop) for s in box)
        frame = Frame(shape, tuple(s.start for s in crop))  # type: ignore[arg-type]
        assert topo_counts(p[crop], g[crop], frame=frame) == full
        assert topo_counts(p[crop], g[crop], frame=frame, workers=1) == full


# ------------------------------------------------------------------------------------ the two passes
def test_scan_finds_the_box_counts_and_tiles() -> None:
    pred = np.zeros((20, 30, 40), np.uint8)
    label = np.zeros((20, 30, 40), np.uint8)
    pred[3:5, 10:12, 7:9] = 1
    label[12, 20:25, 30:33] = 1
    label[0, 0, 0] = 2
    pred[0, 0, 0] = 1  # under the ignore label: not foreground
    found = scan(pred, label)
    assert found.box == (slice(2, 14), slice(9, 26), slice(6, 34))
    assert (found.pred_voxels, found.label_voxels) == (8, 15)
    stats = sorted((t.voxels, t.pred_voxels, t.label_voxels) for t in found.tiles)
    assert stats == sorted([(4 * 4 * 4, 8, 0), (3 * 7 * 5, 0, 15)])
    masks = load(pred, label, found)
    assert masks.pred.shape == (12, 17, 28) and masks.frame == Frame((20, 30, 40), (2, 9, 6))
    assert masks.pred.sum() == 8 and masks.label.sum() == 15
    assert found.tiles == tile_boxes(masks.pred, masks.label, masks.frame)


def test_scan_tile_boxes_equal_those_of_the_loaded_masks() -> None:
    """The score hands scan's per-tile boxes to TopoScore instead of finding them again."""
    rng = np.random.default_rng(5)
    for shape in [(17, 20, 23), (9, 31, 12), (24, 24, 24)]:
        for density in (0.002, 0.05):
            pred = (rng.random(shape) < density).astype(np.uint8)
            label = (rng.random(shape) < density).astype(np.uint8) * rng.integers(1, 3, shape).astype(
                np.uint8
            )
            found = scan(pred, label)
            masks = load(pred, label, found)
            if found.box is None:
                assert found.tiles == []
                continue
            assert found.tiles == tile_boxes(masks.pred, masks.label, masks.frame)


def test_scan_of_empty_and_dask_volumes() -> None:
    da = pytest.importorskip("dask.array")
    empty = np.zeros((6, 7, 8), np.uint8)
    found = scan(empty, empty)
    assert found.box is None and found.tiles == [] and load(empty, empty, found).pred.size == 0
    assert score_volume(empty, empty).score == 1.0
    label = np.zeros((30, 20, 20), np.uint8)
    label[25:30, 15:20, 0:3] = 1  # touches three faces
    pred = np.roll(label, 1, axis=1)
    lazy = score_volume(da.from_array(pred, chunks=(7, 9, 20)), da.from_array(label, chunks=(4, 20, 20)))
    assert lazy.to_dict() == score_volume(pred, label).to_dict() == _uncropped_score(pred, label)


# ------------------------------------------------------------------------------------ limits
def test_parse_bytes_and_limit_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_bytes("8G") == 8 * 1024**3
    assert parse_bytes("512 MiB") == 512 * 1024**2
    assert parse_bytes("1.5k") == 1536 and parse_bytes(1000) == 1000
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    assert available_memory() is None or available_memory() > 0
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "3M")
    assert memory_limit() == 3 * 1024**2
    assert memory_limit("1G") == 1024**3  # an explicit limit wins
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "a lot")
    with pytest.raises(Exception, match=MEMORY_LIMIT_ENV):
        memory_limit()


def test_refused_up_front_with_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    label = np.zeros((40, 40, 40), np.uint8)
    label[10:30, 10:30, 20] = 1
    pred = label.copy()
    loaded: list[bool] = []
    monkeypatch.setattr(score_module, "load", lambda *a: loaded.append(True))
    with pytest.raises(MetricMemoryError, match=r"pred\.tif: scoring needs about .* GiB .* bytes per voxel"):
        score_volume(pred, label, memory_limit="1M", names=("pred.tif", "label.tif"))
    assert loaded == []  # nothing was allocated for the crop
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2M")
    with pytest.raises(MetricMemoryError, match=MEMORY_LIMIT_ENV):
        score_volume(pred, label)


def test_estimate_grows_with_the_box_not_the_volume() -> None:
    small = np.zeros((64, 64, 64), np.uint8)
    small[10:14, 10:14, 10:14] = 1
    big = np.zeros((160, 160, 160), np.uint8)
    big[10:14, 10:14, 10:14] = 1
    for_small, for_big = scan(small, small), scan(big, big)
    assert for_small.box_shape == for_big.box_shape == (6, 6, 6)
    a = estimate(for_small.box_voxels, for_small.pred_voxels, for_small.label_voxels, for_small.tile_sizes)
    b = estimate(for_big.box_voxels, for_big.pred_voxels, for_big.label_voxels, for_big.tile_sizes)
    assert a == b


def test_byte_budget_runs_tiles_one_at_a_time_when_tight(monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_vesuvius.core.metric import topo as topo_module

    running, peak = [0], [0]
    lock = threading.Lock()
    real = topo_module._native_counts

    def counting(p: np.ndarray, g: np.ndarray, on_words: object = None) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(p, g, on_words)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(topo_module, "_native_counts", counting)
    rng = np.random.default_rng(0)
    p = rng.random((24, 24, 24)) < 0.3
    g = p ^ (rng.random((24, 24, 24)) < 0.1)
    expected = topo_counts(p, g, workers=1)
    needs = [topo_tile_bytes(b.voxels, b.pred_voxels + b.label_voxels) for b in tile_boxes(p, g)]
    assert len(needs) == 8 and 2 * min(needs) > 1.5 * max(needs)
    peak[0] = 0
    assert topo_counts(p, g, workers=4, memory_limit=int(1.5 * max(needs))) == expected
    assert peak[0] == 1  # two tiles never fit together
    peak[0] = 0
    assert topo_counts(p, g, workers=4, memory_limit=None) == expected
    assert peak[0] > 1  # without a limit the tiles do run side by side


def test_byte_budget_refuses_a_tile_that_cannot_fit() -> None:
    budget = ByteBudget(1000)
    budget.acquire(600)
    assert budget.grow(600, 900, "tile") == 900
    with pytest.raises(MetricMemoryError, match=r"tile needs about .* more than the memory limit"):
        budget.grow(900, 2000, "tile")
    budget.release(900)
    assert budget.used == 0 and budget.running == 0


def test_dimension_one_words_are_checked_against_the_limit() -> None:
    """A tile full of tunnels asks for more random-cycle words than a tiny limit allows: refused."""
    p = np.ones((12, 12, 12), bool)
    p[1:-1:2, 1:-1:2, :] = False  # many tunnels along x
    g = p.copy()
    g[5, 5, 5] = False
    with pytest.raises(MetricMemoryError, match="TopoScore tile"):
        topo_counts(p, g, tiles=(1, 1, 1), memory_limit=1)


# ------------------------------------------------------------------------------------ measured peak
_MEASURE = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    from napari_vesuvius.core.metric import score_volume
    from napari_vesuvius.core.metric.inputs import reading_bytes, scan
    from napari_vesuvius.core.metric.memory import estimate
    n, dense = int(sys.argv[1]), sys.argv[2] == "dense"
    warm = np.zeros((12, 12, 12), np.uint8); warm[4:8, 2:10, 2:10] = 1
    score_volume(warm, warm)  # compile the kernels first
    rng = np.random.default_rng(0)
    lo, hi = (0, n) if dense else (40, 72)
    z = np.arange(lo, hi)[:, None, None]
    y = np.arange(lo, hi)[None, :, None]
    x = np.arange(lo, hi)[None, None, :]
    wave = 3 * np.sin(y / 9.0) + 2 * np.cos(x / 13.0)
    label = np.zeros((n, n, n), np.uint8)
    pred = np.zeros((n, n, n), np.uint8)
    label[lo:hi, lo:hi, lo:hi] = (z + wave) % 10 < 2
    pred[lo:hi, lo:hi, lo:hi] = (z + wave + 0.7) % 10 < 2.3
    del z, y, x, wave
    found = scan(pred, label)
    reading = reading_bytes(pred, label)
    need = estimate(found.box_voxels, found.pred_voxels, found.label_voxels, found.tile_sizes, reading)
    open("/proc/self/clear_refs", "w").write("5")
    base = rss("VmRSS")
    score_volume(pred, label)
    print(json.dumps({"peak": rss("VmHWM") - base, "estimate": need.peak, "voxels": n ** 3,
                      "box": found.box_voxels}))
    """
)


def _measure(n: int, kind: str) -> dict[str, int]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(n), kind], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux peak-RSS reset")
def test_measured_peak_stays_under_the_estimate() -> None:
    # one foreground box, 2.4× the volume; both large enough to keep the reader's blocks in flight at
    # their cap (at 256³ fewer are: measured peaks 52 / 74 / 80 MB at 256³ / 384³ / 512³)
    small, large = _measure(384, "sparse"), _measure(512, "sparse")
    assert small["box"] == large["box"] < small["voxels"] / 50
    assert small["peak"] <= small["estimate"] and large["peak"] <= large["estimate"]
    # the peak does not grow with the volume (before cropping it was ~8 bytes per voxel of it)
    assert large["peak"] - small["peak"] < 0.5 * (large["voxels"] - small["voxels"])
    dense = _measure(96, "dense")
    assert dense["peak"] <= dense["estimate"]


def test_memory_docs_name_the_formula() -> None:
    doc = memory_module.__doc__ or ""
    assert "2·V" in doc and "SurfaceDice" in doc and "TopoScore" in doc


def test_load_from_kept_pieces_equals_reading_again() -> None:
    """Masks assembled from the foreground scan kept equal those read again; over the cap, none kept."""
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(11)
    shape = (40, 23, 30)
    pred = (rng.random(shape) < 0.01).astype(np.uint8)
    label = (rng.random(shape) < 0.01).astype(np.uint8) * rng.integers(1, 3, shape).astype(np.uint8)
    pred[:12] = 0  # blocks without foreground keep nothing
    label[:12] = 0
    lazy = (da.from_array(pred, chunks=(7, 9, 30)), da.from_array(label, chunks=(5, 23, 30)))
    reread = load(pred, label, scan(pred, label))
    for arrays in ((pred, label), lazy):
        found = scan(*arrays, keep_bytes=2**30)
        assert found.pieces is not None and len(found.pieces) > 0
        kept = load(*arrays, found)
        assert found.pieces is None  # handed over
        assert kept.frame == reread.frame
        assert np.array_equal(kept.pred, reread.pred) and np.array_equal(kept.label, reread.label)
        capped = scan(*arrays, keep_bytes=10)
        assert capped.pieces is None
        again = load(*arrays, capped)
        assert np.array_equal(again.pred, reread.pred) and np.array_equal(again.label, reread.label)
