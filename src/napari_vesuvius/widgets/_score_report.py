"""What the Score step shows and reads, without Qt: the score breakdown and sweep reports as text, and
the sweep cases of a dataset's training volumes (listed in the worker, never on the GUI thread).

Counts read as integers (``1,234``), scores with four fixed decimals, swept values as :func:`value_text`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_vesuvius.core.metric.score import SCORE_WEIGHTS, ScoreResult
from napari_vesuvius.core.postprocess.sweep import SweepResult
from napari_vesuvius.widgets._format import count
from napari_vesuvius.widgets._plot import value_text

__all__ = ["dataset_cases", "format_mean", "format_score", "format_sweep", "value_text"]


def format_score(result: ScoreResult, title: str = "") -> str:
    """The per-term breakdown of one score as plain text."""
    w_topo, w_sd, w_voi = SCORE_WEIGHTS
    lines = [title] if title else []
    lines.append(f"score         {result.score:.4f}")
    lines.append(f"TopoScore     {result.topo:.4f}   (weight {w_topo:.2f})")
    for dim in sorted(result.topo_counts):
        counts = result.topo_counts[dim]
        f1 = result.topo_f1.get(dim)
        f1_text = "inactive" if f1 is None else f"F1 {f1:.4f}"
        m, p, g = (count(counts[key]) for key in ("m", "p", "g"))
        lines.append(f"  dim {dim}: m={m:<4} p={p:<4} g={g:<4} {f1_text}")
    lines.append(f"SurfaceDice   {result.surface_dice:.4f}   (weight {w_sd:.2f}, tolerance 2 voxels)")
    lines.append(f"VOI score     {result.voi_score:.4f}   (weight {w_voi:.2f})")
    lines.append(f"  split {result.voi_split:.4f}   merge {result.voi_merge:.4f}")
    if result.timings:
        names = [("topo", "topo"), ("surface_dice", "SD"), ("voi", "VOI"), ("total", "total")]
        parts = [f"{text} {result.timings[key]:.2f}s" for key, text in names if key in result.timings]
        lines.append("time: " + ", ".join(parts))
    return "\n".join(lines)


def format_sweep(result: SweepResult) -> str:
    """Summary of a sweep: value → mean score table (best marked) and the best value's breakdown."""
    terms = result.mean_terms
    lines = [f"{result.parameter:>10}  score   topo    SD      VOI"]
    for j, value in enumerate(result.values):
        mark = " *" if j == result.best_index else ""
        cells = "  ".join(f"{terms[k][j]:.4f}" for k in ("score", "topo", "surface_dice", "voi_score"))
        lines.append(f"{value_text(value):>10}  {cells}{mark}")
    n = len(result.case_names)
    best = value_text(result.best_value)
    lines.append(f"best {result.parameter} = {best}: mean score {result.best_score:.4f}")
    if n == 1:
        lines.append(format_score(result.results[0][result.best_index], "\nat the best value:"))
    seconds = sum(result.timings.values())
    lines.append(f"{count(n)} volume(s) × {count(len(result.values))} values in {seconds:.1f}s")
    return "\n".join(lines)


def format_mean(result: SweepResult) -> str:
    """The mean score and terms of a one-value sweep (Score over all training volumes)."""
    terms = result.mean_terms
    names = (("score", "score"), ("topo", "TopoScore"), ("surface_dice", "SurfaceDice"))
    names += (("voi_score", "VOI score"), ("voi_split", "  split"), ("voi_merge", "  merge"))
    lines = [f"mean over {count(len(result.case_names))} volume(s):"]
    lines += [f"{text:<13} {terms[key][0]:.4f}" for key, text in names]
    return "\n".join(lines)


def dataset_cases(dataset: Any, folder: Path) -> list[Any]:
    """Lazy sweep cases for every training id with a label and a probability file in ``folder``.

    Lists the folder and checks the files (run it in the worker: a dataset can be large or remote).
    """
    from napari_vesuvius.core.errors import VesuviusError
    from napari_vesuvius.core.postprocess.sweep import cases_from_files, volume_files

    probabilities = volume_files(folder)
    triples, cts = [], {}
    for volume_id in dataset.train_ids:
        label = dataset.label_path(volume_id)
        if volume_id in probabilities and label is not None and label.exists():
            triples.append((volume_id, probabilities[volume_id], label))
            image = dataset.image_path(volume_id)
            if image.exists():
                cts[volume_id] = image
    if not triples:
        raise VesuviusError(
            f"{folder}: no probability file matches a training id with a label in {dataset.root}"
        )
    return cases_from_files(triples, cts)
