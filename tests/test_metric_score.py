"""The combined leaderboard score: preprocessing, weighting, edge cases and the official pipeline."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.metric import (
    ScoreResult,
    iter_score_many,
    prepare_masks,
    score_many,
    score_masks,
    score_volume,
    surface_dice,
    voi,
)
from napari_vesuvius.core.progress import Progress, run_job

KEYS = {"score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge", "topo_counts"}


def _needs_topo() -> None:
    pytest.importorskip("napari_vesuvius.core.metric.topo")


@dataclass(frozen=True)
class _FakeTopo:
    score: float
    counts: dict[int, dict[str, int]] = field(
        default_factory=lambda: {
            0: {"m": 1, "p": 2, "g": 3},
            1: {"m": 0, "p": 0, "g": 0},
            2: {"m": 0, "p": 1, "g": 0},
        }
    )
    f1: dict[int, float | None] = field(default_factory=lambda: {0: 0.4, 1: None, 2: 1 / 3})


def _fake_topo(monkeypatch: pytest.MonkeyPatch, score: float) -> None:
    """Replace the TopoScore of the tiles' counts (the tiles still run) by a fixed result."""
    from napari_vesuvius.core.metric import topo

    monkeypatch.setattr(topo, "topo_result", lambda counts, weights=None: _FakeTopo(score=score))


def _sheet(shape: tuple[int, int, int] = (12, 16, 16), z: int = 5) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[z : z + 2, 2:-2, 2:-2] = 1
    return label


# ------------------------------------------------------------------------------------------ preprocess


def test_prepare_masks_ignore_nan_and_dtypes() -> None:
    label = np.zeros((4, 5, 6), dtype=np.uint8)
    label[1, :, :] = 1
    label[2, :, :] = 2
    label[3, 0, 0] = 3  # any non-zero value other than 2 is foreground, like the official metric
    pred = np.zeros((4, 5, 6), dtype=np.float32)
    pred[1, :, :3] = 0.25
    pred[2, :, :] = 1.0  # ignored: dropped from both
    pred[0, 0, 0] = np.nan  # NaN counts as background
    pred[0, 0, 1] = -1.0
    pred_mask, label_mask = prepare_masks(pred, label)
    assert pred_mask.dtype == bool and label_mask.dtype == bool
    assert not pred_mask[2].any() and not label_mask[2].any()
    assert not pred_mask[0, 0, 0] and pred_mask[0, 0, 1]
    assert pred_mask.sum() == 5 * 3 + 1
    assert label_mask.sum() == 5 * 6 + 1


def test_prepare_masks_accepts_dask_and_bool() -> None:
    da = pytest.importorskip("dask.array")
    label = _sheet()
    label[0] = 2
    pred = label.astype(bool)
    lazy_pred, lazy_label = prepare_masks(da.from_array(pred, chunks=4), da.from_array(label, chunks=5))
    eager_pred, eager_label = prepare_masks(pred, label)
    np.testing.assert_array_equal(lazy_pred, eager_pred)
    np.testing.assert_array_equal(lazy_label, eager_label)
    assert not lazy_pred[0].any()


def test_prepare_masks_errors() -> None:
    with pytest.raises(VolumeError, match=r"\(4, 4, 4\) does not match label shape \(4, 4, 5\)"):
        prepare_masks(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(VolumeError, match="3D"):
        prepare_masks(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(VolumeError, match="3D"):
        prepare_masks(np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4)))
    with pytest.raises(VolumeError, match="numeric"):
        prepare_masks(np.full((2, 2, 2), "a"), np.zeros((2, 2, 2)))


# ------------------------------------------------------------------------------- combination (fake topo)


