"""Benchmark: the full leaderboard score of 320³ volumes, ours vs the official toolkit's pipeline.

Labels come from :func:`napari_vesuvius.core.synthetic.make_fragment` (thin wavy sheets, ignore slabs);
predictions are the fragment's full surface perturbed the way models err (shifted and thickened or
thinned regions, holes, dust, bridges between sheets). Each volume is scored by

* ours: ``score_volume`` (TopoScore's tiles, SurfaceDice and VOI as jobs on one pool of threads, one
  per CPU) with its per-term spans, once more on one thread, and through the command line: the pair
  saved as LZW TIFFs and ``napari-vesuvius score`` timed as a process (start-up and reading included);
* the official pipeline, rebuilt from its reference parts in the same process: ``surface-distance``
  (SurfaceDice), cc3d + ``skimage.metrics.variation_of_information`` (VOI) and the reference
  ``betti_matching`` module on the 2×2×2 tiles (TopoScore), skipped per part when not importable.

It reports times, the speed-ups of ``score_volume`` and of the command (target ≥ 40×) and the max |Δ| of
every term (target ≤ 1e-9).

    python benchmarks/bench_metric.py                  # 2 volumes of 320³, ~4 minutes
    python benchmarks/bench_metric.py --volumes 1 --size 160 --no-official
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TARGET_SPEEDUP, TARGET_DELTA = 40.0, 1e-9
TERMS = ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge")


def make_pair(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic label volume and a plausible imperfect prediction (uint8 {0,1}) for it."""
    from scipy import ndimage

    from napari_vesuvius.core.synthetic import make_fragment

    fragment = make_fragment((size, size, size), seed=seed)
    rng = np.random.default_rng(seed + 1000)
    surface = fragment.surface.astype(bool)

    def field(cells: int) -> np.ndarray:
        coarse = rng.random((cells, cells, cells))
        return ndimage.zoom(coarse, size / cells, order=1)[:size, :size, :size]

    mood = field(6)
    pred = np.where(mood > 0.65, ndimage.binary_dilation(surface), surface)
    pred = np.where(mood < 0.3, ndimage.binary_erosion(surface), pred)
    shift = field(5) > 0.6  # regions predicted one voxel off
    pred = np.where(shift, np.roll(pred, 1, axis=int(fragment.metadata["stack_axis"])), pred)
    pred &= ~(field(16) > 0.93)  # holes
    dust = ndimage.binary_dilation(rng.random((size,) * 3) < 2e-5, iterations=1)
    pred |= dust
    axis = int(fragment.metadata["stack_axis"])
    for _ in range(6):  # short bridges along the stacking axis, joining neighbouring sheets
        start = rng.integers(size // 8, size - size // 8, size=3)
        line = [slice(int(s), int(s) + 2) for s in start]
        line[axis] = slice(int(start[axis]), int(start[axis]) + size // 16)
        pred[tuple(line)] = True
    return pred.astype(np.uint8), fragment.labels


def official_terms(pred: np.ndarray, label: np.ndarray) -> tuple[dict[str, float | None], dict[str, float]]:
    """The official toolkit's computation (defaults of the Kaggle metric), term values and seconds."""
    values: dict[str, float | None] = dict.fromkeys(TERMS)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ignore = label == 2
    pr = np.nan_to_num(np.where(ignore, 0, pred), nan=0.0) != 0
    gt = np.nan_to_num(np.where(ignore, 0, label), nan=0.0) != 0
    seconds["prepare"] = time.perf_counter() - start

    try:
        import betti_matching
    except ImportError:
        betti_matching = None
    if betti_matching is not None:
        start = time.perf_counter()
        topo_pr, topo_gt = (~pr).astype(np.uint8), (~gt).astype(np.uint8)
        counts = {k: [0, 0, 0] for k in range(3)}
        cuts = [[(0, (n + 1) // 2), ((n + 1) // 2, n)] for n in pr.shape]
        for (z0, z1), (y0, y1), (x0, x1) in itertools.product(*cuts):
            tile = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
            result = betti_matching.compute_matching(
                np.ascontiguousarray(topo_pr[tile], dtype=np.float64),
                np.ascontiguousarray(topo_gt[tile], dtype=np.float64),
            )
            for k in range(3):
                matched = len(result.input1_matched_birth_coordinates[k])
                counts[k][0] += matched
                counts[k][1] += matched + len(result.input1_unmatched_birth_coordinates[k])
                counts[k][2] += matched + len(result.input2_unmatched_birth_coordinates[k])
        f1, weights = [], []
        for k, weight in zip(range(3), (0.34, 0.33, 0.33), strict=True):
            m, p, g = counts[k]
            if p + g > 0:
                f1.append(2.0 * m / (p + g) if g else 0.5 / (p + g + 0.5))
                weights.append(weight)
        values["topo"] = 1.0 if not f1 else float((np.array(weights) / sum(weights) * np.array(f1)).sum())
        seconds["topo"] = time.perf_counter() - start

    try:
        import surface_distance
    except ImportError:
        surface_distance = None
    if surface_distance is not None:
        start = time.perf_counter()
        if not gt.any() and not pr.any():
            values["surface_dice"] = 1.0
        elif gt.any() ^ pr.any():
            values["surface_dice"] = 0.0
        else:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", DeprecationWarning)
                distances = surface_distance.compute_surface_distances(gt, pr, (1.0, 1.0, 1.0))
                values["surface_dice"] = float(
                    surface_distance.compute_surface_dice_at_tolerance(distances, 2.0)
                )
        seconds["surface_dice"] = time.perf_counter() - start

    import cc3d
    from skimage.metrics import variation_of_information

    start = time.perf_counter()
    union = gt | pr
    if union.any():
        gt_cc = cc3d.connected_components(gt.astype(np.uint8), connectivity=26)
        pr_cc = cc3d.connected_components(pr.astype(np.uint8), connectivity=26)
        split, merge = (float(v) for v in variation_of_information(gt_cc[union], pr_cc[union]))
    else:
        split = merge = 0.0
    values["voi_split"], values["voi_merge"] = split, merge
    values["voi_score"] = 1.0 / (1.0 + 0.3 * (split + merge))
    seconds["voi"] = time.perf_counter() - start

    if values["topo"] is not None and values["surface_dice"] is not None:
        weights3 = np.array([0.3, 0.35, 0.35])
        w = weights3 / weights3.sum()
        total = w[0] * values["topo"] + w[1] * values["surface_dice"] + w[2] * values["voi_score"]
        values["score"] = float(min(1.0, max(0.0, total)))
    seconds["total"] = sum(seconds.values())
    return values, seconds


def cli_seconds(pred: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """Wall seconds of ``napari-vesuvius score`` on the pair saved as LZW TIFFs, and its score."""
    from napari_vesuvius.core.volume.write import write_volume

    with tempfile.TemporaryDirectory(prefix="bench-metric-") as folder:
        paths = [str(Path(folder) / name) for name in ("pred.tif", "label.tif")]
        write_volume(paths[0], pred)
        write_volume(paths[1], label)
        command = shutil.which("napari-vesuvius")
        argv = [command] if command else [sys.executable, "-m", "napari_vesuvius.cli.main"]
        start = time.perf_counter()
        out = subprocess.run([*argv, "score", *paths, "--json"], check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    return seconds, float(json.loads(out.stdout.splitlines()[0])["score"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=320, help="edge of the cubic volumes (default 320)")
    parser.add_argument("--volumes", type=int, default=2, help="number of volumes (default 2)")
    parser.add_argument("--no-official", action="store_true", help="time ours only")
    parser.add_argument("--no-cli", action="store_true", help="do not time the napari-vesuvius command")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks._report import markdown_table, peak_rss_mb, write_section
    from napari_vesuvius.core.metric import score_volume

    warm = make_pair(32, 99)  # first call pays imports and JIT compilation: time it apart
    start = time.perf_counter()
    score_volume(*warm)
    warmup = time.perf_counter() - start

    rows, deltas = [], {term: 0.0 for term in TERMS}
    ours_total = official_total = cli_total = 0.0
    official_complete = True
    for seed in range(args.volumes):
        pred, label = make_pair(args.size, seed)
        ours = score_volume(pred, label)
        serial = score_volume(pred, label, workers=1)
        if serial.to_dict() != ours.to_dict():
            raise SystemExit("one thread and the default threads gave different results")
        ours_total += ours.timings["total"]
        row: list[Any] = [
            seed,
            ours.score,
            ours.timings["total"],
            ours.timings["prepare"],
            ours.timings["topo"],
            ours.timings["surface_dice"],
            ours.timings["voi"],
            serial.timings["total"],
        ]
        if not args.no_cli:
            seconds, cli_score = cli_seconds(pred, label)
            if abs(cli_score - ours.score) > TARGET_DELTA:
                raise SystemExit(f"the command scored {cli_score}, score_volume {ours.score}")
            cli_total += seconds
            row.append(seconds)
        if not args.no_official:
            values, seconds = official_terms(pred, label)
            official_complete &= all(v is not None for v in values.values())
            official_total += seconds["total"]
            ours_dict = ours.to_dict()
            for term in TERMS:
                if values[term] is not None:
                    deltas[term] = max(deltas[term], abs(float(ours_dict[term]) - float(values[term])))
            row += [
                seconds["total"],
                seconds.get("topo", float("nan")),
                seconds.get("surface_dice", float("nan")),
                seconds["voi"],
                seconds["total"] / ours.timings["total"],
            ]
        rows.append(row)
        print(f"volume {seed}: ours {ours.timings['total']:.2f}s  score {ours.score:.6f}", flush=True)

    header = ["seed", "score", "ours s", "prep s", "topo s", "SD s", "VOI s", "1 thread s"]
    if not args.no_cli:
        header += ["CLI s"]
    if not args.no_official:
        header += ["official s", "off. topo s", "off. SD s", "off. VOI s", "speed-up"]
    body = markdown_table(header, rows)
    body += (
        f"\n\n{args.volumes} volume(s) of {args.size}³ (synthetic fragment + perturbed prediction). "
        f"'ours s' = `score_volume` (tiles, SurfaceDice and VOI on one pool, a thread per CPU); its terms' "
        f"spans overlap. '1 thread s' = the same with `workers=1` (same result, checked). 'CLI s' = "
        f"`napari-vesuvius score pred.tif label.tif --json` on the pair saved as LZW TIFFs, timed as a "
        f"process (start-up, imports, JIT cache load and reading included). First call (imports, JIT) on a "
        f"32³ volume: {warmup:.1f} s, not included in 'ours s'. Peak RSS {peak_rss_mb():.0f} MiB."
    )
    if not args.no_official:
        speedup = official_total / ours_total
        delta_text = ", ".join(f"{term} {deltas[term]:.1e}" for term in TERMS)
        verdict = "met" if speedup >= TARGET_SPEEDUP and max(deltas.values()) <= TARGET_DELTA else "NOT met"
        missing = "" if official_complete else " (official TopoScore or SurfaceDice unavailable: partial)"
        cli_text = ""
        if not args.no_cli:
            cli_text = f"; the command: {cli_total:.2f} s → **{official_total / cli_total:.1f}×**"
        body += (
            f"\n\nOfficial pipeline{missing}: {official_total:.1f} s vs ours {ours_total:.2f} s → "
            f"**{speedup:.1f}× faster**{cli_text} (target ≥ {TARGET_SPEEDUP:.0f}×). Max |Δ| vs official: "
            f"{delta_text} (target ≤ {TARGET_DELTA:g}): targets {verdict}."
        )
    if not args.no_write:
        command = "python benchmarks/bench_metric.py " + " ".join(sys.argv[1:])
        write_section("metric", "Leaderboard score: ours vs the official metric", body, command.strip())
    else:
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