def test_weighted_sum_and_breakdown(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_topo(monkeypatch, 0.5)
    label = _sheet()
    pred = np.roll(label, 1, axis=0)
    pred[0:2, 0:2, 0:2] = 1  # dust
    result = score_volume(pred, label)
    pm, lm = prepare_masks(pred, label)
    expected_sd = surface_dice(pm, lm)
    expected_voi = voi(pm, lm)
    assert result.topo == 0.5
    assert result.surface_dice == pytest.approx(expected_sd)
    assert result.voi_score == pytest.approx(expected_voi.score)
    assert (result.voi_split, result.voi_merge) == pytest.approx((expected_voi.split, expected_voi.merge))
    assert result.score == pytest.approx(0.3 * 0.5 + 0.35 * expected_sd + 0.35 * expected_voi.score)
    assert result.topo_counts[0] == {"m": 1, "p": 2, "g": 3}
    assert result.topo_f1[1] is None
    assert {"prepare", "topo", "surface_dice", "voi", "total"} <= set(result.timings)
    out = result.to_dict()
    assert set(out) == KEYS
    assert out["topo_counts"]["0"] == {"m": 1, "p": 2, "g": 3}
    json.dumps(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_threads_and_serial_agree(seed: int) -> None:
    """One pool for TopoScore tiles, SurfaceDice and VOI: every thread count gives the same result."""
    _needs_topo()
    from napari_vesuvius.core.metric.memory import surface_dice_bytes, topo_tile_bytes, voi_bytes

    rng = np.random.default_rng(seed)
    label = (rng.random((20, 22, 24)) < 0.3).astype(np.uint8)
    pred = rng.random((20, 22, 24)).astype(np.float32) * (rng.random((20, 22, 24)) < 0.3)
    serial = score_volume(pred, label, workers=1, strict=False)  # float predictions: the official rule
    assert any(c["m"] for c in serial.topo_counts.values())
    for workers in (2, 3, None):
        assert score_volume(pred, label, workers=workers, strict=False).to_dict() == serial.to_dict()
    # a budget where no two jobs fit: they run one at a time, with the same result
    pm, lm = prepare_masks(pred, label)
    n_p, n_l = int(pm.sum()), int(lm.sum())
    single = max(
        surface_dice_bytes(pm.size, n_p, n_l),
        voi_bytes(pm.size, n_p + n_l),
        topo_tile_bytes(pm.size, n_p + n_l),
    )
    limited = score_masks(pm, lm, workers=2, memory_limit=int(1.2 * single))
    assert limited.to_dict() == serial.to_dict()


def test_score_is_clipped_and_backend_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_topo(monkeypatch, 3.0)
    label = _sheet()
    assert score_volume(label, label).score == 1.0
    with pytest.raises(ValueError, match="topo_backend"):
        score_volume(label, label, topo_backend="gudhi")


def test_score_many_mean_and_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_topo(monkeypatch, 1.0)
    label = _sheet()
    empty = np.zeros_like(label)
    seen: list[str] = []
    reports: list[Progress] = []
    summary = run_job(
        iter_score_many(
            [("a", label, label), ("b", lambda: empty, lambda: label)], on_result=lambda i, r: seen.append(i)
        ),
        reports.append,
    )
    assert seen == ["a", "b"] and summary.ids == ["a", "b"]
    assert [r.done for r in reports] == [0, 1, 2]
    first, second = summary.results
    assert first.score == pytest.approx(1.0)
    assert second.surface_dice == 0.0
    mean = summary.mean
    assert mean["score"] == pytest.approx((first.score + second.score) / 2)
    assert mean["topo_counts"]["0"] == {"m": 2, "p": 4, "g": 6}  # summed over volumes
    assert set(mean) == KEYS
    assert set(summary.to_dict()["mean"]) == KEYS | {"id", "n_volumes"}
    plain = score_many([(label, label)])
    assert plain.ids == ["0"] and isinstance(plain.results[0], ScoreResult)


# ------------------------------------------------------------------------------ hand-made, real TopoScore


def test_identical_volumes_score_one() -> None:
    _needs_topo()
    label = _sheet()
    label[0] = 2
    result = score_volume(label.copy(), label, strict=False)  # the 2s are ignored in both
    assert result.score == pytest.approx(1.0)
    assert (result.topo, result.surface_dice, result.voi_score) == pytest.approx((1.0, 1.0, 1.0))


def test_empty_and_all_ignore_volumes() -> None:
    _needs_topo()
    empty = np.zeros((8, 9, 10), dtype=np.uint8)
    result = score_volume(empty, empty)
    assert (result.score, result.topo, result.surface_dice, result.voi_score) == (1.0, 1.0, 1.0, 1.0)
    ignore = np.full((8, 9, 10), 2, dtype=np.uint8)
    anything = np.random.default_rng(1).random((8, 9, 10)).astype(np.float32)
    assert score_volume(anything, ignore, strict=False).score == 1.0


def test_empty_prediction_on_one_sheet() -> None:
    """One flat sheet has no finite bars: TopoScore is inactive (1.0), VOI sees one label (1.0), SD 0."""
    _needs_topo()
    label = _sheet()
    result = score_volume(np.zeros_like(label), label)
    assert result.surface_dice == 0.0
    assert result.voi_score == 1.0
    assert result.topo == 1.0
    assert result.score == pytest.approx(0.65)


def test_nan_prediction_equals_zeros() -> None:
    _needs_topo()
    label = _sheet()
    pred = label.astype(np.float32)
    pred[6, 4:8, 4:8] = np.nan  # a hole made of NaN
    zeros = np.nan_to_num(pred, nan=0.0)
    official = score_volume(pred, label, strict=False)
    assert official.to_dict() == score_volume(zeros, label, strict=False).to_dict()
    assert official.score < 1.0


def test_bridged_sheets_and_dust_lower_the_score() -> None:
    _needs_topo()
    label = np.zeros((14, 16, 16), dtype=np.uint8)
    label[3, 2:-2, 2:-2] = 1
    label[9, 2:-2, 2:-2] = 1
    bridged = label.copy()
    bridged[4:9, 7, 7] = 1
    dusty = label.copy()
    dusty[12, 1, 1] = dusty[12, 14, 14] = dusty[0, 8, 1] = 1
    base = score_volume(label, label)
    for pred in (bridged, dusty):
        result = score_volume(pred, label)
        assert result.score < base.score
        assert result.voi_score < 1.0


# ------------------------------------------------------------------------------------ official pipeline


def _official(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """The official toolkit's leaderboard computation, rebuilt from its reference modules."""
    sd = pytest.importorskip("surface_distance")
    bm = pytest.importorskip("betti_matching")
    import cc3d
    from skimage.metrics import variation_of_information

    ignore = label == 2
    pr = np.nan_to_num(np.where(ignore, 0, pred), nan=0.0) != 0
    gt = np.nan_to_num(np.where(ignore, 0, label), nan=0.0) != 0
    counts = {k: [0, 0, 0] for k in range(3)}
    cuts = [[(0, (n + 1) // 2), ((n + 1) // 2, n)] for n in pr.shape]
    for (z0, z1), (y0, y1), (x0, x1) in itertools.product(*cuts):
        tile = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        result = bm.compute_matching(
            np.ascontiguousarray(~pr[tile], dtype=np.float64),
            np.ascontiguousarray(~gt[tile], dtype=np.float64),
        )
        for k in range(3):
            m = len(result.input1_matched_birth_coordinates[k])
            counts[k][0] += m
            counts[k][1] += m + len(result.input1_unmatched_birth_coordinates[k])
            counts[k][2] += m + len(result.input2_unmatched_birth_coordinates[k])
    f1, weights = [], []
    for k, w in zip(range(3), (0.34, 0.33, 0.33), strict=True):
        m, p, g = counts[k]
        if p + g > 0:
            f1.append(2 * m / (p + g) if g else 0.5 / (p + g + 0.5))
            weights.append(w)
    topo = 1.0 if not f1 else float(np.dot(np.array(weights) / sum(weights), f1))
    if not gt.any() and not pr.any():
        surface = 1.0
    elif gt.any() ^ pr.any():
        surface = 0.0
    else:
        with np.errstate(all="ignore"):
            surface = sd.compute_surface_dice_at_tolerance(
                sd.compute_surface_distances(gt, pr, (1, 1, 1)), 2.0
            )
    union = gt | pr
    if union.any():
        gl = cc3d.connected_components(gt.astype(np.uint8), connectivity=26)
        pl = cc3d.connected_components(pr.astype(np.uint8), connectivity=26)
        split, merge = variation_of_information(gl[union], pl[union])
    else:
        split = merge = 0.0
    voi_score = 1 / (1 + 0.3 * (split + merge))
    return {
        "score": 0.3 * topo + 0.35 * surface + 0.35 * voi_score,
        "topo": topo,
        "surface_dice": surface,
        "voi_score": voi_score,
        "voi_split": split,
        "voi_merge": merge,
    }


def test_equals_official_pipeline_on_random_volumes() -> None:
    _needs_topo()
    pytest.importorskip("surface_distance")
    pytest.importorskip("betti_matching")
    rng = np.random.default_rng(5)
    for index in range(4):
        shape = tuple(int(n) for n in rng.integers(6, 16, size=3))
        label = rng.choice([0, 1, 2], size=shape, p=[0.5, 0.35, 0.15]).astype(np.uint8)
        pred = (rng.random(shape) < 0.4).astype(np.float32)
        if index == 1:
            pred[rng.random(shape) < 0.1] = np.nan
        ours = score_volume(pred, label, strict=False).to_dict()
        expected = _official(pred, label)
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, abs=1e-9), (index, key)
